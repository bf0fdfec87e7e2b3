"""The event-stream routes' short path (ssegate.server.dispatch) answers like every other route:
CORS headers, JSON errors from the app's handlers, the access log."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.types import Receive, Scope, Send

from ssegate._fast.stack import StreamEndpoint
from ssegate.server.metrics import Metrics
from ssegate.server.middleware import REQUEST_END, AccessLogMiddleware
from tests.security.harness import bearer, running, start
from tests.support.metrics import total
from tests.support.sse import read_stream

ORIGIN = "https://app.example"


async def test_a_stream_from_an_allowed_origin_carries_cors_headers() -> None:
    async with running(auth=True, cors_origins=ORIGIN) as server:
        created = await start(server, "alice")
        received = await read_stream(
            server.client, "GET", created["events_url"], headers={"Origin": ORIGIN, **bearer("alice")}
        )
        assert received.status == 200
        assert received.headers["access-control-allow-origin"] == ORIGIN
        assert "x-generation-id" in received.headers["access-control-expose-headers"].lower()
        assert received.types[-1] == "done"


@pytest.mark.parametrize(
    ("path", "who", "status", "code"),
    [
        ("/v1/generations/zzz/events", "alice", 404, "not_found"),
        ("/v1/generations/000000000000000000000000000000/events", "alice", 410, "expired"),
        ("/v1/topics/news/events", None, 401, "unauthorized"),
        ("/v1/topics/events", "alice", 400, "invalid_request"),
        ("/v1/topics/a//b/events", "alice", 400, "invalid_request"),
    ],
)
async def test_stream_route_errors_are_json_a_browser_page_can_read(
    path: str, who: str | None, status: int, code: str
) -> None:
    async with running(auth=True, cors_origins=ORIGIN) as server:
        headers = {"Origin": ORIGIN, **(bearer(who) if who else {})}
        response = await server.client.get(path, headers=headers)
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("application/json")
        assert response.json()["error"]["code"] == code
        assert response.headers["access-control-allow-origin"] == ORIGIN


async def test_other_methods_on_a_stream_route_still_take_the_full_path() -> None:
    async with running(auth=True) as server:
        response = await server.client.put("/v1/topics/news/events", headers=bearer("alice"))
        assert response.status_code == 405
        assert response.json()["error"]["code"] == "method_not_allowed"


class _AccessLines(logging.Handler):
    """The access log's lines as they are written; :meth:`next` waits for the next one."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.put_nowait(json.loads(record.getMessage()))

    async def next(self, method: str, path: str) -> dict[str, Any]:
        while True:
            line = await asyncio.wait_for(self.lines.get(), timeout=10)
            if (line["method"], line["path"]) == (method, path):
                return line


@contextlib.asynccontextmanager
async def access_lines() -> AsyncIterator[_AccessLines]:
    logger = logging.getLogger("ssegate.access")
    handler = _AccessLines()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def test_a_held_stream_is_logged_when_it_closes_with_the_bytes_the_fan_out_wrote() -> None:
    path = "/v1/topics/news/events"
    async with running() as server, access_lines() as log:
        received = b""
        async with server.client.stream("GET", path) as response:
            published = False
            async for chunk in response.aiter_raw():
                received += chunk
                if not published:  # the stream is open: what comes next is live
                    await server.client.post(path, json={"data": "hello"})
                    published = True
                if b"hello" in received:
                    break
        line = await log.next("GET", path)
    assert line["status"] == 200
    # The event went out through the fan-out, beside the response: counted all the same.
    assert line["bytes"] >= len(received)


async def test_a_stream_route_that_answers_an_error_is_logged_and_counted_with_its_status() -> None:
    path = "/v1/generations/zzz/events"
    async with running() as server, access_lines() as log:
        assert (await server.client.get(path)).status_code == 404
        line = await log.next("GET", path)
        metrics = (await server.client.get("/metrics")).text
    assert line["status"] == 404
    # Labelled by the route's template, not the path (one series per route, not per id).
    labels = {"route": "/v1/generations/{generation_id}/events", "method": "GET", "code": "404"}
    assert total(metrics, "ssegate_http_responses_total", **labels) == 1


async def test_a_response_that_fails_before_it_starts_counts_as_a_500() -> None:
    class Failing:
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            raise RuntimeError("broken before the head")

    async def endpoint(request: Any) -> Failing:
        return Failing()

    async def receive() -> dict[str, Any]:
        raise AssertionError("not read")

    async def send(message: Any) -> None:
        raise AssertionError("nothing is sent")

    metrics = Metrics()
    layers = AccessLogMiddleware(StreamEndpoint({}), metrics, log=False)
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/s",
        "headers": [],
        "endpoint": endpoint,
        REQUEST_END: None,
    }
    with pytest.raises(RuntimeError, match="broken before the head"):
        await layers(scope, receive, send)
    assert total(metrics.render().decode(), "ssegate_http_responses_total", code="500") == 1
