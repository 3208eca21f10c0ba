"""What the CloudEvents tests of every broker share: the message Herald publishes and
the check of what a raw client read of it (with the official SDK), structured events
made by the SDK, and the scenario in which a Herald handler receives them.

The SDK fills in a missing ``id`` or ``time`` by itself, so the required attributes
are checked on the wire before the SDK builds its event from what was read.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Collection
from datetime import datetime

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

import herald
from herald.capabilities import DeadLetterAdmin
from herald.deadletter import DeadLetter
from herald.testing import eventually

__all__ = [
    "BAD_VERSION",
    "EVENT_TYPE",
    "FORMAT",
    "GOOD",
    "SERVICE",
    "Hired",
    "assert_is_sent",
    "assert_required_on_wire",
    "handled_and_dead_lettered",
    "sent_message",
    "structured_body",
]

EVENT_TYPE = "employee.created"
SERVICE = "cepayroll"
QUEUE = f"{SERVICE}.{EVENT_TYPE}"
FORMAT = JSONFormat()
REQUIRED = ("id", "source", "specversion", "type")
DATA = {"guid": "g1", "name": "Zoë"}


class Hired(herald.Event, type=EVENT_TYPE):
    guid: str
    name: str = ""


def sent_message() -> herald.Message:
    """A message whose subject needs encoding on a header-based transport."""
    return herald.Message(
        type=EVENT_TYPE,
        body=json.dumps(DATA).encode(),
        subject="g 1/€",
        source="/hr/employees",
        headers={"x-trace": "t1"},
    )


def assert_required_on_wire(names: Collection[str], prefix: str) -> None:
    missing = [name for name in REQUIRED if f"{prefix}{name}" not in names]
    assert not missing, f"required attributes missing on the wire: {missing} in {sorted(names)}"


def assert_is_sent(event: BaseCloudEvent, sent: herald.Message) -> None:
    """The SDK's event (built from the wire) is the message Herald sent."""
    assert (event.get_id(), event.get_source(), event.get_type()) == (
        sent.id,
        sent.source,
        sent.type,
    )
    assert event.get_specversion() == "1.0"
    assert event.get_subject() == sent.subject
    assert event.get_datacontenttype() == "application/json"
    when = event.get_time()
    assert isinstance(when, datetime) and when == sent.time
    assert event.get_data() == DATA


GOOD = CloudEvent(
    {
        "type": EVENT_TYPE,
        "source": "https://ruby.example/hr",
        "id": "ce-good-1",
        "subject": "g7",
        "datacontenttype": "application/json",
        "time": datetime.fromisoformat("2026-03-04T05:06:07+00:00"),
    },
    {"guid": "g7", "name": "Grace"},
)


def structured_body(version: str = "1.0") -> bytes:
    """:data:`GOOD` in the JSON event format, its specversion replaced by ``version``."""
    body = FORMAT.write(GOOD)
    if version == "1.0":
        return body
    envelope = json.loads(body)
    envelope["specversion"] = version
    envelope["id"] = "ce-bad-1"
    return json.dumps(envelope).encode()


BAD_VERSION = "2.0"


async def handled_and_dead_lettered(
    url: str, inject: Callable[[herald.Bus, str], Awaitable[None]]
) -> None:
    """A Herald handler of ``employee.created`` runs; ``inject(bus, queue)`` puts a
    structured :data:`GOOD` and one with a bad specversion into its queue with a raw
    client. The handler gets the good one's attributes and data; the runtime
    dead-letters the bad one with a reason naming the specversion."""
    service = herald.Service(SERVICE)
    got: asyncio.Queue[tuple[Hired, herald.Message]] = asyncio.Queue()

    @service.on(Hired)
    async def hired(event: Hired, ctx: herald.Context) -> None:
        await got.put((event, ctx.message))

    letters: list[DeadLetter] = []
    async with herald.connect(url) as bus:
        try:
            worker = await bus.start(service)
            await inject(bus, QUEUE)
            event, message = await asyncio.wait_for(got.get(), 30)

            admin = bus.broker
            assert isinstance(admin, DeadLetterAdmin)

            async def dead_lettered() -> bool:
                letters[:] = await admin.dead_letters(SERVICE)
                return bool(letters)

            await eventually(dead_lettered, 30, "the malformed event to be dead-lettered", 0.2)
            await worker.stop()
        finally:
            await bus.broker.destroy()
    assert event == Hired(guid="g7", name="Grace")
    assert (message.type, message.id, message.source, message.subject) == (
        EVENT_TYPE,
        "ce-good-1",
        "https://ruby.example/hr",
        "g7",
    )
    assert message.time == GOOD.get_time() and message.datacontenttype == "application/json"
    assert got.empty()
    (letter,) = letters
    assert letter.reason.error_type == "DecodeError", letter
    assert f"specversion '{BAD_VERSION}' is not 1.0" in letter.reason.error_message
