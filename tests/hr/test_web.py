"""hr-web and the employees service in one process, on the in-memory broker."""

from __future__ import annotations

import asyncio
import contextlib
import doctest
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

import herald
import herald.protobuf
from herald.outbox import OutboxRelay
from hr_platform import validation
from hr_platform.__main__ import main as hr_main
from hr_platform.database import Database
from hr_platform.directory import Directory, metadata, outbox
from hr_platform.employees import build_service
from hr_platform.events import CreateEmployee, EmployeeChanged, EmployeeRecord
from hr_platform.web import EmployeesClient, create_app

from .platform import eventually

SITE = "http://127.0.0.1:8000"
GOOD = {"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com", "salary": "52000"}


@dataclass
class Stack:
    http: httpx.AsyncClient
    events: list[tuple[str, EmployeeChanged]]
    bus: herald.Bus


async def _serve_employees(url: str, bus: herald.Bus) -> AsyncIterator[None]:
    db = Database(url, metadata)
    await db.create_tables()
    relay = OutboxRelay(db.engine, bus, outbox, poll_interval=0.1)
    relaying = asyncio.create_task(relay.run())
    worker = await bus.start(build_service(Directory(db, outbox)))
    try:
        yield
    finally:
        await worker.stop()
        relaying.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await relaying
        await db.close()


@pytest.fixture
async def stack(database_url: str) -> AsyncIterator[Stack]:
    events: list[tuple[str, EmployeeChanged]] = []
    audit = herald.Service("audit")

    @audit.on("employee.*")
    async def record(message: herald.Message) -> None:
        events.append((message.type, EmployeeChanged.model_validate_json(message.body)))

    async with herald.connect(f"memory://hr-{uuid.uuid4().hex[:8]}") as bus:
        await bus.start(audit)
        async for _ in _serve_employees(database_url, bus):
            app = create_app(EmployeesClient(bus, timeout=5), port=8000)
            async with site_client(app) as http:
                yield Stack(http, events, bus)


def site_client(app: Any) -> httpx.AsyncClient:
    """A client of hr-web on 127.0.0.1:8000 whose requests come from its own pages."""
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url=SITE, headers={"Origin": SITE})


async def settle(events: list[Any], n: int) -> None:
    async def enough() -> bool:
        return len(events) >= n

    await eventually(enough, timeout=10, what=f"{n} events", interval=0.01)


async def test_json_api_round_trip_and_events_in_order(stack: Stack) -> None:
    created = await stack.http.post("/api/employees", json=GOOD | {"salary": 52000})
    assert created.status_code == 201
    guid = created.json()["guid"]
    assert created.json()["salary"] == "52000.00"

    listed = await stack.http.get("/api/employees", params={"last_name": "Lovelace"})
    assert [r["guid"] for r in listed.json()["records"]] == [guid]
    assert (await stack.http.get(f"/api/employees/{guid}")).json()["email"] == "ada@example.com"

    patched = await stack.http.patch(f"/api/employees/{guid}", json={"title": "Analyst"})
    assert patched.json()["title"] == "Analyst" and patched.json()["first_name"] == "Ada"
    put = await stack.http.put(f"/api/employees/{guid}", json=GOOD | {"salary": "60000.50"})
    assert put.json()["salary"] == "60000.50" and put.json()["title"] == ""
    assert (await stack.http.delete(f"/api/employees/{guid}")).status_code == 200
    assert (await stack.http.get(f"/api/employees/{guid}")).status_code == 404

    await settle(stack.events, 4)
    kinds = [(kind, event.version) for kind, event in stack.events]
    assert kinds == [
        ("employee.created", 1),
        ("employee.updated", 2),
        ("employee.updated", 3),
        ("employee.deleted", 4),
    ]
    assert str(stack.events[2][1].salary) == "60000.50"


async def test_json_api_names_the_invalid_fields(stack: Stack) -> None:
    bad = await stack.http.post(
        "/api/employees", json={"first_name": "x" * 101, "email": "nope", "salary": "-3"}
    )
    assert bad.status_code == 422
    assert set(bad.json()["errors"]) == {"first_name", "last_name", "email", "salary"}
    assert "not a valid email" in bad.json()["errors"]["email"]

    ok = await stack.http.post("/api/employees", json=GOOD)
    taken = await stack.http.post("/api/employees", json=GOOD | {"first_name": "Eve"})
    assert taken.status_code == 422 and "taken" in taken.json()["errors"]["email"]
    guid = ok.json()["guid"]
    patched = await stack.http.patch(f"/api/employees/{guid}", json={"salary": "12.345"})
    assert patched.status_code == 422 and list(patched.json()["errors"]) == ["salary"]
    not_an_object = await stack.http.post(
        "/api/employees", content=b"[1]", headers={"Content-Type": "application/json"}
    )
    assert not_an_object.status_code == 422


