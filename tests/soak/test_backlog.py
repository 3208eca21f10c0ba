"""A slow consumer and a backlog published before it starts (``make soak``).

A million small events (``SOAK_BACKLOG_EVENTS``), and apart 2,000 bodies of 1 MiB
(``SOAK_BACKLOG_LARGE``), are published while no consumer runs; then one consumer
process (:mod:`.backlog_consumer`: concurrency 32, each handling hashes the body and
sleeps 1 ms) drains the queue while this test samples its resident memory from
``/proc``. Every event must be handled, and the consumer's memory must grow by less
than :func:`rss_bound`: three times what its prefetch window lets it hold in bodies,
plus a fixed allowance for the runtime, the driver and the allocator, whatever the
backlog's length. On SQLite the database file (with its write-ahead log) must shrink
back under :data:`FILE_AFTER` once the backlog is consumed.

RabbitMQ runs as a private node on ports of its own (the shared broker is not filled
with a million messages). Figures are printed (``-rP``) for docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import herald
from herald.bus import connect
from herald.message import Message

from ..cluster.processes import kill_group
from ..cluster.rabbit_cluster import RABBITMQ_SERVER, RabbitCluster
from ..servers import unavailable
from .backlog_consumer import EVENT_TYPE, backlog_service, body, resident_bytes

pytestmark = [pytest.mark.soak, pytest.mark.timeout(4 * 3600)]

MiB = 2**20
ROOT = Path(__file__).resolve().parents[2]
ALLOWANCE = 64 * MiB
"""Growth allowed whatever the window: the worker's tasks, the driver's buffers, the
allocator's arenas and SQLite's page caches."""
FILE_AFTER = 16 * MiB
"""The SQLite file and its log once the backlog is consumed, whatever its length."""
DRAIN_TIMEOUT = float(os.environ.get("SOAK_BACKLOG_TIMEOUT", "5400"))
"""Seconds for the consumer to drain the backlog, on a machine shared with others."""


@dataclass(frozen=True)
class Load:
    count: int
    size: int
    batch: int
    prefetch: int
    prefetch_bytes: int
    concurrency: int = 32
    work: float = 0.001

    @property
    def window_bytes(self) -> int:
        """The most body bytes the consumer may hold: its window's bound (the count's
        or the bytes', whichever is lower), plus the one body allowed past it."""
        return min(self.prefetch * self.size, self.prefetch_bytes) + self.size


LOADS = {
    "small": Load(
        count=int(os.environ.get("SOAK_BACKLOG_EVENTS", "1000000")),
        size=100,
        batch=1000,
        prefetch=256,
        prefetch_bytes=8 * MiB,
    ),
    # The count alone (256 x 1 MiB) would let it hold 256 MiB: the bytes bound it.
    "large": Load(
        count=int(os.environ.get("SOAK_BACKLOG_LARGE", "2000")),
        size=MiB,
        batch=16,
        prefetch=256,
        prefetch_bytes=8 * MiB,
    ),
}


def rss_bound(load: Load) -> int:
    return 3 * load.window_bytes + ALLOWANCE


@pytest.fixture(scope="module")
def private_rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A RabbitMQ node of this module's own (no plugins, loopback only); its port."""
    if not os.access(RABBITMQ_SERVER, os.X_OK):
        unavailable(f"{RABBITMQ_SERVER} not installed (apt-get install rabbitmq-server)")
    node = RabbitCluster.make(tmp_path_factory.mktemp("rabbit"), size=1)
    config = Path(node.nodes[0].env["RABBITMQ_CONFIG_FILE"])
    # page messages to disk early: the machine is shared
    config.write_text(config.read_text() + "vm_memory_high_watermark.absolute = 3GB\n")
    try:
        node.start()
        yield node.nodes[0].port
    finally:
        node.stop()


def sizes(path: Path) -> int:
    """The database file and its write-ahead log, in bytes."""
    total = 0
    for part in (path, path.with_name(path.name + "-wal")):
        if part.exists():
            total += part.stat().st_size
    return total


async def publish(url: str, service: herald.Service, load: Load) -> None:
    """Publish the backlog, a few batches at a time, the queue declared first."""
    pending = asyncio.Semaphore(4)
    async with connect(url, source="backlog-soak") as bus:
        await bus.broker.declare(service.handlers[0].subscription)

        async def batch(start: int) -> None:
            async with pending:
                stop = min(start + load.batch, load.count)
                await bus.send(
                    [Message(type=EVENT_TYPE, body=body(n, load.size)) for n in range(start, stop)]
                )

        await asyncio.gather(*(batch(start) for start in range(0, load.count, load.batch)))


