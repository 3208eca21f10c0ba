"""``Middleware.request``: the chain around ``Bus.request``, outermost first; it may
change the request, sees the reply, and sees an error reply or a timeout raised."""

from __future__ import annotations

import pydantic
import pytest

import herald
from herald.middleware import RequestNext


class Ask(herald.Event, type="oracle.ask"):
    question: str


class Answer(pydantic.BaseModel):
    text: str
    tag: str


oracle = herald.Service("oracle")


@oracle.rpc(Ask)
async def answer(request: Ask, ctx: herald.Context) -> Answer:
    if request.question == "?":
        raise herald.Invalid("not a question")
    return Answer(text=request.question.upper(), tag=ctx.message.headers.get("x-tag", ""))


class Recording(herald.Middleware):
    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    async def request(self, message: herald.Message, call_next: RequestNext) -> herald.Message:
        self.log.append(f"{self.name} sends {message.type}")
        try:
            reply = await call_next(message.with_headers({"x-tag": self.name}))
        except herald.HeraldError as exc:
            self.log.append(f"{self.name} sees {type(exc).__name__}")
            raise
        self.log.append(f"{self.name} got a reply from {reply.source}")
        return reply


async def test_request_middleware_wraps_calls_in_order_and_sees_errors() -> None:
    log: list[str] = []
    middleware = [Recording("outer", log), Recording("inner", log)]
    async with herald.connect("memory://request-middleware", middleware=middleware) as bus:
        worker = await bus.start(oracle)
        reply = await bus.request(Ask(question="why"), Answer)
        assert reply == Answer(text="WHY", tag="inner")  # the innermost header wins
        assert log == [
            "outer sends rpc.oracle.ask",
            "inner sends rpc.oracle.ask",
            "inner got a reply from oracle",
            "outer got a reply from oracle",
        ]
        log.clear()
        with pytest.raises(herald.Invalid):
            await bus.request(Ask(question="?"), Answer)
        with pytest.raises(herald.TimeoutError):
            await bus.request(herald.Message(type="nobody.home", body=b"{}"), Answer, timeout=0.2)
        await worker.stop()
    assert log == [
        "outer sends rpc.oracle.ask",
        "inner sends rpc.oracle.ask",
        "inner sees Invalid",
        "outer sees Invalid",
        "outer sends rpc.nobody.home",
        "inner sends rpc.nobody.home",
        "inner sees TimeoutError",
        "outer sees TimeoutError",
    ]


class Counted(pydantic.BaseModel):
    text: str
    tag: str

    @pydantic.field_validator("text")
    @classmethod
    def count(cls, value: str) -> str:
        DECODED.append(value)
        return value


DECODED: list[str] = []


class Strict(pydantic.BaseModel):
    text: str
    score: int


async def test_a_reply_is_decoded_once_inside_the_request_middleware() -> None:
    log: list[str] = []
    async with herald.connect(
        "memory://request-middleware-once", middleware=[Recording("only", log)]
    ) as bus:
        worker = await bus.start(oracle)
        DECODED.clear()
        assert (await bus.request(Ask(question="once"), Counted)).text == "ONCE"
        assert DECODED == ["ONCE"]
        log.clear()
        with pytest.raises(herald.ValidationError, match="not a valid Strict"):
            await bus.request(Ask(question="bad"), Strict)
        # a reply that does not fit the response model fails inside the chain, where
        # the middleware sees it like an error reply
        assert log == ["only sends rpc.oracle.ask", "only sees ValidationError"]
        await worker.stop()
