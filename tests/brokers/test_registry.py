"""Adapters are found by URL scheme through the ``herald.brokers`` entry points."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import herald
from herald.brokers import adapter_class, broker_from_url, schemes
from herald.brokers.memory import MemoryBroker


def test_herald_registers_its_own_adapters_by_entry_point() -> None:
    assert {"memory", "sqlite", "amqp", "amqps", "nats", "tls", "redis", "rediss"} <= set(schemes())
    assert adapter_class("memory") is MemoryBroker
    for scheme in schemes():
        assert scheme in adapter_class(scheme).schemes


def test_unknown_scheme_names_the_part_and_the_known_ones() -> None:
    with pytest.raises(herald.BrokerURLError) as info:
        broker_from_url("kafkaa://user:s3cret@host")
    assert info.value.part == "scheme" and "memory" in str(info.value)
    assert "s3cret" not in str(info.value)


def test_a_third_party_adapter_installs_without_editing_herald(tmp_path: Path) -> None:
    """A distribution on sys.path that declares an entry point is found by its scheme."""
    package = tmp_path / "echo_broker"
    package.mkdir()
    (package / "__init__.py").write_text(
        textwrap.dedent(
            """
            from typing import Self
            from herald.brokers.memory import MemoryBroker

            class EchoBroker(MemoryBroker):
                schemes = ("echo",)

                @classmethod
                def from_url(cls, url: str) -> Self:
                    return cls("echo-" + url.split("://", 1)[1])
            """
        )
    )
    info = tmp_path / "echo_broker-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-broker\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[herald.brokers]\necho = echo_broker:EchoBroker\n")
    script = textwrap.dedent(
        """
        import asyncio, herald

        class Hi(herald.Event, type="echo.hi"):
            n: int

        async def main():
            svc = herald.Service("echoes")
            got = []

            @svc.on(Hi)
            async def on_hi(event: Hi) -> None:
                got.append(event.n)

            async with herald.connect("echo://one") as bus:
                print(type(bus.broker).__name__)
                worker = await bus.start(svc)
                await bus.publish(Hi(n=7))
                while not got:
                    await asyncio.sleep(0.01)
                await worker.stop()
            print(got)

        asyncio.run(main())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["EchoBroker", "[7]"]


def test_an_entry_point_that_is_not_a_broker_is_refused(tmp_path: Path) -> None:
    (tmp_path / "not_a_broker.py").write_text("class Thing:\n    pass\n")
    info = tmp_path / "nab-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: nab\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[herald.brokers]\nnab = not_a_broker:Thing\n")
    script = (
        "import herald\n"
        "try:\n    herald.connect('nab://x')\n"
        "except herald.ConfigurationError as exc:\n    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "entry point not_a_broker:Thing for nab:// is not a Broker" in result.stdout, (
        result.stdout + result.stderr
    )
