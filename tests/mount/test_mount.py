"""ssegate mounted in real FastAPI and Starlette apps, served by uvicorn on real sockets.

Every URL ssegate hands out must lead back under its prefix: a client that only follows them (the
``Location`` of a POST, ``events_url``, ``cancel_url``) resumes and cancels without knowing where
ssegate was mounted.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from ssegate.auth import Principal
from ssegate.config import Settings
from ssegate.mount import gateway_of, lifespan, mount
from ssegate.server.app import create_app
from tests.support.servers import serve_asgi
from tests.support.sse import read_stream

FAST = Settings(demo_ttft=0.01, demo_tokens_per_second=2000.0)
PROMPT = {"messages": [{"role": "user", "content": "Say hello"}]}
LONG = {"messages": [{"role": "user", "content": "Write a lot /long"}]}


@contextlib.asynccontextmanager
async def served(app: Any, **config: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with serve_asgi(app, **config) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        yield client


def host_app() -> tuple[FastAPI, list[str]]:
    """A FastAPI app with a route and a lifespan of its own; ``events`` records what ran."""
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def own_lifespan(app: FastAPI) -> AsyncIterator[None]:
        events.append("host started")
        yield
        events.append("host stopped")

    app = FastAPI(lifespan=own_lifespan)

    @app.get("/api/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    return app, events


async def test_fastapi_mount_under_sse_returns_prefixed_urls_and_resumes_through_location() -> None:
    app, events = host_app()
    sse = mount(app, "/sse", FAST)
    async with served(app) as client:
        assert events == ["host started"]
        assert gateway_of(sse) is not None  # the host's lifespan started ssegate
        assert (await client.get("/api/hello")).json() == {"hello": "world"}

        created = await client.post("/sse/v1/generations", json=PROMPT)
        assert created.status_code == 201, created.text
        body = created.json()
        generation = body["id"]
        assert created.headers["location"] == f"/sse/v1/generations/{generation}"
        assert body["url"] == f"/sse/v1/generations/{generation}"
        assert body["events_url"] == f"/sse/v1/generations/{generation}/events"
        assert body["cancel_url"] == f"/sse/v1/generations/{generation}/cancel"

        # Follow the Location as a client would: the state, then the events from the start.
        described = (await client.get(created.headers["location"])).json()
        assert described["events_url"] == body["events_url"]
        whole = await read_stream(client, "GET", described["events_url"])
        assert whole.status == 200
        assert whole.types[0] == "start"
        assert whole.types[-1] == "done"
        assert whole.headers["location"] == body["events_url"]
        # Resume after the third event: exactly the rest, no gap and no repeat.
        cut = whole.events[2].id
        assert cut is not None
        rest = await read_stream(client, "GET", body["events_url"], headers={"last-event-id": cut})
        assert [e.id for e in rest.events] == [e.id for e in whole.events[3:]]
    assert events == ["host started", "host stopped"]


async def test_streaming_post_under_the_prefix_points_its_location_at_the_prefix() -> None:
    app, _ = host_app()
    mount(app, "/sse", FAST)
    async with served(app) as client:
        got = await read_stream(
            client, "POST", "/sse/v1/generations", json_body=PROMPT, headers={"accept": "text/event-stream"}
        )
        assert got.status == 200
        generation = got.headers["x-generation-id"]
        assert got.headers["location"] == f"/sse/v1/generations/{generation}/events"
        assert got.types[-1] == "done"
        again = await read_stream(client, "GET", got.headers["location"])
        assert again.text == got.text
        assert again.text


async def test_two_prefixes_at_once_are_two_separate_gateways() -> None:
    app, _ = host_app()
    mount(app, "/a", FAST, name="a")
    mount(app, "/b", FAST, name="b")
    async with served(app) as client:
        first = (await client.post("/a/v1/generations", json=PROMPT)).json()
        second = (await client.post("/b/v1/generations", json=PROMPT)).json()
        assert first["events_url"].startswith("/a/v1/generations/")
        assert second["events_url"].startswith("/b/v1/generations/")
        one = await read_stream(client, "GET", first["events_url"])
        two = await read_stream(client, "GET", second["events_url"])
        assert one.types[-1] == two.types[-1] == "done"
        # Each mount has its own log: the other prefix does not know the generation.
        assert (await client.get(f"/b/v1/generations/{first['id']}")).status_code == 404
        assert (await client.get(f"/a/v1/generations/{second['id']}")).status_code == 404


async def test_cancel_url_cancels_under_the_prefix() -> None:
    app, _ = host_app()
    mount(app, "/sse", Settings(demo_ttft=0.01, demo_tokens_per_second=20.0))
    async with served(app) as client:
        body = (await client.post("/sse/v1/generations", json=LONG)).json()
        cancelled = await client.post(body["cancel_url"])
        assert cancelled.status_code == 202
        got = await read_stream(client, "GET", body["events_url"])
        assert got.types[-1] == "done"
        assert got.data("done")[-1]["finish_reason"] == "cancelled"


async def test_lifespan_combinator_and_host_root_path() -> None:
    """Mounted by hand in a plain Starlette app, served with uvicorn's root_path (a proxy's prefix)."""
    sse = create_app(FAST)
    started: list[str] = []

    @contextlib.asynccontextmanager
    async def own(app: Starlette) -> AsyncIterator[None]:
        # ssegate started first: the host's start-up may already use it.
        started.append(f"gateway ready: {gateway_of(sse) is not None}")
        yield

    async def ping(request: Request) -> JSONResponse:
        return JSONResponse({"root": request.scope.get("root_path")})

    app = Starlette(routes=[Route("/ping", ping)], lifespan=lifespan(sse, then=own))
    app.mount("/live", sse)
    async with served(app, root_path="/proxy") as client:
        assert started == ["gateway ready: True"]
        created = await client.post("/live/v1/generations", json=PROMPT)
        assert created.status_code == 201, created.text
        generation = created.json()["id"]
        assert created.headers["location"] == f"/proxy/live/v1/generations/{generation}"
        # The proxy would strip /proxy again: the client asks for what the proxy forwards.
        got = await read_stream(client, "GET", created.json()["events_url"].removeprefix("/proxy"))
        assert got.types[-1] == "done"


async def test_unstarted_mount_says_so() -> None:
    sse = create_app(FAST)
    with pytest.raises(RuntimeError, match="has not started"):
        gateway_of(sse)


def who_is(request: Request) -> Principal | str | None:
    """The host's auth: a session header names the user; an admin header an admin."""
    user = request.headers.get("x-user")
    if user == "root":
        return Principal("root", frozenset({"admin"}))
    return user or None


