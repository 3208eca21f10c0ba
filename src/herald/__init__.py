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

from .broker import Broker, Delivery, Features, Prefetch, Subscription
from .bus import Bus, connect
from .capabilities import (
    DeadLetterAdmin,
    QueueInspection,
    QueueStats,
    ReplyCapable,
    ReplyTransport,
    RetainedHistory,
)
from .codec import Codec, CodecRegistry, JSONCodec, default_codecs
from .context import Context, Publisher
from .deadletter import DeadLetter, DeadLetterReason
from .errors import (
    BrokerError,
    BrokerURLError,
    CapabilityError,
    ConfigurationError,
    ConnectionLostError,
    DecodeError,
    HandlerError,
    HeaderError,
    HeraldError,
    HorizonError,
    MessageError,
    MessageTooLargeError,
    PatternError,
    PublishError,
    Reject,
    SettleError,
    TimeoutError,
    UpcastError,
    ValidationError,
)
from .event import Event
from .handler import Handler
from .message import Message
from .middleware import Middleware, Next, Outcome, PublishNext, RequestNext
from .recurrence import Occurrence
from .retry import RetryPolicy
from .rpc import ExpectedError, Invalid, NoResponders, NotFound, RemoteError
from .service import Service
from .url import DEFAULT_URL, BrokerURL
from .worker import Worker

__all__ = [
    "DEFAULT_URL",
    "Broker",
    "BrokerError",
    "BrokerURL",
    "BrokerURLError",
    "Bus",
    "CapabilityError",
    "Codec",
    "CodecRegistry",
    "ConfigurationError",
    "ConnectionLostError",
    "Context",
    "DeadLetter",
    "DeadLetterAdmin",
    "DeadLetterReason",
    "DecodeError",
    "Delivery",
    "Event",
    "ExpectedError",
    "Features",
    "Handler",
    "HandlerError",
    "HeaderError",
    "HeraldError",
    "HorizonError",
    "Invalid",
    "JSONCodec",
    "Message",
    "MessageError",
    "MessageTooLargeError",
    "Middleware",
    "Next",
    "NoResponders",
    "NotFound",
    "Occurrence",
    "Outcome",
    "PatternError",
    "Prefetch",
    "PublishError",
    "PublishNext",
    "Publisher",
    "QueueInspection",
    "QueueStats",
    "Reject",
    "RemoteError",
    "ReplyCapable",
    "ReplyTransport",
    "RequestNext",
    "RetainedHistory",
    "RetryPolicy",
    "Service",
    "SettleError",
    "Subscription",
    "TimeoutError",
    "UpcastError",
    "ValidationError",
    "Worker",
    "connect",
    "default_codecs",
]

__version__ = "0.1.0"
