"""Prometheus metrics: a known workload, scraped over HTTP, counted exactly; the queue
and outbox gauges; multi-process mode; ``herald run --metrics-port``."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Callable, Collection
from pathlib import Path

import pydantic
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import create_async_engine

import herald
from herald.brokers.memory import MemoryBroker
from herald.capabilities import QueueStats
from herald.cli import main
from herald.health import Health, ProbeServer, health_routes
from herald.metrics import MetricsMiddleware, QueueMonitor, metrics_routes
from herald.metrics.outbox import OutboxMonitor
from herald.outbox import Outbox, OutboxRelay
from herald.testing import eventually

from . import demo_app
from .hr.platform import free_port
from .test_cli import ROOT, Child, child_env, children, sqlite_url, wait

__all__ = ["children", "sqlite_url"]  # fixtures shared with the CLI tests

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(port: int, path: str = "/metrics") -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return parse(response.read().decode())


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


class Entry(herald.Event, type="ledger.entry"):
    n: int


class Balance(herald.Event, type="ledger.balance"):
    account: int


class Amount(pydantic.BaseModel):
    cents: int


class Unanswered(herald.Event, type="ledger.unanswered"):
    pass


ledger = herald.Service(
    "ledger", retry=herald.RetryPolicy(attempts=3, initial_delay=0.01, jitter=0)
)


@ledger.on(Entry)
async def record(entry: Entry) -> None:
    if entry.n == -1:
        raise herald.Reject("negative entries are refused")
    if entry.n < 0:
        raise RuntimeError("the ledger is locked")


@ledger.rpc(Balance)
async def balance(request: Balance) -> Amount:
    if request.account < 0:
        raise herald.Invalid("no such account", fields={"account": "negative"})
    return Amount(cents=100 * request.account)


async def test_a_known_workload_scraped_from_metrics_counts_exactly() -> None:
    """5 acked; 2 that always fail (2 retries each, then a dead letter); 1 rejected and
    1 undecodable (dead-lettered at once); 2 RPC calls answered, 1 error reply, 1
    call nobody answers; 9 events waiting in a queue nobody consumes."""
    registry = CollectorRegistry()
    async with herald.connect(
        "memory://metrics-workload", middleware=[MetricsMiddleware(registry)]
    ) as bus:
        await bus.broker.declare(herald.Subscription("archive", "ledger.entry"))
        worker = await bus.start(ledger)
        server = ProbeServer(
            {**metrics_routes(registry), **health_routes(Health(bus))}, port=0, host="127.0.0.1"
        )
        server.start()
        try:
            await bus.publish_many([Entry(n=i) for i in range(5)])
            await bus.publish_many([Entry(n=-2), Entry(n=-3), Entry(n=-1)])
            await bus.publish(herald.Message(type="ledger.entry", body=b"{not json"))
            assert (await bus.request(Balance(account=2), Amount)).cents == 200
            assert (await bus.request(Balance(account=3), Amount)).cents == 300
            with pytest.raises(herald.Invalid):
                await bus.request(Balance(account=-1), Amount)
            with pytest.raises(herald.TimeoutError):
                await bus.request(Unanswered(), Amount, timeout=0.3)
            # 5 acked + 2 x (2 retried + 1 dead-lettered) + 2 dead-lettered + 3 RPC acked
            await eventually(lambda: worker.handled == 5 + 6 + 2 + 3, 10, "the workload")
            await QueueMonitor(bus, ["archive.ledger.entry"], registry=registry).refresh()
            samples = await asyncio.to_thread(scrape, server.port)
        finally:
            server.close()
            await worker.stop()

    entry = {"service": "ledger", "queue": "ledger.ledger.entry", "handler": "record"}
    handled = "herald_deliveries_handled_total"
    assert value(samples, handled, **entry, outcome="acked") == 5
    assert value(samples, handled, **entry, outcome="retried") == 4
    assert value(samples, handled, **entry, outcome="dead-lettered") == 4
    assert value(samples, handled, **entry, outcome="released") == 0
    assert value(samples, "herald_retries_total", **entry) == 4
    dead = "herald_dead_letters_total"
    assert value(samples, dead, **entry, error_type="RuntimeError") == 2
    assert value(samples, dead, **entry, error_type="Reject") == 1
    assert value(samples, dead, **entry, error_type="DecodeError") == 1
    durations = "herald_handling_duration_seconds_count"
    assert value(samples, durations, **entry, outcome="acked") == 5
    assert value(samples, durations, **entry, outcome="retried") == 4
    rpc = {"service": "ledger", "queue": "ledger.rpc.ledger.balance", "handler": "balance"}
    assert value(samples, handled, **rpc, outcome="acked") == 3  # an error reply is an answer
    in_flight = "herald_deliveries_in_flight"
    assert value(samples, in_flight, service="ledger", queue="ledger.ledger.entry") == 0

    published = "herald_messages_published_total"
    assert value(samples, published, event_type="ledger.entry", outcome="confirmed") == 9
    # RPC requests are published through the same pipeline: 3 batches of events + 4 requests
    assert value(samples, "herald_publish_duration_seconds_count", outcome="confirmed") == 7
    assert value(samples, published, event_type="rpc.ledger.balance", outcome="confirmed") == 3
    assert value(samples, published, event_type="rpc.ledger.unanswered", outcome="confirmed") == 1

    calls = "herald_rpc_calls_total"
    assert value(samples, calls, request_type="rpc.ledger.balance", outcome="ok") == 2
    assert value(samples, calls, request_type="rpc.ledger.balance", outcome="error") == 1
    assert value(samples, calls, request_type="rpc.ledger.unanswered", outcome="timeout") == 1
    rpc_count = "herald_rpc_duration_seconds_count"
    assert value(samples, rpc_count, request_type="rpc.ledger.balance") == 3

    assert value(samples, "herald_queue_depth", queue="archive.ledger.entry") == 9
    assert value(samples, "herald_queue_consumers", queue="archive.ledger.entry") == 0
    assert value(samples, "herald_queue_inspection_errors_total") == 0
    assert (value(samples, "herald_queue_inspection_timestamp_seconds") or 0) > 0


async def test_publish_failures_are_counted_as_failed() -> None:
    registry = CollectorRegistry()
    async with herald.connect(
        "memory://metrics-failed-publish", middleware=[MetricsMiddleware(registry)]
    ) as bus:
        too_large = b"x" * (bus.broker.features.max_message_bytes + 1)
        with pytest.raises(herald.MessageTooLargeError):
            await bus.publish(herald.Message(type="big.thing", body=too_large))
    assert (
        registry.get_sample_value(
            "herald_messages_published_total", {"event_type": "big.thing", "outcome": "failed"}
        )
        == 1
    )


class StallingBroker(MemoryBroker):
    """A memory broker whose queue inspection hangs once ``stalled`` is set."""

    stalled = False

    async def inspect_queues(self, queues: Collection[str] | None = None) -> list[QueueStats]:
        if self.stalled:
            await asyncio.Event().wait()
        return await super().inspect_queues(queues)


async def test_a_stalled_queue_reading_times_out_keeping_the_gauges() -> None:
    registry = CollectorRegistry()
    broker = StallingBroker("metrics-stalling")
    async with herald.Bus(broker) as bus:
        await broker.declare(herald.Subscription("late", "thing.happened"))
        await bus.publish(herald.Message(type="thing.happened", body=b"{}"))
        monitor = QueueMonitor(bus, ["late.thing.happened"], registry=registry, timeout=0.2)
        assert await monitor.refresh()
        broker.stalled = True
        await bus.publish(herald.Message(type="thing.happened", body=b"{}"))
        assert not await monitor.refresh()
    assert registry.get_sample_value("herald_queue_inspection_errors_total") == 1
    assert registry.get_sample_value("herald_queue_depth", {"queue": "late.thing.happened"}) == 1


async def test_outbox_backlog_and_lag_follow_the_relay(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/outbox.db")
    outbox = Outbox()
    await outbox.create(engine)
    monitor = OutboxMonitor(engine, outbox, registry=registry)
    labels = {"outbox": outbox.name}
    try:
        async with engine.begin() as conn:
            await outbox.stage_many(conn, [Entry(n=i) for i in range(3)])
        await monitor.refresh()
        assert registry.get_sample_value("herald_outbox_backlog", labels) == 3
        assert (registry.get_sample_value("herald_outbox_lag_seconds", labels) or 0) > 0
        async with herald.connect("memory://metrics-outbox") as bus:
            assert await OutboxRelay(engine, bus, outbox).drain() == 3
        await monitor.refresh()
        assert registry.get_sample_value("herald_outbox_backlog", labels) == 0
        assert registry.get_sample_value("herald_outbox_lag_seconds", labels) == 0
    finally:
        await engine.dispose()


WORKLOAD = textwrap.dedent(
    """
    import asyncio, sys
    import herald
    from herald.metrics import MetricsMiddleware, process_exited

    class Tick(herald.Event, type="tick.ticked"):
        n: int

    svc = herald.Service("ticker")

    @svc.on(Tick)
    async def tick(event: Tick) -> None:
        pass

    async def main(count: int) -> None:
        async with herald.connect("memory://mp", middleware=[MetricsMiddleware()]) as bus:
            worker = await bus.start(svc)
            await bus.publish_many([Tick(n=i) for i in range(count)])
            while worker.handled < count:
                await asyncio.sleep(0.01)
            await worker.stop()
        process_exited()

    asyncio.run(main(int(sys.argv[1])))
    """
)


def test_processes_add_up_in_multiprocess_mode(tmp_path: Path) -> None:
    """Two processes write to one PROMETHEUS_MULTIPROC_DIR; reading it sums them."""
    directory = tmp_path / "prometheus"
    directory.mkdir()
    env = child_env(PROMETHEUS_MULTIPROC_DIR=str(directory))
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKLOAD, str(n)], cwd=ROOT, env=env)
        for n in (3, 4)
    ]
    assert [p.wait(60) for p in procs] == [0, 0]
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    labels = {"service": "ticker", "queue": "ticker.tick.ticked", "handler": "tick"}
    assert (
        registry.get_sample_value("herald_deliveries_handled_total", {**labels, "outcome": "acked"})
        == 7
    )
    published = {"event_type": "tick.ticked", "outcome": "confirmed"}
    assert registry.get_sample_value("herald_messages_published_total", published) == 7
    # both processes ended: their live in-flight gauges are gone, not left at their last value
    in_flight = {"service": "ticker", "queue": "ticker.tick.ticked"}
    assert registry.get_sample_value("herald_deliveries_in_flight", in_flight) is None


def test_herald_run_serves_metrics_and_probes_on_one_port(
    tmp_path: Path, sqlite_url: str, children: Callable[..., Child]
) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    service = children(
        "run", "tests.demo_app:service", "--broker", sqlite_url,
        "--metrics-port", address, "--health-port", address,
        DEMO_APP_OUT=str(tmp_path / "out.txt"),
    )  # fmt: skip
    service.wait_for(service.err, "/healthz, /metrics, /readyz")
    wait(lambda: _status(port, "/readyz") == 200, "ready")
    assert _status(port, "/healthz") == 200
    asyncio.run(publish_demo_events(sqlite_url))
    labels = {"service": "demoapp", "queue": "demoapp.demo.poison", "handler": "refuse"}

    def dead_lettered() -> bool:
        samples = scrape(port)
        return (
            value(samples, "herald_deliveries_handled_total", **labels, outcome="dead-lettered")
            == 1
        )

    wait(dead_lettered, "the dead letter in /metrics")
    samples = scrape(port)
    ping = {"service": "demoapp", "queue": "demoapp.demo.ping", "handler": "record"}
    assert value(samples, "herald_deliveries_handled_total", **ping, outcome="acked") == 3
    assert value(samples, "herald_dead_letters_total", **labels, error_type="Reject") == 1
    assert service.stop(signal.SIGTERM) == 0


async def publish_demo_events(url: str) -> None:
    """Three pings and one poison, as ``herald publish`` would send them."""
    async with herald.connect(url) as bus:
        await bus.publish_many([demo_app.Ping(text=text) for text in "abc"])
        await bus.publish(herald.Message(type="demo.poison", body=b"{}"))


def _status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def test_metrics_port_is_checked(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["run", "tests.demo_app:service", "--metrics-port", "nine", "--broker", "memory://x"]
    assert main(argv) == 2
    assert "expected PORT or HOST:PORT, got 'nine'" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv[3] = f"127.0.0.1:{port}"
        assert main(argv) == 2
    assert f"cannot serve /metrics on 127.0.0.1:{port}: " in capsys.readouterr().err