async def test_html_scaffold(stack: Stack) -> None:
    assert "New employee" in (await stack.http.get("/employees/new")).text
    invalid = await stack.http.post("/employees", data=GOOD | {"email": "ada-at-example"})
    assert invalid.status_code == 422
    assert 'id="email-error"' in invalid.text and 'value="Lovelace"' in invalid.text

    created = await stack.http.post("/employees", data=GOOD)
    assert created.status_code == 303
    page = await stack.http.get(created.headers["location"])
    assert "Employee was created." in page.text and "52,000.00" in page.text
    guid = created.headers["location"].split("/")[2].split("?")[0]

    assert "Ada Lovelace" in (await stack.http.get("/employees")).text
    assert 'value="ada@example.com"' in (await stack.http.get(f"/employees/{guid}/edit")).text
    updated = await stack.http.post(f"/employees/{guid}", data=GOOD | {"salary": "61000"})
    assert updated.status_code == 303
    assert "61,000.00" in (await stack.http.get(f"/employees/{guid}")).text
    bad_update = await stack.http.post(f"/employees/{guid}", data=GOOD | {"last_name": ""})
    assert bad_update.status_code == 422 and 'id="last_name-error"' in bad_update.text
    deleted = await stack.http.post(f"/employees/{guid}/delete")
    assert deleted.status_code == 303
    missing = await stack.http.get(f"/employees/{guid}")
    assert missing.status_code == 404 and "no employee" in missing.text


async def test_employees_down_is_a_clear_503() -> None:
    async with herald.connect(f"memory://hr-{uuid.uuid4().hex[:8]}") as bus:
        app = create_app(EmployeesClient(bus, timeout=0.3))
        async with site_client(app) as http:
            page = await http.get("/employees")
            api = await http.post("/api/employees", json=GOOD)
    assert page.status_code == 503
    assert "not answering" in page.text and "Traceback" not in page.text
    assert api.status_code == 503 and "not answering" in api.json()["detail"]


async def test_a_failing_employees_service_is_a_502_without_details() -> None:
    broken = herald.Service("employees")

    @broken.rpc(CreateEmployee)
    async def create(request: CreateEmployee) -> EmployeeRecord:
        raise RuntimeError("secret internals")

    async with herald.connect(f"memory://hr-{uuid.uuid4().hex[:8]}") as bus:
        await bus.start(broken)
        app = create_app(EmployeesClient(bus, timeout=5))
        async with site_client(app) as http:
            page = await http.post("/employees", data=GOOD)
    assert page.status_code == 502
    assert "secret internals" not in page.text and "Traceback" not in page.text


async def test_what_another_site_could_send_is_refused(stack: Stack) -> None:
    foreign = {"Origin": "http://evil.example"}
    form = await stack.http.post("/employees", data=GOOD, headers=foreign)
    assert form.status_code == 403 and "Origin 'http://evil.example'" in form.text
    unsigned = stack.http.build_request("POST", "/employees", data=GOOD)
    del unsigned.headers["Origin"]
    bare = await stack.http.send(unsigned)
    assert bare.status_code == 403 and "no Origin or Referer" in bare.text
    plain = await stack.http.post(
        "/api/employees", content=json.dumps(GOOD), headers={"Content-Type": "text/plain"}
    )
    assert plain.status_code == 415
    assert plain.json()["detail"] == "Content-Type must be application/json, not 'text/plain'"
    rebound = await stack.http.get("/employees", headers={"Host": "evil.example:8000"})
    assert rebound.status_code == 400 and rebound.text == "Invalid host header"

    referred = stack.http.build_request("POST", "/employees", data=GOOD)
    del referred.headers["Origin"]
    referred.headers["Referer"] = f"{SITE}/employees/new"
    own = await stack.http.send(referred)
    assert own.status_code == 303  # the site's own form, known by its Referer
    listed = await stack.http.get("/api/employees")
    assert [r["email"] for r in listed.json()["records"]] == [GOOD["email"]]


@pytest.mark.parametrize(
    "argv",
    [["hr-web"], ["payroll"], ["giftcards"], ["employees", "--port", "8003"]],
    ids=lambda argv: argv[0],
)
def test_a_web_app_beyond_loopback_needs_a_token(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        hr_main([*argv, "--host", "0.0.0.0"])
    assert f"{argv[0]} on 0.0.0.0 is reachable from other machines: give it --token" in (
        capsys.readouterr().err
    )


def test_module_examples() -> None:
    for module in (validation, herald.protobuf):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, (module, result)