def spawn_consumer(
    url: str, name: str, load: Load, out: Path, log: Path
) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.soak.backlog_consumer",
                url,
                name,
                str(load.count),
                os.fspath(out),
                f"--concurrency={load.concurrency}",
                f"--prefetch={load.prefetch}",
                f"--prefetch-bytes={load.prefetch_bytes}",
                f"--work={load.work}",
            ],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@pytest.mark.parametrize("load_name", ["small", "large"])
@pytest.mark.parametrize("scheme", ["sqlite", "amqp"])
async def test_a_slow_consumer_drains_a_backlog_in_bounded_memory(
    scheme: str, load_name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    load = LOADS[load_name]
    token = uuid.uuid4().hex[:8]
    db = tmp_path / "backlog.db"
    if scheme == "sqlite":
        url = f"sqlite:///{db}"
    else:
        port = request.getfixturevalue("private_rabbit")
        url = f"amqp://guest:guest@127.0.0.1:{port}/?namespace=bl{token}"
    name = f"backlog-{token}"
    service = backlog_service(name, prefetch=load.prefetch, prefetch_bytes=load.prefetch_bytes)
    started = time.monotonic()
    await publish(url, service, load)
    published = time.monotonic() - started
    file_before = sizes(db) if scheme == "sqlite" else 0

    out = tmp_path / "consumer"
    out.mkdir()
    log = tmp_path / "consumer.log"
    child = spawn_consumer(url, name, load, out, log)
    peak_rss = baseline = file_peak = file_after = 0
    load_average = os.getloadavg()
    try:
        deadline = time.monotonic() + 120
        while not (out / "ready").exists():
            assert child.poll() is None, f"the consumer exited; see {log}"
            assert time.monotonic() < deadline, "the consumer did not connect in 120 s"
            await asyncio.sleep(0.05)
        baseline = int((out / "ready").read_text())
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while not (out / "done").exists():
            assert child.poll() is None, f"the consumer exited; see {log}"
            assert time.monotonic() < deadline, f"not drained in {DRAIN_TIMEOUT:.0f} s"
            peak_rss = max(peak_rss, resident_bytes(child.pid))
            if scheme == "sqlite":
                file_peak = max(file_peak, sizes(db))
            await asyncio.sleep(0.25)
        done = json.loads((out / "done").read_text())
        load_average = os.getloadavg()
        peak_rss = max(peak_rss, resident_bytes(child.pid, "VmHWM"))
        if scheme == "sqlite":
            # the consumer's maintenance gives the free pages back, a few MiB a round:
            # wait until the size holds still for 5 s
            deadline, still = time.monotonic() + 600, 0
            while still < 5 and time.monotonic() < deadline:
                await asyncio.sleep(1)
                size = sizes(db)
                still = still + 1 if size == file_after else 0
                file_after, file_peak = size, max(file_peak, size)
        child.send_signal(signal.SIGTERM)
        assert child.wait(120) == 0, f"the consumer failed to stop; see {log}"
        stopped = json.loads((out / "stopped").read_text())
    finally:
        if child.poll() is None:
            kill_group(child)

    growth = peak_rss - baseline
    figures = {
        "broker": scheme,
        "load": load_name,
        "events": load.count,
        "body_bytes": load.size,
        "publish_s": round(published, 1),
        "drain_s": round(done["seconds"], 1),
        "events_per_s": round(load.count / done["seconds"]),
        "duplicates": stopped["duplicates"],
        "baseline_rss_mib": round(baseline / MiB, 1),
        "peak_rss_mib": round(peak_rss / MiB, 1),
        "growth_mib": round(growth / MiB, 1),
        "bound_mib": round(rss_bound(load) / MiB, 1),
        "file_before_mib": round(file_before / MiB, 1),
        "file_peak_mib": round(file_peak / MiB, 1),
        "file_after_mib": round(file_after / MiB, 1),
        "load_average": [round(x, 2) for x in load_average],
    }
    print("backlog:", json.dumps(figures))
    if report := os.environ.get("SOAK_BACKLOG_REPORT"):
        with Path(report).open("a") as f:  # noqa: ASYNC230 (a line, once)
            f.write(json.dumps(figures) + "\n")
    assert done["distinct"] == load.count, "every event handled"
    assert growth < rss_bound(load), f"memory grew {growth / MiB:.1f} MiB"
    if scheme == "sqlite":
        assert file_after <= FILE_AFTER, f"the file stayed at {file_after / MiB:.1f} MiB"