async def test_principal_hook_decides_who_may_start_and_watch() -> None:
    app, _ = host_app()
    mount(app, "/sse", FAST, principal=who_is)
    alice, bob, root = ({"x-user": name} for name in ("alice", "bob", "root"))
    async with served(app) as client:
        # Nobody: 401, even though ssegate itself has no API keys configured.
        anonymous = await client.post("/sse/v1/generations", json=PROMPT)
        assert anonymous.status_code == 401
        assert anonymous.json()["error"]["code"] == "unauthorized"

        body = (await client.post("/sse/v1/generations", json=PROMPT, headers=alice)).json()
        mine = await read_stream(client, "GET", body["events_url"], headers=alice)
        assert mine.types[-1] == "done"
        # Another user: as if it did not exist; an admin: allowed.
        theirs = await client.get(body["url"], headers=bob)
        assert theirs.status_code == 404
        assert (await read_stream(client, "GET", body["events_url"], headers=bob)).status == 404
        assert (await client.get(body["url"], headers=root)).status_code == 200
        assert (await client.get(body["url"])).status_code == 401


async def test_principal_hook_async_and_refusing() -> None:
    async def strict(request: Request) -> str:
        if request.headers.get("x-session") != "valid":
            from fastapi import HTTPException

            raise HTTPException(status_code=403, detail="no session")
        return "carol"

    app, _ = host_app()
    mount(app, "/sse", FAST, principal=strict)
    async with served(app) as client:
        refused = await client.post("/sse/v1/generations", json=PROMPT)
        assert refused.status_code == 403
        assert refused.json()["error"] == {"code": "forbidden", "message": "no session"}
        ok = await client.post("/sse/v1/generations", json=PROMPT, headers={"x-session": "valid"})
        assert ok.status_code == 201
        described = await client.get(ok.json()["url"], headers={"x-session": "valid"})
        assert described.status_code == 200


async def test_chat_page_under_prefix_names_its_files_under_it() -> None:
    app, _ = host_app()
    mount(app, "/sse", FAST)
    async with served(app) as client:
        page = await client.get("/sse/")
        assert page.status_code == 200
        assert 'src="/sse/static/app.js"' in page.text
        assert 'href="/sse/static/app.css"' in page.text
        assert '<meta name="ssegate-base" content="/sse" />' in page.text
        assert 'src="/static/' not in page.text
        script = await client.get("/sse/static/app.js")
        assert script.status_code == 200
        assert "ssegate-base" in script.text


def test_mount_path_is_checked() -> None:
    app = FastAPI()
    with pytest.raises(ValueError, match="must start with '/'"):
        mount(app, "sse", FAST)
    with pytest.raises(ValueError, match="not end with one"):
        mount(app, "/sse/", FAST)
