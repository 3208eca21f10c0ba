"""Herald: event-driven messaging between Python services.

One service publishes domain events; every subscribing service receives each of them
on its own durable queue, with retries, dead letters, ordering per key and graceful
shutdown, on RabbitMQ, NATS JetStream, Redis Streams, or an embedded SQLite broker.

>>> import asyncio, herald
>>> class EmployeeCreated(herald.Event, type="employee.created"):
...     guid: str
>>> payroll = herald.Service("payroll")
>>> got = []
>>> @payroll.on(EmployeeCreated)
... async def open_record(event: EmployeeCreated, ctx: herald.Context) -> None:
...     got.append((event.guid, ctx.attempt))
>>> async def main() -> None:
...     async with herald.connect("memory://init-doctest") as bus:
...         worker = await bus.start(payroll)
...         await bus.publish(EmployeeCreated(guid="g1"), key="g1")
...         while not got:
...             await asyncio.sleep(0.01)
...         await worker.stop()
>>> asyncio.run(main()); got
[('g1', 1)]
"""

from .broker import Broker, Delivery, Features, ReplyTransport, Subscription
from .bus import Bus, connect
from .codec import Codec, CodecRegistry, JSONCodec, default_codecs
from .context import Context
from .deadletter import DeadLetter, DeadLetterReason
from .errors import (
    BrokerError,
    BrokerURLError,
    ConfigurationError,
    ConnectionLostError,
    DecodeError,
    HandlerError,
    HeraldError,
    MessageError,
    PublishError,
    Reject,
    TimeoutError,
    ValidationError,
)
from .event import Event
from .message import Message
from .retry import RetryPolicy
from .rpc import ExpectedError, Invalid, NotFound, RemoteError
from .service import Handler, Service
from .url import DEFAULT_URL, BrokerURL
from .worker import Worker

__all__ = [
    "DEFAULT_URL",
    "Broker",
    "BrokerError",
    "BrokerURL",
    "BrokerURLError",
    "Bus",
    "Codec",
    "CodecRegistry",
    "ConfigurationError",
    "ConnectionLostError",
    "Context",
    "DeadLetter",
    "DeadLetterReason",
    "DecodeError",
    "Delivery",
    "Event",
    "ExpectedError",
    "Features",
    "Handler",
    "HandlerError",
    "HeraldError",
    "Invalid",
    "JSONCodec",
    "Message",
    "MessageError",
    "NotFound",
    "PublishError",
    "Reject",
    "RemoteError",
    "ReplyTransport",
    "RetryPolicy",
    "Service",
    "Subscription",
    "TimeoutError",
    "ValidationError",
    "Worker",
    "connect",
    "default_codecs",
]

__version__ = "0.1.0"
