"""Request/reply over any broker, built on the ordinary broker protocol.

A request is a message of type ``rpc.<request type>`` routed to the durable queue of
the serving service; its ``herald-reply-to`` header names the caller's reply topic
and ``herald-correlation-id`` pairs the answer with the call. Each bus has one
transient reply queue, created on its first request and removed when it closes, so
calls never leak queues. Handler errors come back as :class:`RemoteError`; errors
declared by subclassing :class:`ExpectedError` (such as :class:`NotFound` and
:class:`Invalid`) are raised again as their own class on the caller.

>>> import asyncio, herald, pydantic
>>> class GetSquare(herald.Event, type="math.square"):
...     n: int
>>> class Square(pydantic.BaseModel):
...     value: int
>>> maths = herald.Service("maths")
>>> @maths.rpc(GetSquare)
... async def square(request: GetSquare, ctx: herald.Context) -> Square:
...     if request.n < 0:
...         raise herald.Invalid("n must not be negative", fields={"n": "negative"})
...     return Square(value=request.n * request.n)
>>> async def main() -> None:
...     async with herald.connect("memory://rpc-doctest") as bus:
...         worker = await bus.start(maths)
...         print((await bus.request(GetSquare(n=7), Square, timeout=5)).value)
...         try:
...             await bus.request(GetSquare(n=-1), Square)
...         except herald.Invalid as exc:
...             print(exc.fields)
...         await worker.stop()
>>> asyncio.run(main())
49
{'n': 'negative'}
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar

import pydantic

from .broker import Broker, ReplyTransport, Subscription
from .context import Context
from .errors import BrokerError, HeraldError, MessageError, TimeoutError
from .event import Event
from .message import Message

__all__ = [
    "ExpectedError",
    "Invalid",
    "NotFound",
    "QueueReplyTransport",
    "RemoteError",
    "ReplyChannel",
    "request_type",
    "rpc_handler",
]

log = logging.getLogger("herald.rpc")
REPLY_TO = "herald-reply-to"
CORRELATION_ID = "herald-correlation-id"
DEADLINE = "herald-deadline"
STATUS = "herald-rpc-status"
R = TypeVar("R", bound=pydantic.BaseModel)


class RemoteError(HeraldError):
    """The remote handler failed; ``error_type`` and ``message`` say how."""

    def __init__(self, error_type: str, message: str, service: str = "") -> None:
        self.error_type = error_type
        self.message = message
        self.service = service
        where = f" in {service}" if service else ""
        super().__init__(f"{error_type}{where}: {message}")


class ExpectedError(HeraldError):
    """Base for errors a handler raises on purpose and callers catch by class.

    Subclasses are registered by ``code`` (default: the class name); the caller
    re-raises the same class when a reply carries that code.
    """

    code: ClassVar[str] = "ExpectedError"
    registry: ClassVar[dict[str, type[ExpectedError]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.code = cls.__dict__.get("code", cls.__name__)
        ExpectedError.registry[cls.code] = cls

    def __init__(self, message: str, **data: Any) -> None:
        super().__init__(message)
        self.message = message
        self.data = data

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.code, "message": self.message, "data": self.data, "expected": True}

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> ExpectedError:
        return cls(payload.get("message", ""), **payload.get("data", {}))


class NotFound(ExpectedError):
    """The requested thing does not exist."""


class Invalid(ExpectedError):
    """The request is invalid; ``fields`` maps field names to what is wrong with them."""

    def __init__(self, message: str, fields: dict[str, str] | None = None, **data: Any) -> None:
        super().__init__(message, fields=fields or {}, **data)
        self.fields: dict[str, str] = dict(fields or {})

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> Invalid:
        data = dict(payload.get("data", {}))
        return cls(payload.get("message", ""), **data)


def request_type(event_type: str) -> str:
    """The message type requests of ``event_type`` travel as (``rpc.<event type>``)."""
    return f"rpc.{event_type}"


def rpc_handler(
    func: Callable[[Any, Context], Awaitable[pydantic.BaseModel | None]],
    request_class: type[Event],
    wants_context: bool,
) -> Callable[[Message, Context], Awaitable[None]]:
    """Wrap an RPC function as a message handler that always answers the caller."""

    async def handle(message: Message, ctx: Context) -> None:
        reply_to = message.headers.get(REPLY_TO)
        if not reply_to:
            log.warning("request %s has no %s header; dropped", message.id, REPLY_TO)
            return
        deadline = float(message.headers.get(DEADLINE, "0") or 0)
        if deadline and time.time() > deadline:
            log.info("request %s arrived after its caller gave up; not handled", message.id)
            return
        try:
            request = ctx._bus.codecs.decode(message.body, message.datacontenttype, request_class)
            result = await (func(request, ctx) if wants_context else func(request))  # type: ignore[call-arg]
            body = result.model_dump_json().encode() if result is not None else b"null"
            status = "ok"
        except ExpectedError as exc:
            body, status = json.dumps(exc.to_dict()).encode(), "error"
        except MessageError as exc:
            fields = _fields_of(exc)
            body = json.dumps(Invalid(str(exc), fields=fields).to_dict()).encode()
            status = "error"
        except Exception as exc:
            log.exception("RPC handler for %s failed", message.type)
            body = json.dumps({"type": type(exc).__name__, "message": str(exc)}).encode()
            status = "error"
        reply = Message(
            type="herald.reply",
            body=body,
            source=ctx.service,
            headers={
                CORRELATION_ID: message.headers.get(CORRELATION_ID, message.id),
                STATUS: status,
            },
        )
        await ctx._bus.broker.send_reply(reply_to, reply)

    handle.__qualname__ = getattr(func, "__qualname__", "rpc")
    return handle


def _fields_of(exc: MessageError) -> dict[str, str]:
    cause = exc.__cause__
    if isinstance(cause, pydantic.ValidationError):
        return {
            ".".join(str(p) for p in err["loc"]) or "<body>": err["msg"] for err in cause.errors()
        }
    return {}


class QueueReplyTransport(ReplyTransport):
    """Replies through one transient queue per bus; works on every broker."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self.address = f"herald.reply.{uuid.uuid4().hex}"
        self._subscription = Subscription(
            f"reply-{self.address.rsplit('.', 1)[1][:12]}", "reply", (self.address,), durable=False
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self, on_reply: Callable[[Message], None]) -> None:
        if self._task is None:
            await self._broker.declare(self._subscription)
            self._task = asyncio.create_task(self._receive(on_reply), name=f"herald:{self.address}")

    async def send(self, request: Message) -> None:
        await self._broker.publish((request,))

    async def _receive(self, on_reply: Callable[[Message], None]) -> None:
        while True:
            stream = self._broker.consume(self._subscription, 256)
            try:
                async for delivery in stream:
                    on_reply(delivery.message)
                    await delivery.ack()
            except BrokerError as exc:
                log.warning("reply queue %s: %s; subscribing again", self.address, exc)
                await asyncio.sleep(0.5)
                with contextlib.suppress(BrokerError):
                    await self._broker.declare(self._subscription)
            finally:
                with contextlib.suppress(Exception):
                    await stream.aclose()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None


