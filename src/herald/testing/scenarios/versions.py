"""Versioned events: two versions of one type side by side on one bus."""

from __future__ import annotations

from ...context import Context
from ...message import Message
from ...service import Service
from ...versions import VERSION
from ..environment import Environment
from ..events import Greeting, GreetingV2
from ..recorder import Recorder
from .common import wait_dead_letters

__all__ = ["versions_side_by_side"]


async def versions_side_by_side(env: Environment) -> None:
    """A version 1 consumer reads version 2 events as its own; a version 2 consumer
    upcasts version 1 events; a malformed version header and a payload the upcaster
    cannot convert are dead-lettered with their reasons by both."""
    old_seen: Recorder[str] = Recorder()
    new_seen: Recorder[tuple[str, str, str | None]] = Recorder()
    old, new = Service(env.service_name("greet-v1")), Service(env.service_name("greet-v2"))

    @old.on(Greeting)
    async def read_v1(event: Greeting) -> None:
        old_seen.add(event.name)

    @new.on(GreetingV2)
    async def read_v2(event: GreetingV2, ctx: Context) -> None:
        new_seen.add((event.name, event.language, ctx.message.headers.get(VERSION)))

    kind = Greeting.event_type()
    malformed = Message(type=kind, body=b'{"name": "eve"}', headers={VERSION: "two"})
    nameless = Message(type=kind, body=b'{"title": "dr"}')
    async with env.connect() as bus:
        workers = [await bus.start(old), await bus.start(new)]
        await bus.publish(Greeting(name="ada"), key="k")
        await bus.publish(GreetingV2(name="bob", language="fr"), key="k")
        await bus.publish_many([malformed, nameless])
        old_letters = await wait_dead_letters(bus, old.name, 2)
        new_letters = await wait_dead_letters(bus, new.name, 2)
        await old_seen.wait_for(2)
        await new_seen.wait_for(2)
        for worker in workers:
            await worker.stop()
    assert old_seen.items == ["ada", "bob"], old_seen.items
    assert new_seen.items == [("ada", "en", None), ("bob", "fr", "2")], new_seen.items
    old_reasons = {dl.message.id: dl.reason for dl in old_letters}
    new_reasons = {dl.message.id: dl.reason for dl in new_letters}
    for reasons in (old_reasons, new_reasons):
        assert reasons[malformed.id].error_type == "HeaderError", reasons[malformed.id]
        assert "header dataversion: 'two'" in reasons[malformed.id].error_message
    assert old_reasons[nameless.id].error_type == "ValidationError"
    assert new_reasons[nameless.id].error_type == "UpcastError", new_reasons[nameless.id]
    assert "upcaster from version 1 failed: KeyError" in new_reasons[nameless.id].error_message
