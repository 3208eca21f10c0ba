"""The supervisor: the platform as processes, restarts after crashes, clean stops."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

import httpx
import pytest

import herald
from hr_platform.supervisor import command, run_platform

from ..brokers.kafka.server import kafka_url
from ..servers import require_port
from .platform import eventually, free_port, same_origin


def children(pid: int) -> dict[str, int]:
    """Service name -> pid of the supervisor's child processes."""
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == pid and b"hr_platform" in argv:
            found[argv[argv.index(b"hr_platform") + 1].decode()] = int(entry.name)
    return found


def _spawn(
    argv: list[str], log: Path, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env)


def _reap(demo: subprocess.Popen[bytes], log: Path) -> None:
    """SIGKILL a demo that is still running, and its services; print its log's end."""
    if demo.poll() is None:
        for pid in children(demo.pid).values():
            os.kill(pid, signal.SIGKILL)
        demo.kill()
    print(log.read_text(errors="replace")[-4000:])


def _alive(pids: Iterable[int]) -> bool:
    return any(os.path.exists(f"/proc/{pid}") for pid in pids)


def test_command_line_of_a_service() -> None:
    argv = command("payroll", port=8101, data_dir="/data")
    assert argv[1:] == ["-m", "hr_platform", "payroll", "--data-dir", "/data", "--port", "8101"]
    assert "--broker" not in command("employees", port=None, data_dir="d")


async def test_supervisor_runs_restarts_and_stops_the_platform(workdir: Path) -> None:
    ports = {"hr-web": free_port(), "payroll": free_port(), "giftcards": free_port()}
    argv = [sys.executable, "-m", "hr_platform", "platform", "--data-dir", str(workdir)]
    argv += ["--broker", f"sqlite:///{workdir}/herald.db", "--without", "giftcards"]
    argv += [f"--{name}-port={port}" for name, port in ports.items()]
    argv += ["--dashboard-port=0"]  # none: tests/dashboard run it
    log = workdir / "supervisor.log"
    supervisor = await asyncio.to_thread(_spawn, argv, log)
    try:
        async with httpx.AsyncClient(timeout=10, event_hooks={"request": [same_origin]}) as http:

            async def up(name: str) -> bool:
                try:
                    got = await http.get(f"http://127.0.0.1:{ports[name]}/healthz")
                except httpx.HTTPError:
                    return False
                return got.status_code == 200

            await eventually(lambda: up("hr-web"), timeout=40, what="hr-web", interval=0.25)
            await eventually(lambda: up("payroll"), timeout=40, what="payroll", interval=0.25)
            printed = log.read_text()
            assert f"hr-web     http://127.0.0.1:{ports['hr-web']}/employees" in printed
            assert "not started: giftcards" in printed
            assert set(children(supervisor.pid)) == {"employees", "hr-web", "payroll"}

            old = children(supervisor.pid)["payroll"]
            os.kill(old, signal.SIGKILL)

            async def restarted() -> bool:
                pid = children(supervisor.pid).get("payroll")
                return pid is not None and pid != old and await up("payroll")

            await eventually(restarted, timeout=40, what="payroll to be restarted", interval=0.25)
            assert "payroll exited (-9); restarting in 1s" in log.read_text()

            created = await http.post(
                f"http://127.0.0.1:{ports['hr-web']}/api/employees",
                json={"first_name": "A", "last_name": "B", "email": "a@b.io", "salary": "1"},
            )
            assert created.status_code == 201

            async def on_payroll() -> bool:
                got = await http.get(f"http://127.0.0.1:{ports['payroll']}/api/payroll")
                return len(got.json()) == 1

            await eventually(on_payroll, timeout=30, what="the payroll record", interval=0.25)

        running = children(supervisor.pid)
        supervisor.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(supervisor.wait, 40) == 0
        deadline = time.monotonic() + 5
        while await asyncio.to_thread(_alive, running.values()):
            assert time.monotonic() < deadline, "services outlived the supervisor"
            await asyncio.sleep(0.1)
        assert "stopping all services" in log.read_text()
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            for pid in children(supervisor.pid).values():
                os.kill(pid, signal.SIGKILL)


def test_unknown_services_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown service"):
        asyncio.run(run_platform("memory://x", without={"hr-wbe"}))


