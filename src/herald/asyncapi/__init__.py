"""AsyncAPI 3.0 documents of Herald services, and a local viewer for them.

``herald docs asyncapi MODULE:SERVICE...`` writes the document; ``herald docs serve``
shows it in a browser with the AsyncAPI React component. From Python:

>>> import herald
>>> from herald.asyncapi import asyncapi_document
>>> class Hired(herald.Event, type="employee.created"):
...     guid: str
>>> hr = herald.Service("hr", publishes=[Hired])
>>> doc = asyncapi_document([hr], broker_url="nats://nats.internal:4222")
>>> doc["servers"]["broker"]["protocol"], list(doc["channels"])
('nats', ['event.employee.created'])
"""

from __future__ import annotations

from .document import ASYNCAPI_VERSION, asyncapi_document
from .servers import Server

__all__ = ["ASYNCAPI_VERSION", "Server", "asyncapi_document"]