class ReplyChannel:
    """A bus's calls in flight, paired with their replies by correlation id."""

    def __init__(self, broker: Broker) -> None:
        self.transport = broker.reply_transport() or QueueReplyTransport(broker)
        self._pending: dict[str, asyncio.Future[Message]] = {}
        self._started = False
        self._ready = asyncio.Lock()

    async def call(self, message: Message, timeout: float) -> Message:
        correlation = message.id
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[correlation] = future
        try:
            async with asyncio.timeout(timeout):
                await self._start()
                headers = {
                    REPLY_TO: self.transport.address,
                    CORRELATION_ID: correlation,
                    DEADLINE: f"{time.time() + timeout:.3f}",
                }
                await self.transport.send(message.with_headers(headers))
                return await future
        except builtins.TimeoutError as exc:
            raise TimeoutError(
                f"no reply to {message.type} within {timeout:g}s "
                "(is a service handling it running?)"
            ) from exc
        finally:
            self._pending.pop(correlation, None)

    async def _start(self) -> None:
        async with self._ready:
            if not self._started:
                await self.transport.start(self._on_reply)
                self._started = True

    def _on_reply(self, reply: Message) -> None:
        future = self._pending.get(reply.headers.get(CORRELATION_ID, ""))
        if future is not None and not future.done():
            future.set_result(reply)

    async def close(self) -> None:
        await self.transport.close()


def decode_reply(reply: Message, response: type[R] | None) -> R | None:
    """The response model of a reply, or the error it carries raised."""
    if reply.headers.get(STATUS) == "error":
        payload = json.loads(reply.body)
        expected = (
            ExpectedError.registry.get(payload.get("type", "")) if payload.get("expected") else None
        )
        if expected is not None:
            raise expected.from_dict(payload)
        raise RemoteError(payload.get("type", "Error"), payload.get("message", ""), reply.source)
    if response is None:
        return None
    return response.model_validate_json(reply.body)
