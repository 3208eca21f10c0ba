"""The HR services' process runner on SIGTERM: the worker drains first while the web
server still answers, ``/readyz`` saying 503 ``draining``; then everything stops."""

from __future__ import annotations

import asyncio
import os
import signal

import httpx
import pytest
from fastapi import FastAPI

import herald
from hr_platform.process import Listener, observe, run_until_stopped

from .platform import eventually, free_port


class Held(herald.Event, type="process.held"):
    n: int


async def test_sigterm_drains_the_worker_while_readyz_says_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    release, started, finished = asyncio.Event(), asyncio.Event(), []
    service = herald.Service("holder")

    @service.on(Held)
    async def hold(event: Held) -> None:
        started.set()
        await release.wait()
        finished.append(event.n)

    listener = Listener("127.0.0.1", free_port(), token="secret")
    app = FastAPI()
    async with herald.connect("memory://process-drain") as bus, httpx.AsyncClient() as http:
        worker = await bus.start(service)
        observe(app, bus, ["holder"])
        running = asyncio.create_task(
            run_until_stopped(
                "holder", [], server=listener.server(listener.guard(app)), worker=worker
            )
        )
        readyz = listener.url("/readyz")

        async def answers(status: int) -> bool:
            try:
                return (await http.get(readyz)).status_code == status
            except httpx.HTTPError:
                return False

        await eventually(lambda: answers(200), 10, "ready", interval=0.05)
        # behind the platform's guard: probes need no token, everything else does
        assert (await http.get(listener.url("/metrics"))).status_code == 401
        metrics = await http.get(
            listener.url("/metrics"), headers={"Authorization": "Bearer secret"}
        )
        assert metrics.status_code == 200 and b"# TYPE" in metrics.content
        rebound = await http.get(readyz, headers={"Host": "evil.example"})
        assert rebound.status_code == 400
        await bus.publish(Held(n=1))
        await asyncio.wait_for(started.wait(), 5)
        os.kill(os.getpid(), signal.SIGTERM)
        await eventually(lambda: answers(503), 5, "not ready once signalled", interval=0.05)
        assert (await http.get(readyz)).json()["checks"] == {
            "broker": "ok",
            "holder.process.held": "draining",
        }
        assert not running.done() and finished == []
        release.set()
        await asyncio.wait_for(running, 15)
    assert finished == [1], "the running handler finished before the process stopped"
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2:] == ["holder: draining (not ready; up to 10s)", "holder: stopping"]