@pytest.mark.parametrize(
    "scheme", ["nats", "redis", pytest.param("kafka", marks=pytest.mark.kafka)]
)
async def test_herald_demo_runs_the_platform_on_nats_redis_and_kafka(
    workdir: Path, scheme: str
) -> None:
    """``herald demo --broker URL --without giftcards``: the README's promise."""
    namespace = f"demo{uuid.uuid4().hex[:8]}"
    if scheme == "kafka":
        url = kafka_url(namespace)  # Tansu, started on a loopback port
    else:
        require_port({"nats": 4222, "redis": 6379}[scheme], scheme)
        url = {
            "nats": f"nats://127.0.0.1:4222/?namespace={namespace}",
            "redis": f"redis://127.0.0.1:6379/0?namespace={namespace}",
        }[scheme]
    ports = {"hr-web": free_port(), "payroll": free_port(), "giftcards": free_port()}
    argv = [sys.executable, "-m", "herald", "demo", "--broker", url, "--without", "giftcards"]
    argv += ["--data-dir", str(workdir), f"--web-port={ports['hr-web']}"]
    argv += [f"--{name}-port={ports[name]}" for name in ("payroll", "giftcards")]
    dashboard = free_port()
    argv += [f"--dashboard-port={dashboard}"]
    demo = await asyncio.to_thread(_spawn, argv, workdir / "demo.log")
    try:
        async with httpx.AsyncClient(timeout=10, event_hooks={"request": [same_origin]}) as http:
            created = None

            async def create() -> bool:
                nonlocal created
                try:
                    created = await http.post(
                        f"http://127.0.0.1:{ports['hr-web']}/api/employees",
                        json={
                            "first_name": "N",
                            "last_name": "R",
                            "email": "n@r.io",
                            "salary": "2",
                        },
                    )
                except httpx.HTTPError:
                    return False
                return created.status_code == 201

            async def payroll_consuming() -> bool:
                try:
                    got = await http.get(f"http://127.0.0.1:{ports['payroll']}/readyz")
                except httpx.HTTPError:
                    return False
                return got.status_code == 200

            # an employee created before payroll's queue exists is not payroll's to receive
            await eventually(payroll_consuming, timeout=60, what="payroll ready", interval=0.5)
            await eventually(create, timeout=60, what="an employee created", interval=0.5)

            async def on_payroll() -> bool:
                try:
                    got = await http.get(f"http://127.0.0.1:{ports['payroll']}/api/payroll")
                except httpx.HTTPError:
                    return False
                return len(got.json()) == 1

            await eventually(on_payroll, timeout=60, what="the payroll record", interval=0.5)
            page = await http.get(f"http://127.0.0.1:{dashboard}/")
            assert 'data-queue="payroll.employee"' in page.text  # the dashboard, on this broker
        assert set(children(demo.pid)) == {"employees", "hr-web", "payroll"}
        assert "not started: giftcards" in (workdir / "demo.log").read_text()
        demo.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(demo.wait, 40) == 0
    finally:
        _reap(demo, workdir / "demo.log")
        async with herald.connect(url) as bus:
            await bus.broker.destroy()


async def test_herald_demo_without_a_broker_runs_on_the_embedded_default(workdir: Path) -> None:
    """``make run``: ``herald demo`` with no ``--broker`` and no ``$HERALD_BROKER``."""
    ports = {name: free_port() for name in ("hr-web", "payroll", "giftcards", "dashboard")}
    argv = [sys.executable, "-m", "herald", "demo", "--data-dir", str(workdir)]
    argv += ["--without", "giftcards", f"--web-port={ports['hr-web']}"]
    argv += [f"--{name}-port={ports[name]}" for name in ("payroll", "giftcards", "dashboard")]
    env = {k: v for k, v in os.environ.items() if k != "HERALD_BROKER"}
    log = workdir / "demo.log"
    demo = await asyncio.to_thread(_spawn, argv, log, workdir, env)
    try:
        async with httpx.AsyncClient(timeout=10) as http:

            async def pages_up() -> bool:
                try:
                    web = await http.get(f"http://127.0.0.1:{ports['hr-web']}/employees")
                    board = await http.get(f"http://127.0.0.1:{ports['dashboard']}/")
                except httpx.HTTPError:
                    return False
                return web.status_code == board.status_code == 200

            await eventually(pages_up, timeout=60, what="hr-web and the dashboard", interval=0.5)
        first = log.read_text().splitlines()[0]
        assert first == f"Herald dashboard http://127.0.0.1:{ports['dashboard']}/", first
        assert (workdir / "var" / "herald.db").exists(), "the embedded default, ./var"
        demo.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(demo.wait, 40) == 0
    finally:
        _reap(demo, log)
