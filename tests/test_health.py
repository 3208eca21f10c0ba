"""Health probes over HTTP: ``/readyz`` flips when a consumer stops and while an AMQP
connection is cut (through a TCP relay) and comes back; ``/healthz`` stays up."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

import herald
from herald.health import Health, ProbeServer, asgi_app, health_routes
from herald.testing import eventually

from .brokers.amqp.support import require_server
from .brokers.nats.support import nats_url, require_nats
from .relay import Relay


def get(port: int, path: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def probe(port: int, path: str) -> tuple[int, dict[str, object]]:
    return await asyncio.to_thread(get, port, path)


@contextlib.asynccontextmanager
async def probes(health: Health) -> AsyncIterator[int]:
    server = ProbeServer(health_routes(health), port=0, host="127.0.0.1")
    server.start()
    try:
        yield server.port
    finally:
        server.close()


class Noted(herald.Event, type="health.noted"):
    n: int


def noting_service(seen: list[int]) -> herald.Service:
    svc = herald.Service("noter")

    @svc.on(Noted)
    async def note(event: Noted) -> None:
        seen.append(event.n)

    return svc


async def test_ready_only_while_every_expected_consumer_runs() -> None:
    seen: list[int] = []
    async with herald.connect("memory://health-consumers") as bus:
        health = Health(bus, services=["noter"])
        async with probes(health) as port:
            status, body = await probe(port, "/readyz")
            assert (status, body["checks"]) == (503, {"broker": "ok", "noter": "not started"})
            worker = await bus.start(noting_service(seen))
            await eventually(lambda: health.ready().ok, 5, "the consumer subscribed")
            assert await probe(port, "/readyz") == (
                200,
                {"status": "ok", "checks": {"broker": "ok", "noter.health.noted": "ok"}},
            )
            await worker.stop()
            status, body = await probe(port, "/readyz")
            assert (status, body["checks"]) == (
                503,
                {"broker": "ok", "noter.health.noted": "not consuming"},
            )
            assert (await probe(port, "/healthz"))[0] == 200


async def test_unknown_paths_and_methods_are_refused() -> None:
    async with herald.connect("memory://health-refusals") as bus, probes(Health(bus)) as port:
        with pytest.raises(urllib.error.HTTPError) as missing:
            await asyncio.to_thread(urllib.request.urlopen, f"http://127.0.0.1:{port}/metrics")
        assert missing.value.code == 404
        request = urllib.request.Request(f"http://127.0.0.1:{port}/readyz", method="POST")
        with pytest.raises(urllib.error.HTTPError) as posted:
            await asyncio.to_thread(urllib.request.urlopen, request)
        assert posted.value.code == 405


def amqp_url(port: int) -> str:
    require_server()
    namespace = f"th{uuid.uuid4().hex[:10]}"
    return f"amqp://guest:guest@127.0.0.1:{port}/?namespace={namespace}&reconnect_timeout=0.5"


def nats_server_url(port: int) -> str:
    require_nats()
    return nats_url(port=port)


@pytest.mark.parametrize(
    ("server", "make_url"),
    [
        pytest.param(5672, amqp_url, marks=pytest.mark.amqp, id="amqp"),
        pytest.param(4222, nats_server_url, marks=pytest.mark.nats, id="nats"),
    ],
)
async def test_readiness_follows_a_cut_connection_and_its_recovery(
    server: int, make_url: Callable[[int], str]
) -> None:
    relay = Relay(server)
    await relay.start()
    url = make_url(relay.port)
    seen: list[int] = []
    try:
        async with herald.connect(url) as bus:
            worker = await bus.start(noting_service(seen))
            health = Health(bus, services=["noter"])
            async with probes(health) as port:
                await eventually(lambda: health.ready().ok, 10, "ready at first")
                await relay.cut()
                await eventually(lambda: not health.ready().ok, 10, "not ready once cut")
                status, body = await probe(port, "/readyz")
                assert status == 503
                assert body["checks"]["broker"] == "not connected"  # type: ignore[index]
                assert (await probe(port, "/healthz"))[0] == 200  # alive: no restart wanted
                await relay.restore()
                await eventually(lambda: health.ready().ok, 30, "ready again after the outage")
                assert (await probe(port, "/readyz"))[0] == 200
                await bus.publish(Noted(n=1))
                await eventually(lambda: seen == [1], 10, "a delivery after the outage")
            await worker.stop()
            await bus.broker.destroy()
    finally:
        await relay.cut()


async def test_the_asgi_app_answers_both_probes() -> None:
    async with herald.connect("memory://health-asgi") as bus:
        app = asgi_app(Health(bus, services=["absent"]))
        answers: list[tuple[str, int]] = []
        for path in ("/probes/healthz", "/probes/readyz"):
            sent: list[dict[str, object]] = []

            async def receive() -> dict[str, object]:
                return {"type": "http.request", "body": b"", "more_body": False}

            async def send(event: dict[str, object], sent: list[dict[str, object]] = sent) -> None:
                sent.append(event)

            await app({"type": "http", "method": "GET", "path": path}, receive, send)
            answers.append((path, int(sent[0]["status"])))  # type: ignore[call-overload]
    assert answers == [("/probes/healthz", 200), ("/probes/readyz", 503)]


async def test_readiness_turns_false_on_sigterm_before_the_drain_completes() -> None:
    """What a rolling deploy relies on: from the signal on, ``/readyz`` says 503 (the
    busy service ``draining``) while a running handler finishes; ``/healthz`` stays 200."""
    release = asyncio.Event()
    started = asyncio.Event()
    finished: list[int] = []
    slow, idle = herald.Service("slow"), noting_service([])

    @slow.on(Noted)
    async def hold(event: Noted) -> None:
        started.set()
        await release.wait()
        finished.append(event.n)

    async with herald.connect("memory://health-drain") as bus:
        health = Health(bus, services=["slow", "noter"])
        async with probes(health) as port:
            serving = asyncio.create_task(bus.serve(slow, idle, shutdown_timeout=30))
            await eventually(lambda: health.ready().ok, 5, "both services consuming")
            await bus.publish(Noted(n=7))
            await asyncio.wait_for(started.wait(), 5)
            os.kill(os.getpid(), signal.SIGTERM)
            await eventually(lambda: not health.ready().ok, 5, "not ready once signalled")
            status, body = await probe(port, "/readyz")
            checks = body["checks"]
            assert status == 503 and checks["slow.health.noted"] == "draining"  # type: ignore[index]
            idle_state = checks["noter.health.noted"]  # type: ignore[index]
            assert idle_state in ("draining", "not consuming"), "no handler: stops at once"
            assert (await probe(port, "/healthz"))[0] == 200
            assert not serving.done() and finished == [], "the drain is still under way"
            release.set()
            await asyncio.wait_for(serving, 10)
            assert finished == [7], "the running handler finished within the deadline"
            status, body = await probe(port, "/readyz")
            assert (status, body["checks"]) == (
                503,
                {"broker": "ok", "slow": "not started", "noter": "not started"},
            )
