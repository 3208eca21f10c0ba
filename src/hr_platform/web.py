"""``hr-web``: the HR user interface, server-rendered, with a JSON API beside it.

It has no database: every read and write is a request to the ``employees`` service
over the bus. Pages follow a Rails scaffold (index, show, new, edit, delete); the
JSON API lives under ``/api/employees``. A form with invalid fields is shown again
with each field's error (HTML) or answered 422 naming the fields (JSON). When the
employees service does not answer, or the broker is unreachable, the answer is a
503 page (or JSON) saying so, never a stack trace.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, TypeVar

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel

import herald
from herald.webguard import WebGuard, local_hosts

from .events import (
    CreateEmployee,
    DeleteEmployee,
    EmployeeList,
    EmployeeRecord,
    GetEmployee,
    SearchEmployees,
    UpdateEmployee,
)
from .pages import render, wants_json
from .process import Listener, connect, observe, reporting, run_until_stopped

__all__ = ["EmployeesClient", "create_app", "run_web"]

log = logging.getLogger("hr_platform.web")
R = TypeVar("R", bound=BaseModel)
FIELDS = ("first_name", "last_name", "email", "salary", "title")


class EmployeesClient:
    """The employees service's requests, as methods.

    Each call is bounded by ``timeout`` as a whole, publishing included: a broker
    that is reconnecting must not hold a page open longer than an absent service.
    """

    def __init__(self, bus: herald.Bus, timeout: float = 10.0) -> None:
        self.bus = bus
        self.timeout = timeout

    async def _call(self, request: herald.Event, reply: type[R], key: str | None = None) -> R:
        try:
            async with asyncio.timeout(self.timeout):
                return await self.bus.request(request, reply, key=key, timeout=self.timeout)
        except herald.TimeoutError:
            raise
        except TimeoutError as exc:
            raise herald.TimeoutError(
                f"no reply to {type(request).event_type()} within {self.timeout:g}s"
            ) from exc

    async def search(self, **attributes: Any) -> EmployeeList:
        return await self._call(SearchEmployees(**attributes), EmployeeList)

    async def get(self, guid: str) -> EmployeeRecord:
        return await self._call(GetEmployee(guid=guid), EmployeeRecord)

    async def create(self, fields: dict[str, str]) -> EmployeeRecord:
        return await self._call(CreateEmployee(**fields), EmployeeRecord)

    async def update(self, guid: str, fields: dict[str, str | None]) -> EmployeeRecord:
        return await self._call(UpdateEmployee(guid=guid, **fields), EmployeeRecord, guid)

    async def delete(self, guid: str) -> EmployeeRecord:
        return await self._call(DeleteEmployee(guid=guid), EmployeeRecord, guid)


def _form_fields(data: Any, *, partial: bool) -> dict[str, Any]:
    """The employee fields of a form or JSON body, as text (``None``: not given)."""
    fields: dict[str, Any] = {}
    for name in FIELDS:
        value = data.get(name) if hasattr(data, "get") else None
        if value is None and partial:
            continue
        fields[name] = "" if value is None else str(value)
    return fields


def _error(request: Request, status: int, title: str, detail: str) -> Response:
    if wants_json(request):
        return JSONResponse({"detail": detail}, status_code=status)
    return render(request, "error.html", {"title": title, "detail": detail}, status)


def create_app(
    client: EmployeesClient,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    allowed_hosts: Sequence[str] = (),
    token: str | None = None,
) -> FastAPI:
    """hr-web's app, answering only as ``host:port`` (and the other local names, plus
    ``allowed_hosts``) and refusing what another site could make a browser send (see
    :mod:`herald.webguard`); ``token``, if given, is required from every request."""
    app = FastAPI(title="hr-web", docs_url="/api/docs", redoc_url=None)
    app.add_middleware(
        WebGuard,
        allowed_hosts=[*local_hosts(host, port), *allowed_hosts],
        token=token,
        json_paths=["/api/"],
    )

    @app.exception_handler(herald.NotFound)
    async def not_found(request: Request, exc: herald.NotFound) -> Response:
        return _error(request, 404, "Not found", exc.message)

    @app.exception_handler(herald.TimeoutError)
    async def timed_out(request: Request, exc: herald.TimeoutError) -> Response:
        log.warning("employees service did not answer: %s", exc)
        detail = "The employees service is not answering right now. Please try again shortly."
        return _error(request, 503, "Employees service unavailable", detail)

    @app.exception_handler(herald.BrokerError)
    async def broker_down(request: Request, exc: herald.BrokerError) -> Response:
        log.warning("broker unavailable: %s", exc)
        detail = "The message broker cannot be reached right now. Please try again shortly."
        return _error(request, 503, "Service unavailable", detail)

    @app.exception_handler(herald.RemoteError)
    async def remote_failed(request: Request, exc: herald.RemoteError) -> Response:
        log.error("employees service failed: %s", exc)
        detail = "The employees service failed to handle this request; it has been logged."
        return _error(request, 502, "Employees service error", detail)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/")
    async def home() -> Response:
        return RedirectResponse("/employees", status_code=303)

    @app.get("/employees")
    async def index(request: Request, page: int = 1) -> Response:
        per_page = 50
        found = await client.search(limit=per_page, offset=(max(page, 1) - 1) * per_page)
        context = {"employees": found.records, "total": found.total, "page": max(page, 1)}
        return render(request, "employees/index.html", context | {"per_page": per_page})

    @app.get("/employees/new")
    async def new(request: Request) -> Response:
        return render(request, "employees/form.html", {"values": {}, "errors": {}})

    @app.post("/employees")
    async def create(request: Request) -> Response:
        fields = _form_fields(await request.form(), partial=False)
        try:
            employee = await client.create(fields)
        except herald.Invalid as exc:
            context = {"values": fields, "errors": exc.fields}
            return render(request, "employees/form.html", context, 422)
        return RedirectResponse(f"/employees/{employee.guid}?created=1", status_code=303)

    @app.get("/employees/{guid}")
    async def show(request: Request, guid: str) -> Response:
        context = {"employee": await client.get(guid), "notice": _notice(request)}
        return render(request, "employees/show.html", context)

    @app.get("/employees/{guid}/edit")
    async def edit(request: Request, guid: str) -> Response:
        employee = await client.get(guid)
        values = employee.model_dump(mode="json")
        context = {"employee": employee, "values": values, "errors": {}}
        return render(request, "employees/form.html", context)

    @app.post("/employees/{guid}")
    async def update(request: Request, guid: str) -> Response:
        fields = _form_fields(await request.form(), partial=False)
        try:
            await client.update(guid, dict(fields))
        except herald.Invalid as exc:
            employee = await client.get(guid)
            context = {"employee": employee, "values": fields, "errors": exc.fields}
            return render(request, "employees/form.html", context, 422)
        return RedirectResponse(f"/employees/{guid}?updated=1", status_code=303)

    @app.post("/employees/{guid}/delete")
    async def destroy(guid: str) -> Response:
        await client.delete(guid)
        return RedirectResponse("/employees?deleted=1", status_code=303)

    app.include_router(_api(client))
    return app


def _notice(request: Request) -> str:
    for flag, text in (("created", "Employee was created."), ("updated", "Employee was updated.")):
        if request.query_params.get(flag):
            return text
    return ""


def _api(client: EmployeesClient) -> APIRouter:
    api = APIRouter(prefix="/api/employees")

    def invalid(exc: herald.Invalid) -> Response:
        return JSONResponse({"detail": exc.message, "errors": exc.fields}, status_code=422)

    async def body(request: Request) -> Any:
        try:
            return await request.json()
        except ValueError:
            return None

    @api.get("")
    async def index(
        first_name: str | None = None,
        last_name: str | None = None,
        email: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> EmployeeList:
        return await client.search(
            first_name=first_name, last_name=last_name, email=email, limit=limit, offset=offset
        )

    @api.get("/{guid}")
    async def show(guid: str) -> EmployeeRecord:
        return await client.get(guid)

    @api.post("", status_code=201, response_model=EmployeeRecord)
    async def create(request: Request) -> Response | BaseModel:
        data = await body(request)
        if not isinstance(data, dict):
            return invalid(herald.Invalid("body must be a JSON object", fields={}))
        try:
            return await client.create(_form_fields(data, partial=False))
        except herald.Invalid as exc:
            return invalid(exc)

    @api.api_route("/{guid}", methods=["PUT", "PATCH"], response_model=EmployeeRecord)
    async def update(guid: str, request: Request) -> Response | BaseModel:
        data = await body(request)
        if not isinstance(data, dict):
            return invalid(herald.Invalid("body must be a JSON object", fields={}))
        partial = request.method == "PATCH"
        try:
            return await client.update(guid, dict(_form_fields(data, partial=partial)))
        except herald.Invalid as exc:
            return invalid(exc)

    @api.delete("/{guid}", response_model=EmployeeRecord)
    async def destroy(guid: str) -> EmployeeRecord:
        return await client.delete(guid)

    return api


async def run_web(
    broker: str,
    listener: Listener,
    timeout: float = 10.0,
) -> None:
    async with connect(broker, "hr-web") as bus:
        await bus.prepare_requests()
        client = EmployeesClient(bus, timeout)
        app = create_app(
            client,
            host=listener.host,
            port=listener.port,
            allowed_hosts=listener.allowed_hosts,
            token=listener.token,
        )
        observe(app, bus)
        await run_until_stopped(
            "hr-web",
            reporting(bus),
            server=listener.server(app),
            url=listener.url(),
        )
