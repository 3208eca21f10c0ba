"""The Ruby HR platform on the same RabbitMQ: protobuf EmployeeMessage both ways.

The Ruby side is real: Debian's ``ruby-bunny`` and ``ruby-google-protobuf``, publishing
and consuming the way Active Publisher / Action Subscriber do (plain AMQP, no
CloudEvents headers, the routing key as the event type).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from pathlib import Path
from typing import ClassVar

import pytest

import herald
from herald.protobuf import with_protobuf
from hr_platform.proto import EmployeeMessage

from ..servers import unavailable
from .conftest import _destroy
from .platform import Platform, broker_url, eventually, require_broker

RUBY = Path(__file__).parent / "ruby"


class EmployeeCreatedProto(
    herald.Event, type="employee.created", content_type="application/protobuf"
):
    __protobuf__: ClassVar[type] = EmployeeMessage
    guid: str
    first_name: str
    last_name: str


def require_ruby_protobuf() -> None:
    probe = subprocess.run(
        ["ruby", "-e", "require 'bunny'; require 'google/protobuf'"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        unavailable(
            "ruby with bunny and google-protobuf is needed "
            "(apt-get install ruby-bunny ruby-google-protobuf)"
        )


@pytest.mark.amqp
async def test_ruby_and_python_exchange_protobuf_employees(workdir: Path) -> None:
    require_broker("amqp")
    await asyncio.to_thread(require_ruby_protobuf)
    namespace = f"hr{uuid.uuid4().hex[:10]}"
    url = broker_url("amqp", workdir).split("?")[0] + f"?namespace={namespace}"
    exchange = f"{namespace}.events"
    raw_url = "amqp://guest:guest@127.0.0.1:5672"
    hr = Platform(url, workdir)
    consumer = None
    try:
        await hr.start("giftcards")
        publisher = [str(RUBY / "pb_publish.rb"), raw_url, exchange]
        published = await asyncio.create_subprocess_exec(
            "ruby", *publisher, "rb-42", "Yukihiro", "Matsumoto", stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(published.communicate(), 60)
        assert out.strip() == b"CONFIRMED"

        async def carded() -> bool:
            return any(c["employee_guid"] == "rb-42" for c in await hr.records("giftcards"))

        await eventually(
            carded, timeout=30, what="a gift card for the Ruby employee", interval=0.25
        )
        card = next(c for c in await hr.records("giftcards") if c["employee_guid"] == "rb-42")
        assert card["holder"] == "Yukihiro Matsumoto"

        subscriber = [str(RUBY / "pb_consume.rb"), raw_url, exchange, f"{namespace}.ruby-payroll"]
        consumer = await asyncio.create_subprocess_exec(
            "ruby", *subscriber, "1", stdout=asyncio.subprocess.PIPE
        )
        assert consumer.stdout is not None
        ready = await asyncio.wait_for(consumer.stdout.readline(), 60)
        assert ready.strip() == b"READY"
        async with herald.connect(url, codecs=with_protobuf()) as bus:
            await bus.publish(EmployeeCreatedProto(guid="py-7", first_name="Guido", last_name="vR"))
        line = await asyncio.wait_for(consumer.stdout.readline(), 60)
        assert json.loads(line) == {
            "guid": "py-7",
            "first_name": "Guido",
            "last_name": "vR",
            "content_type": "application/protobuf",
        }
        assert await asyncio.wait_for(consumer.wait(), 30) == 0
    finally:
        if consumer is not None and consumer.returncode is None:
            consumer.kill()
            await consumer.wait()
        await hr.close()
        await _destroy(url)
