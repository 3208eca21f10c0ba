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
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar

import pydantic

from .context import Context
from .errors import HeaderError, HeraldError, MessageError, ValidationError
from .event import Event
from .headers import CORRELATION_ID, DEADLINE, REPLY_STATUS, REPLY_TO, deadline_from
from .message import Message
from .middleware import shutting_down

__all__ = [
    "CORRELATION_ID",
    "STATUS",
    "ExpectedError",
    "Invalid",
    "NoResponders",
    "NotFound",
    "RemoteError",
    "decode_reply",
    "request_type",
    "rpc_handler",
]

log = logging.getLogger("herald.rpc")
STATUS = REPLY_STATUS
R = TypeVar("R", bound=pydantic.BaseModel)
_MAX_ERROR_REPLY = 64 * 1024


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


class NoResponders(ExpectedError):
    """A request sent with ``durable=False`` found no responder running (raised at
    once, not after the timeout; see ``Bus.request``).

    >>> issubclass(NoResponders, ExpectedError), NoResponders.code
    (True, 'NoResponders')
    """


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
            raise HeaderError(f"request {message.id} has no {REPLY_TO} header: nobody to answer")
        if not ctx.publisher.accepts_reply_address(reply_to):
            raise HeaderError(f"header {REPLY_TO}: {reply_to[:100]!r} is not a reply address")
        deadline_text = message.headers.get(DEADLINE)
        if deadline_text is not None and time.time() > deadline_from(deadline_text):
            log.info("request %s arrived after its caller gave up; not handled", message.id)
            return
        try:
            request = ctx.codecs.read(message, request_class)
            result = await (func(request, ctx) if wants_context else func(request))  # type: ignore[call-arg]
            body = result.model_dump_json().encode() if result is not None else b"null"
            status = "ok"
        except ExpectedError as exc:
            body, status = json.dumps(exc.to_dict(), default=str).encode(), "error"
        except MessageError as exc:
            fields = _fields_of(exc)
            body = json.dumps(Invalid(str(exc), fields=fields).to_dict()).encode()
            status = "error"
        except asyncio.CancelledError as exc:
            if shutting_down():
                raise
            body, status = _crash_reply(message, exc), "error"
        except Exception as exc:
            body, status = _crash_reply(message, exc), "error"
        correlation = message.headers.get(CORRELATION_ID, message.id)
        reply = Message(
            type="herald.reply",
            body=body,
            source=ctx.service,
            headers={CORRELATION_ID: correlation[:200], STATUS: status},
        )
        await ctx.publisher.send_reply(reply_to, reply)

    handle.__qualname__ = getattr(func, "__qualname__", "rpc")
    return handle


def _crash_reply(message: Message, exc: BaseException) -> bytes:
    log.error("RPC handler for %s failed", message.type, exc_info=exc)
    text = str(exc)[:_MAX_ERROR_REPLY]
    return json.dumps({"type": type(exc).__name__, "message": text}).encode()


def _fields_of(exc: MessageError) -> dict[str, str]:
    cause = exc.__cause__
    if isinstance(cause, pydantic.ValidationError):
        return {
            ".".join(str(p) for p in err["loc"]) or "<body>": err["msg"] for err in cause.errors()
        }
    return {}


def decode_reply(reply: Message, response: type[R] | None) -> R | None:
    """The response model of a reply, or the error it carries raised.

    A reply is input like any message: one that does not parse raises
    :class:`RemoteError` (an error reply) or :class:`herald.MessageError` (a result).
    """
    if reply.headers.get(STATUS) == "error":
        raise _reply_error(reply)
    if response is None:
        return None
    try:
        return response.model_validate_json(reply.body)
    except pydantic.ValidationError as exc:
        raise ValidationError(
            f"reply from {reply.source} is not a valid {response.__qualname__}: "
            f"{exc.errors()[0]['msg']}"
        ) from exc


def _reply_error(reply: Message) -> HeraldError:
    try:
        payload = json.loads(reply.body)
    except (ValueError, RecursionError):
        payload = None
    if not isinstance(payload, dict):
        return RemoteError("MalformedReply", "the error reply is not a JSON object", reply.source)
    kind, text, data = payload.get("type"), payload.get("message"), payload.get("data", {})
    kind = kind if isinstance(kind, str) else "Error"
    text = text if isinstance(text, str) else ""
    expected = ExpectedError.registry.get(kind) if payload.get("expected") is True else None
    if expected is not None and isinstance(data, dict):
        try:
            return expected.from_dict({"message": text, "data": data})
        except (TypeError, ValueError):
            pass
    return RemoteError(kind, text, reply.source)
