"""The processes of the chaos soak (:mod:`.services`), started, killed and measured.

A :class:`Platform` runs one publishing service and two replicas of each consuming
service, each in a process group of its own (:func:`tests.cluster.processes.spawn`),
and reads what they wrote: the publisher's lines and database, each service's effects
database, each replica's deliveries, and each replica's RSS and open file descriptors
from ``/proc``.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..cluster.processes import kill_group, spawn

__all__ = [
    "SERVICES",
    "Platform",
    "Replica",
    "Sample",
    "Transactions",
    "broker_down_at_start",
    "sample",
]

SERVICES = ("payroll", "giftcards")
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Sample:
    at: float
    rss: int  # bytes
    fds: int


def sample(pid: int) -> Sample | None:
    """The process's resident set and open file descriptors now (None once it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError):
        return None
    kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return Sample(time.monotonic(), kib * 1024, fds)


@dataclass
class Replica:
    """One consumer process; ``first`` is sampled once it is warm (``WARM`` bytes of
    deliveries logged), ``last`` at every look until it is stopped or killed."""

    WARM = 20_000

    service: str
    slot: int
    process: subprocess.Popen[bytes]
    deliveries: Path
    log: Path
    first: Sample | None = None
    last: Sample | None = None

    def look(self) -> None:
        if self.process.poll() is not None:
            return
        now = sample(self.process.pid)
        if now is None:
            return
        if self.first is None:
            try:
                warm = self.deliveries.stat().st_size >= self.WARM
            except FileNotFoundError:
                warm = False
            if warm:
                self.first = now
        if self.first is not None:
            self.last = now


@dataclass
class Transactions:
    """What the publishers' lines say: rows of committed, rolled-back and open
    transactions, held ones, and commit times."""

    committed: set[int] = field(default_factory=set)
    rolled_back: set[int] = field(default_factory=set)
    begun: set[int] = field(default_factory=set)
    held: list[range] = field(default_factory=list)
    commit_times: list[float] = field(default_factory=list)
    done: list[float] = field(default_factory=list)

    @classmethod
    def read(cls, paths: list[Path]) -> Transactions:
        found = cls()
        for path in paths:
            starts: dict[int, range] = {}
            for line in path.read_text().splitlines() if path.exists() else []:
                tag, *rest = line.split()
                if tag in ("b", "c", "r"):
                    rows = range(int(rest[0]), int(rest[0]) + int(rest[1]))
                    {"b": found.begun, "c": found.committed, "r": found.rolled_back}[tag].update(
                        rows
                    )
                    starts[rows.start] = rows
                    if tag == "c":
                        found.commit_times.append(float(rest[2]))
                elif tag == "held":
                    found.held.append(starts[int(rest[0])])
                elif tag == "done":
                    found.done.append(float(rest[0]))
        return found


def broker_down_at_start(log: Path) -> bool:
    """Whether the process's log ends with Herald's first connect failing (the
    ``async with connect(...)`` of the process raised a :class:`herald.BrokerError`)."""
    text = log.read_text(errors="replace") if log.exists() else ""
    last = text.rpartition("Traceback (most recent call last):")[2]
    raised = [line for line in last.splitlines() if line.startswith("herald.errors.")]
    return "await self.broker.connect()" in last and bool(raised)


def _query(db: Path, sql: str) -> list[tuple[object, ...]]:
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=60)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    finally:
        conn.close()


