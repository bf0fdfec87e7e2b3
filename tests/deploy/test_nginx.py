"""ssegate behind real nginx configured by the shipped deploy/nginx.conf: streams pass unbuffered."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from ssegate.codec.events import Comment, Event
from ssegate.config import Settings
from ssegate.server.app import create_app
from tests.deploy.nginx import SHIPPED_CONFIG, nginx_in_front_of, render_site
from tests.support.servers import free_port, serve_asgi
from tests.support.sse import iter_stream, read_stream

LONG_PROMPT = {"messages": [{"role": "user", "content": "/long"}]}
# The bound: nginx may add at most this much to the first token's arrival.
MAX_PROXY_DELAY = 0.05
_WAIT = 10.0


@asynccontextmanager
async def ssegate_behind_nginx(**settings: Any) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """A real ssegate server and nginx in front of it: ``(direct client, client through nginx)``."""
    app = create_app(Settings(**{"demo_ttft": 0.01, "demo_tokens_per_second": 400.0, **settings}))
    async with (
        serve_asgi(app) as direct_url,
        nginx_in_front_of([direct_url]) as proxy_url,
        httpx.AsyncClient(base_url=direct_url, timeout=_WAIT) as direct,
        httpx.AsyncClient(base_url=proxy_url, timeout=_WAIT) as proxied,
    ):
        yield direct, proxied


async def start(client: httpx.AsyncClient, body: dict[str, Any] = LONG_PROMPT) -> dict[str, Any]:
    response = await client.post("/v1/generations", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def first_text_arrival(client: httpx.AsyncClient, url: str, opened: asyncio.Event) -> float:
    """When (monotonic) the first ``text`` event arrives; sets ``opened`` once the stream is open."""
    async with client.stream("GET", url) as response:
        assert response.status_code == 200
        async for item in iter_stream(response):
            opened.set()
            if isinstance(item, Event) and item.event == "text":
                return time.monotonic()
    raise AssertionError("the stream ended without a text event")


@pytest.mark.nginx
async def test_nginx_first_token_arrives_as_fast_as_direct() -> None:
    # A long wait for the first token, then a slow trickle: a buffering proxy would hold the
    # first small event back until its buffer filled or the stream ended, seconds later. The POST
    # answers at once (start_answer_wait 0), so both streams are open and waiting when the token
    # comes: by default it would answer after the first token, which both streams then replay.
    slow_start = {"demo_ttft": 1.0, "demo_tokens_per_second": 5.0, "start_answer_wait": 0.0}
    async with ssegate_behind_nginx(**slow_start, abandon_grace=30.0) as (direct, proxied):
        created = await start(direct)
        opened_direct, opened_proxied = asyncio.Event(), asyncio.Event()
        viewers = [
            asyncio.create_task(first_text_arrival(direct, created["events_url"], opened_direct)),
            asyncio.create_task(first_text_arrival(proxied, created["events_url"], opened_proxied)),
        ]
        # Both streams are open (the opening comment came through nginx at once) before the token.
        await asyncio.wait_for(asyncio.gather(opened_direct.wait(), opened_proxied.wait()), _WAIT)
        described = (await direct.get(created["url"])).json()
        assert described["viewers"] >= 1
        direct_at, proxied_at = await asyncio.wait_for(asyncio.gather(*viewers), _WAIT)
        await direct.post(created["cancel_url"])

    assert abs(proxied_at - direct_at) < MAX_PROXY_DELAY


@pytest.mark.nginx
async def test_nginx_passes_keepalive_comments_while_the_model_is_silent() -> None:
    async with ssegate_behind_nginx(demo_ttft=30.0, keepalive_interval=0.05, abandon_grace=30.0) as (
        direct,
        proxied,
    ):
        created = await start(direct)
        comments: list[str] = []
        events: list[str] = []
        async with proxied.stream("GET", created["events_url"]) as response:
            assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert "content-encoding" not in response.headers
            async for item in iter_stream(response):
                if isinstance(item, Comment):
                    comments.append(item.text)
                else:
                    events.append(item.event)
                if comments.count("keep-alive") >= 2:
                    break
        await direct.post(created["cancel_url"])

    # Keep-alives are comments: through the proxy the only event so far is still `start`.
    assert events == ["start"]


@pytest.mark.nginx
async def test_nginx_resume_with_last_event_id_continues_exactly() -> None:
    async with ssegate_behind_nginx(demo_tokens_per_second=200.0) as (direct, proxied):
        created = await start(proxied, {"messages": [{"role": "user", "content": "resume me"}]})
        part = await read_stream(proxied, "GET", created["events_url"], max_events=5)
        rest = await read_stream(
            proxied, "GET", created["events_url"], headers={"Last-Event-ID": part.events[-1].id or ""}
        )
        whole = await read_stream(direct, "GET", created["events_url"])

    assert rest.status == 200
    assert [e.id for e in part.events + rest.events] == [e.id for e in whole.events]
    assert part.text + rest.text == whole.text
    assert whole.types[-1] == "done"


@pytest.mark.nginx
async def test_nginx_streams_post_with_accept_event_stream() -> None:
    async with ssegate_behind_nginx() as (_, proxied):
        received = await read_stream(
            proxied,
            "POST",
            "/v1/generations",
            headers={"Accept": "text/event-stream"},
            json_body={"messages": [{"role": "user", "content": "hello"}]},
        )

    assert received.status == 200
    assert received.types[0] == "start"
    assert received.types[-1] == "done"
    assert received.text


@pytest.mark.nginx
async def test_nginx_refuses_a_body_over_the_server_limit_with_json_413() -> None:
    async with ssegate_behind_nginx() as (_, proxied):
        response = await proxied.post(
            "/v1/generations",
            content=b" " * (Settings().max_body_bytes + 1),
            headers={"content-type": "application/json"},
        )

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"


@pytest.mark.nginx
async def test_nginx_without_a_reachable_process_answers_json_503() -> None:
    async with (
        nginx_in_front_of([f"127.0.0.1:{free_port()}"]) as proxy_url,
        httpx.AsyncClient(base_url=proxy_url, timeout=_WAIT) as client,
    ):
        response = await client.get("/v1/generations/x/events")

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "unavailable"


def test_nginx_config_body_limit_matches_the_server_limit() -> None:
    match = re.search(r"^\s*client_max_body_size (\d+)m;$", SHIPPED_CONFIG.read_text(), re.MULTILINE)
    assert match is not None
    assert int(match[1]) << 20 == Settings().max_body_bytes


def test_nginx_config_read_timeout_outlasts_the_keepalive_interval() -> None:
    match = re.search(r"^\s*proxy_read_timeout (\d+)h;$", SHIPPED_CONFIG.read_text(), re.MULTILINE)
    assert match is not None
    assert int(match[1]) * 3600 > Settings().keepalive_interval


def test_nginx_render_site_rewrites_only_listen_and_upstream_servers() -> None:
    shipped = SHIPPED_CONFIG.read_text()
    rendered = render_site(shipped, 12345, ["127.0.0.1:1", "127.0.0.1:2"])

    assert "listen 127.0.0.1:12345;" in rendered
    assert re.findall(r"server (127\.0\.0\.1:\d+);", rendered) == ["127.0.0.1:1", "127.0.0.1:2"]
    removed = {"listen 80;", "server 127.0.0.1:8001;", "server 127.0.0.1:8002;"}
    kept = [line for line in shipped.splitlines() if line.strip() not in removed]
    assert [line for line in rendered.splitlines() if "12345" not in line and "127.0.0.1:" not in line] == [
        line for line in kept if "127.0.0.1:" not in line
    ]


def test_nginx_error_bodies_are_json() -> None:
    bodies = re.findall(r"return \d+ '(.*)\\n';", SHIPPED_CONFIG.read_text())
    assert len(bodies) == 2
    for body in bodies:
        assert set(json.loads(body)["error"]) == {"code", "message"}


def gzip_types() -> set[str]:
    match = re.search(r"^\s*gzip_types ([^;]+);$", SHIPPED_CONFIG.read_text(), re.MULTILINE)
    assert match is not None
    return set(match[1].split()) | {"text/html"}  # nginx always compresses text/html


@pytest.mark.nginx
async def test_nginx_compresses_the_page_and_its_scripts_but_never_the_event_stream() -> None:
    static = ["/", "/static/app.js", "/static/ssegate.js", "/static/app.css", "/static/vendor/marked.esm.js"]
    async with ssegate_behind_nginx() as (direct, proxied):
        for path in static:
            plain = await direct.get(path, headers={"Accept-Encoding": "identity"})
            compressed = await proxied.get(path, headers={"Accept-Encoding": "gzip"})
            assert compressed.status_code == 200, path
            assert compressed.headers.get("content-encoding") == "gzip", (path, compressed.headers)
            assert "accept-encoding" in compressed.headers.get("vary", "").lower()
            assert int(compressed.headers.get("content-length", "0") or 0) == 0  # chunked: not the raw size
            assert compressed.content == plain.content  # httpx undid the gzip: the same bytes arrived

        created = await start(direct)
        async with proxied.stream(
            "GET", created["events_url"], headers={"Accept-Encoding": "gzip, br"}
        ) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            assert "content-encoding" not in response.headers
            async for item in iter_stream(response):
                if isinstance(item, Event) and item.event == "text":
                    break  # a token arrived, uncompressed, while the answer still streams
        posted = await read_stream(
            proxied,
            "POST",
            "/v1/generations",
            headers={"Accept": "text/event-stream", "Accept-Encoding": "gzip"},
            json_body={"messages": [{"role": "user", "content": "hello"}]},
        )
        assert posted.types[-1] == "done"
        await direct.post(created["cancel_url"])


STATIC_DIR = Path(__file__).resolve().parents[2] / "src" / "ssegate" / "static"


def page_files() -> list[str]:
    """The static files the page loads that are big enough for gzip_min_length (1 KiB)."""
    return [
        path.relative_to(STATIC_DIR).as_posix()
        for path in STATIC_DIR.rglob("*")
        # Not the notes and licences beside the vendored code: the page never loads them.
        if path.is_file() and path.stat().st_size >= 1024 and path.suffix in {".js", ".mjs", ".css", ".html"}
    ]


async def test_nginx_gzip_types_cover_every_static_file_the_server_sends() -> None:
    # Whatever content type ssegate gives a file big enough for gzip_min_length, nginx compresses it.
    types = set()
    async with serve_asgi(create_app(Settings())) as url, httpx.AsyncClient(base_url=url) as client:
        for file in page_files():
            response = await client.get(f"/static/{file}")
            assert response.status_code == 200, file
            types.add(response.headers["content-type"].split(";")[0])
    assert "text/javascript" in types
    assert types <= gzip_types()
