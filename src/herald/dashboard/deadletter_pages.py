"""The dead-letter pages: groups per service, one message inspected, and the actions
(replay, replay a group, purge), always back to the queue each message came from.

Replaying or purging a group runs as a :class:`~herald.dashboard.jobs.Job` whose
progress the page follows over server-sent events.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from fastapi.templating import Jinja2Templates

from ..broker import ProgressCallback
from ..deadletter import DeadLetter
from ..errors import CapabilityError, HeraldError
from ..rpc import NotFound
from .deadletters import Group, group, parse_headers, pretty_body, replay_edited
from .jobs import Job, Jobs
from .views import Dashboard, dead_letter_services

__all__ = ["READ_LIMIT", "dead_letter_routes"]

READ_LIMIT = 1000
"""Dead letters read per service for grouping."""


def dead_letter_routes(dashboard: Dashboard, templates: Jinja2Templates) -> APIRouter:
    """The routes under ``/dead-letters`` and ``/jobs``."""
    router = APIRouter()
    jobs = Jobs()
    bus = dashboard.bus

    async def letters(service: str) -> list[DeadLetter]:
        try:
            return await bus.dead_letters(service, READ_LIMIT)
        except CapabilityError as exc:
            raise HTTPException(501, str(exc)) from None

    async def groups_of(service: str) -> list[Group]:
        return group(service, await letters(service))

    async def find_group(service: str, key: str) -> Group:
        for item in await groups_of(service):
            if item.key == key:
                return item
        raise HTTPException(404, f"no dead-letter group {key!r} of {service!r} (gone already?)")

    def job_response(request: Request, job: Job) -> HTMLResponse:
        return templates.TemplateResponse(request, "_job.html", {"job": job})

    @router.get("/dead-letters", response_class=HTMLResponse)
    async def dead_letters_page(request: Request) -> HTMLResponse:
        groups: list[Group] = []
        error = None
        try:
            for service in await dead_letter_services(dashboard):
                groups += await groups_of(service)
        except HTTPException as exc:
            error = exc.detail
        return templates.TemplateResponse(
            request,
            "dead_letters.html",
            {"page": "dead-letters", "url": bus.url, "groups": groups, "error": error},
        )

    @router.get("/dead-letters/{service}/{message_id}", response_class=HTMLResponse)
    async def dead_letter_page(request: Request, service: str, message_id: str) -> HTMLResponse:
        for letter in await letters(service):
            if letter.message.id == message_id:
                kind, body = pretty_body(letter.message.body)
                return templates.TemplateResponse(
                    request,
                    "dead_letter.html",
                    {
                        "page": "dead-letters",
                        "url": bus.url,
                        "service": service,
                        "letter": letter,
                        "kind": kind,
                        "body": body,
                        "headers_json": json.dumps(
                            dict(letter.message.headers), indent=2, ensure_ascii=False
                        ),
                    },
                )
        raise HTTPException(404, f"no dead letter {message_id!r} of {service!r}")

    @router.post("/dead-letters/{service}/replay", response_class=HTMLResponse)
    async def replay(
        request: Request,
        service: str,
        group_key: Annotated[str | None, Form(alias="group")] = None,
        message_id: Annotated[str | None, Form(alias="id")] = None,
        listing: Annotated[bool, Form()] = False,
    ) -> HTMLResponse:
        ids = await _chosen(service, group_key, message_id)

        async def work(progress: ProgressCallback) -> int:
            return await bus.replay_dead_letters(service, ids, progress)

        label = f"replay of {len(ids)} from {service}"
        return job_response(request, jobs.start(label, work, refresh_groups=listing))

    @router.post("/dead-letters/{service}/purge", response_class=HTMLResponse)
    async def purge(
        request: Request,
        service: str,
        group_key: Annotated[str | None, Form(alias="group")] = None,
        message_id: Annotated[str | None, Form(alias="id")] = None,
        listing: Annotated[bool, Form()] = False,
    ) -> HTMLResponse:
        ids = await _chosen(service, group_key, message_id)

        async def work(progress: ProgressCallback) -> int:
            progress(0, len(ids))
            count = await bus.purge_dead_letters(service, ids)
            progress(len(ids), len(ids))
            return count

        label = f"purge of {len(ids)} from {service}"
        return job_response(request, jobs.start(label, work, refresh_groups=listing))

    async def _chosen(service: str, group_key: str | None, message_id: str | None) -> list[str]:
        if (group_key is None) == (message_id is None):
            raise HTTPException(422, "give exactly one of the form fields 'group' and 'id'")
        if message_id is not None:
            return [message_id]
        assert group_key is not None
        return (await find_group(service, group_key)).ids

    @router.post("/dead-letters/{service}/{message_id}/edit", response_class=HTMLResponse)
    async def edit_and_replay(
        request: Request,
        service: str,
        message_id: str,
        body: Annotated[str, Form()],
        headers: Annotated[str, Form()] = "{}",
    ) -> HTMLResponse:
        try:
            chosen = parse_headers(headers)
        except ValueError as exc:
            raise HTTPException(422, f"form field 'headers': {exc}") from None
        try:
            sent = await replay_edited(bus, service, message_id, body.encode(), chosen)
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from None
        except CapabilityError as exc:
            raise HTTPException(501, str(exc)) from None
        except HeraldError as exc:  # the edited body does not decode, is too large, ...
            raise HTTPException(422, f"form field 'body': {exc}") from None
        return templates.TemplateResponse(
            request, "_replayed.html", {"service": service, "message": sent}
        )

    @router.get("/jobs/{job_id}/stream", response_class=EventSourceResponse)
    async def job_stream(request: Request, job_id: int) -> AsyncIterator[ServerSentEvent]:
        job = jobs.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        fragment = templates.get_template("_job.html")
        while not await request.is_disconnected():
            yield ServerSentEvent(raw_data=fragment.render(job=job), event="job")
            if job.finished:
                return
            await asyncio.sleep(0.2)

    return router