class Platform:
    """The publisher (``employees``) and two replicas each of ``payroll`` and
    ``giftcards``, on the broker at ``url``, their files under ``root``."""

    def __init__(self, root: Path, url: str, total: int, rate: float, holds: list[int]) -> None:
        self.root = root
        self.url = url
        self.total = total
        self.rate = rate
        self.holds = holds
        """Row counts at which the publisher holds a transaction open, to be killed."""
        self.publisher_db = root / "employees.db"
        self.generation = 0
        self.publisher: subprocess.Popen[bytes] | None = None
        self.publisher_log = root / "employees-0.log"
        self.revived: list[str] = []
        self.publisher_outs: list[Path] = []
        self.replicas: list[Replica] = []
        self.retired: list[Replica] = []
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}

    def _spawn(self, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        return spawn([sys.executable, "-m", "tests.soak.services", *args], log, env=self.env)

    def start(self) -> None:
        """Every process, consumers first (the publisher at once: their queues exist)."""
        self.start_consumers()
        self.start_publisher()

    def start_consumers(self) -> None:
        for service in SERVICES:
            for slot in (0, 1):
                self.start_replica(service, slot)

    def ready(self) -> bool:
        """Whether every service has a replica that has declared its queue."""
        return all(
            any(
                r.deliveries.with_suffix(".ready").exists() for r in self.replicas if r.service == s
            )
            for s in SERVICES
        )

    def start_publisher(self) -> None:
        self.generation += 1
        out = self.root / f"employees-{self.generation}.out"
        self.publisher_log = self.root / f"employees-{self.generation}.log"
        self.publisher_outs.append(out)
        options = {
            "--total": self.total,
            "--generation": self.generation,
            "--hold-at": self.holds[0] if self.holds else 0,
            "--rate": self.rate,
        }
        self.publisher = self._spawn(
            ["publish", self.url, str(self.publisher_db), str(out)]
            + [str(part) for option in options.items() for part in option],
            self.publisher_log,
        )

    def start_replica(self, service: str, slot: int) -> Replica:
        index = len(self.replicas) + len(self.retired)
        deliveries = self.root / f"{service}-{index}.deliveries"
        log = self.root / f"{service}-{index}.log"
        process = self._spawn(
            ["consume", self.url, service, str(self.service_db(service)), str(deliveries)], log
        )
        replica = Replica(service, slot, process, deliveries, log)
        self.replicas.append(replica)
        return replica

    def service_db(self, service: str) -> Path:
        return self.root / f"{service}.db"

    def kill_replica(self, replica: Replica) -> None:
        replica.look()
        kill_group(replica.process)
        self.replicas.remove(replica)
        self.retired.append(replica)

    def held(self) -> bool:
        """Whether the publisher holds a transaction open, waiting to be killed."""
        out = self.publisher_outs[-1]
        return self.publisher is not None and out.exists() and "held" in out.read_text()

    def kill_held_publisher(self) -> None:
        assert self.publisher is not None
        kill_group(self.publisher)
        self.publisher = None
        self.holds.pop(0)

    def _looked_at(self) -> list[subprocess.Popen[bytes]]:
        """Every running process, each replica's figures read one last time."""
        for replica in self.replicas:
            replica.look()
        processes = [r.process for r in self.replicas]
        if self.publisher is not None:
            processes.append(self.publisher)
        return processes

    def kill_everything(self) -> None:
        """SIGKILL the publisher and every replica at once, then reap them."""
        processes = self._looked_at()
        for process in processes:
            os.killpg(process.pid, signal.SIGKILL)
        for process in processes:
            kill_group(process)
        self.retired.extend(self.replicas)
        self.replicas = []
        self.publisher = None

    def stop(self) -> None:
        """SIGTERM everything, SIGKILL what is still there after 30 s."""
        processes = self._looked_at()
        for process in processes:
            kill_group(process, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                kill_group(process)
        self.retired.extend(self.replicas)
        self.replicas = []
        self.publisher = None

    def revive(self) -> list[str]:
        """Start again, as the platform's supervisor does, each process that exited
        because the broker was down when it started (Herald's first connect fails
        fast); return the processes that ended otherwise (a crash the soak found)."""
        crashed = []
        for replica in [r for r in self.replicas if r.process.poll() is not None]:
            if not broker_down_at_start(replica.log):
                crashed.append(f"{replica.service} pid {replica.process.pid}: see {replica.log}")
                continue
            self.revived.append(replica.service)
            self.replicas.remove(replica)
            self.retired.append(replica)
            self.start_replica(replica.service, replica.slot)
        if self.publisher is not None and self.publisher.poll() is not None:
            if not broker_down_at_start(self.publisher_log):
                crashed.append(f"publisher pid {self.publisher.pid}: see {self.publisher_log}")
            else:
                self.revived.append("employees")
                self.start_publisher()
        return crashed

    def look(self) -> None:
        for replica in self.replicas:
            replica.look()

    def transactions(self) -> Transactions:
        return Transactions.read(self.publisher_outs)

    def published(self) -> set[int]:
        """The rows committed in the publisher's database."""
        return {int(str(n)) for (n,) in _query(self.publisher_db, "SELECT n FROM hires")}

    def committed_count(self) -> int:
        rows = _query(self.publisher_db, "SELECT count(*) FROM hires")
        return int(str(rows[0][0])) if rows else 0

    def consumed_count(self, service: str) -> int:
        rows = _query(self.service_db(service), "SELECT count(DISTINCT n) FROM effects")
        return int(str(rows[0][0])) if rows else 0

    def effects(self, service: str) -> Counter[int]:
        rows = _query(self.service_db(service), "SELECT n FROM effects")
        return Counter(int(str(n)) for (n,) in rows)

    def drained_at(self, service: str) -> float:
        """When the last event's first effect committed (``time.monotonic()``)."""
        rows = _query(
            self.service_db(service),
            "SELECT max(m) FROM (SELECT min(at) m FROM effects GROUP BY n)",
        )
        return float(str(rows[0][0]))

    def deliveries(self, service: str) -> Counter[str]:
        counts: Counter[str] = Counter()
        for replica in [*self.retired, *self.replicas]:
            if replica.service == service and replica.deliveries.exists():
                counts.update(replica.deliveries.read_text().split())
        return counts

    def all_replicas(self) -> list[Replica]:
        return [*self.retired, *self.replicas]
