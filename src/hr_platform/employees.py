"""The ``employees`` service: owns the employee database and answers requests about it.

Requests arrive over the bus (``employees.search/get/create/update/delete``); each
change commits the row and its ``employee.*`` event together (transactional outbox)
and a relay publishes the events, in order per employee, whenever the broker can
take them. With ``--port`` the service also serves the same operations as a small
local JSON API (``/employees``), which keeps accepting changes while the broker is
down: a bulk import next to the service uses it, and the events follow when the
broker is back.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

import herald
from herald.metrics import QueueMonitor
from herald.metrics.outbox import OutboxMonitor
from herald.outbox import OutboxRelay

from .database import Database
from .directory import Directory, metadata, outbox
from .events import (
    CreateEmployee,
    DeleteEmployee,
    EmployeeCreated,
    EmployeeDeleted,
    EmployeeList,
    EmployeeRecord,
    EmployeeUpdated,
    GetEmployee,
    SearchEmployees,
    UpdateEmployee,
)
from .process import (
    SHUTDOWN_TIMEOUT,
    Listener,
    connect,
    observe,
    reporting,
    run_until_stopped,
)

__all__ = ["build_service", "local_api", "run_employees"]


def build_service(directory: Directory) -> herald.Service:
    # The events are published by the outbox relay, not by a handler.
    service = herald.Service(
        "employees",
        concurrency=16,
        publishes=[EmployeeCreated, EmployeeUpdated, EmployeeDeleted],
    )

    @service.rpc(SearchEmployees)
    async def search(request: SearchEmployees) -> EmployeeList:
        return await directory.search(request)

    @service.rpc(GetEmployee)
    async def get(request: GetEmployee) -> EmployeeRecord:
        return await directory.get(request.guid)

    @service.rpc(CreateEmployee)
    async def create(request: CreateEmployee) -> EmployeeRecord:
        return await directory.create(request.model_dump())

    @service.rpc(UpdateEmployee)
    async def update(request: UpdateEmployee) -> EmployeeRecord:
        return await directory.update(request.guid, request.model_dump(exclude={"guid"}))

    @service.rpc(DeleteEmployee)
    async def delete(request: DeleteEmployee) -> EmployeeRecord:
        return await directory.delete(request.guid)

    return service


def local_api(directory: Directory) -> FastAPI:
    """The directory as JSON over HTTP, independent of the broker."""
    app = FastAPI(title="employees (local)", docs_url=None, redoc_url=None)

    @app.exception_handler(herald.Invalid)
    async def invalid(_: Request, exc: herald.Invalid) -> Response:
        return JSONResponse({"detail": exc.message, "errors": exc.fields}, status_code=422)

    @app.exception_handler(herald.NotFound)
    async def not_found(_: Request, exc: herald.NotFound) -> Response:
        return JSONResponse({"detail": exc.message}, status_code=404)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/employees")
    async def search(limit: int = 100, offset: int = 0) -> EmployeeList:
        return await directory.search(SearchEmployees(limit=limit, offset=offset))

    @app.get("/employees/{guid}")
    async def get(guid: str) -> EmployeeRecord:
        return await directory.get(guid)

    @app.post("/employees", status_code=201)
    async def create(request: Request) -> EmployeeRecord:
        return await directory.create(await _json_object(request))

    @app.patch("/employees/{guid}")
    async def update(guid: str, request: Request) -> EmployeeRecord:
        return await directory.update(guid, await _json_object(request))

    @app.delete("/employees/{guid}")
    async def delete(guid: str) -> EmployeeRecord:
        return await directory.delete(guid)

    return app


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise herald.Invalid("the body must be a JSON object", fields={"<body>": "not an object"})
    return data


async def run_employees(
    broker: str,
    db_url: str,
    listener: Listener | None,
    *,
    shutdown_timeout: float = SHUTDOWN_TIMEOUT,
) -> None:
    db = Database(db_url, metadata)
    await db.create_tables()
    directory = Directory(db, outbox)
    try:
        async with connect(broker, "employees") as bus:
            relay = OutboxRelay(db.engine, bus, outbox, poll_interval=0.5)
            worker = await bus.start(build_service(directory))
            server = None
            if listener is not None:
                app = local_api(directory)
                observe(app, bus, ["employees"])
                server = listener.server(listener.guard(app, json_paths=["/employees"]))
            await run_until_stopped(
                "employees",
                [
                    relay.run,
                    QueueMonitor(bus).run,
                    OutboxMonitor(db.engine, outbox).run,
                    *reporting(bus),
                ],
                server=server,
                worker=worker,
                url=listener.url("/employees") if listener else "",
                shutdown_timeout=shutdown_timeout,
            )
    finally:
        await db.close()
