"""``herald.webguard``: each request another site could make a browser send is refused,
with a message naming what was wrong; the site's own requests pass."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from herald.webguard import WebGuard, local_hosts

SITE = "http://127.0.0.1:8000"
TOKEN = "s3cret-token"


async def echo(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"{request.method} ok")


async def api(request: Request) -> JSONResponse:
    if request.method == "DELETE":
        return JSONResponse({"deleted": True})
    return JSONResponse({"got": await request.json()})


async def socket(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.close()


def guarded(**options: Any) -> WebGuard:
    app = Starlette(
        routes=[
            Route("/", echo, methods=["GET", "POST", "DELETE"]),
            Route("/healthz", echo),
            Route("/api/things", api, methods=["POST", "DELETE"]),
            WebSocketRoute("/live", socket),
        ]
    )
    options.setdefault("allowed_hosts", local_hosts("127.0.0.1", 8000))
    return WebGuard(app, json_paths=["/api/"], **options)


def client(app: WebGuard, origin: str | None = SITE) -> httpx.AsyncClient:
    headers = {"Origin": origin} if origin else {}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=SITE, headers=headers)


async def test_a_foreign_host_header_is_refused() -> None:
    async with client(guarded(), origin=None) as http:
        rebound = await http.get("/", headers={"Host": "evil.example:8000"})
        assert (rebound.status_code, rebound.text) == (400, "Invalid host header")
        for host in ("localhost:8000", "[::1]:8000", "127.0.0.1:8000"):
            assert (await http.get("/", headers={"Host": host})).text == "GET ok", host


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        ({}, "POST refused: it has no Origin or Referer header"),
        ({"Origin": "http://evil.example"}, "its Origin 'http://evil.example' is not this site"),
        ({"Origin": "http://127.0.0.1:3000"}, "its Origin 'http://127.0.0.1:3000'"),
        ({"Origin": "null"}, "its Origin 'null' is not this site"),
        ({"Referer": "http://evil.example/page"}, "its Referer 'http://evil.example/page'"),
    ],
)
async def test_a_cross_site_post_is_refused(headers: dict[str, str], problem: str) -> None:
    async with client(guarded(), origin=None) as http:
        response = await http.post("/", data={"a": "1"}, headers=headers)
    assert response.status_code == 403
    assert problem in response.text


async def test_the_sites_own_requests_pass() -> None:
    async with client(guarded(), origin=None) as http:
        assert (await http.get("/", headers={"Origin": "http://evil.example"})).text == "GET ok"
        for headers in (
            {"Origin": SITE},
            {"Origin": "http://localhost:8000"},
            {"Referer": f"{SITE}/form?x=1"},
        ):
            response = await http.post("/", data={"a": "1"}, headers=headers)
            assert response.text == "POST ok", headers


async def test_a_json_endpoint_takes_only_json() -> None:
    async with client(guarded()) as http:
        plain = await http.post(
            "/api/things", content=b'{"a": 1}', headers={"Content-Type": "text/plain"}
        )
        assert plain.status_code == 415
        assert plain.json() == {"detail": "Content-Type must be application/json, not 'text/plain'"}
        untyped = await http.post("/api/things", content=b'{"a": 1}')
        assert untyped.status_code == 415 and "has no Content-Type" in untyped.text
        ok = await http.post("/api/things", json={"a": 1})
        assert ok.json() == {"got": {"a": 1}}
        patch_type = {"Content-Type": "application/merge-patch+json; charset=utf-8"}
        merge = await http.post("/api/things", content=b"[2]", headers=patch_type)
        assert merge.json() == {"got": [2]}
        assert (await http.delete("/api/things")).json() == {"deleted": True}  # no body
        assert (await http.post("/", data={"a": "1"})).text == "POST ok"  # forms elsewhere


async def test_with_a_token_every_request_needs_it() -> None:
    async with client(guarded(token=TOKEN)) as http:
        refused = await http.get("/")
        assert refused.status_code == 401 and "needs its token" in refused.text
        wrong = await http.get("/", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "wrong token" in wrong.text
        assert (await http.get("/?token=nope")).status_code == 401
        assert (await http.get("/healthz")).text == "GET ok"

        bearer = {"Authorization": f"Bearer {TOKEN}"}
        del http.headers["Origin"]
        assert (await http.post("/", headers=bearer)).text == "POST ok"  # no Origin needed

        visit = await http.get(f"/?x=1&token={TOKEN}")
        assert visit.status_code == 303 and visit.headers["location"] == "/?x=1"
        cookie = visit.headers["set-cookie"]
        assert cookie.startswith("herald_token_8000=") and TOKEN not in cookie
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
        assert (await http.get("/")).text == "GET ok"  # the cookie now does
        assert (await http.post("/")).status_code == 403  # a cookie is not an Origin
        assert (await http.post("/", headers={"Origin": SITE})).text == "POST ok"


async def test_a_cross_site_websocket_is_closed() -> None:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    def handshake(origin: str) -> dict[str, Any]:
        headers = [(b"host", b"127.0.0.1:8000"), (b"origin", origin.encode())]
        return {"type": "websocket", "path": "/live", "headers": headers, "scheme": "ws"}

    app = guarded()
    await app(handshake("http://evil.example"), receive, send)
    assert sent[0]["type"] == "websocket.close" and sent[0]["code"] == 1008
    assert "'http://evil.example' is not this site" in sent[0]["reason"]
    sent.clear()
    await app(handshake(SITE), receive, send)
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.close"]


def test_configuration_errors_are_named() -> None:
    with pytest.raises(ValueError, match="at least one allowed host"):
        guarded(allowed_hosts=[])
    with pytest.raises(ValueError, match="'a/b' is not a host"):
        guarded(allowed_hosts=["a/b"])
    with pytest.raises(ValueError, match="token is empty"):
        guarded(token=" ")
