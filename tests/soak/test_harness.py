"""The chaos soak's own pieces, in ``make test`` (the soak itself is ``make soak``): the
two mistakes its first runs made stay fixed.

- A consumer replica says it is ready only once its queue exists, so an event
  published right after reaches it (events published before a queue exists miss it:
  the first 80 events of a RabbitMQ run never reached ``payroll``).
- A process that exits because the broker is down when it starts is started again
  (as the platform's supervisor does), and only that: any other exit stays a failure.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import herald

from ..cluster.processes import free_ports, kill_group
from .platform import Platform, broker_down_at_start
from .services import EmployeeHired


async def _until(check: object, timeout: float, what: str) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what}"
        await asyncio.sleep(0.1)


def _effects(db: Path) -> list[int]:
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return [n for (n,) in conn.execute("SELECT n FROM effects")]
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


async def test_an_event_published_once_a_replica_is_ready_reaches_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/broker.db"
    platform = Platform(tmp_path, url, total=1, rate=0, holds=[])
    replica = platform.start_replica("payroll", 0)
    try:
        ready = replica.deliveries.with_suffix(".ready")
        await _until(ready.exists, 120, "the replica to declare its queue")
        async with herald.connect(url, source="employees") as bus:
            await bus.publish(EmployeeHired(n=7))
        await _until(lambda: _effects(platform.service_db("payroll")) == [7], 120, "the effect")
    finally:
        kill_group(replica.process)


async def test_only_a_failed_first_connect_counts_as_the_broker_down_at_start(
    tmp_path: Path,
) -> None:
    (port,) = free_ports(1)  # nothing listens there
    platform = Platform(tmp_path, f"amqp://guest:guest@127.0.0.1:{port}/", 1, 0, [])
    replica = platform.start_replica("payroll", 0)
    code = await asyncio.to_thread(replica.process.wait, 120)
    assert code != 0
    assert broker_down_at_start(replica.log), replica.log.read_text()[-2000:]
    other = tmp_path / "other.log"
    other.write_text(
        "Traceback (most recent call last):\n"
        '  File "tests/soak/services.py", line 1, in consume\n'
        "    await bus.serve(service)\n"
        "sqlite3.OperationalError: disk I/O error\n"
    )
    assert not broker_down_at_start(other)
    assert not broker_down_at_start(tmp_path / "missing.log")
