"""The generation's state counts an open event stream as a viewer, and stops once it closed: with
the fast paths on and off, on the memory log and on Redis, for a GET of the stream and for a POST
that streams its own generation. An open viewer keeps the generation from being abandoned."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from ssegate.codec.events import Comment, Event
from ssegate.config import Settings
from ssegate.server.app import create_app
from ssegate.server.middleware import access_logger
from tests.server.test_generations_api import wait_for_state
from tests.support.servers import serve_asgi
from tests.support.sse import iter_stream

_WAIT = 10.0
LONG = {"messages": [{"role": "user", "content": "/long"}]}  # ~500 tokens: open for seconds


@pytest.fixture(params=["memory", "redis"])
def log_url(request: pytest.FixtureRequest) -> str | None:
    return None if request.param == "memory" else str(request.getfixturevalue("redis_server"))


class _Ended(logging.Handler):
    """The access log's line for a request, which is written once the request has ended (its
    stream's ``finally`` blocks, the viewer's leave among them, have run)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.paths: dict[str, asyncio.Event] = {}

    def emit(self, record: logging.LogRecord) -> None:
        path = json.loads(record.getMessage())["path"]
        self.paths.setdefault(path, asyncio.Event()).set()

    async def wait(self, path: str) -> None:
        await asyncio.wait_for(self.paths.setdefault(path, asyncio.Event()).wait(), _WAIT)


@asynccontextmanager
async def server(log_url: str | None, **settings: Any) -> AsyncIterator[tuple[httpx.AsyncClient, _Ended]]:
    ended = _Ended()
    level = access_logger.level
    access_logger.addHandler(ended)
    access_logger.setLevel(logging.INFO)
    app = create_app(
        Settings(**{"demo_ttft": 0.01, "demo_tokens_per_second": 20.0, "redis_url": log_url, **settings})
    )
    try:
        async with (
            serve_asgi(app) as url,
            httpx.AsyncClient(base_url=url, timeout=_WAIT) as client,
        ):
            yield client, ended
    finally:
        access_logger.removeHandler(ended)
        access_logger.setLevel(level)


async def viewers(client: httpx.AsyncClient, generation_id: str) -> tuple[str, int]:
    described = (await client.get(f"/v1/generations/{generation_id}")).json()
    return described["state"], described["viewers"]


async def events(stream: AsyncIterator[Event | Comment], count: int) -> list[Event]:
    """The stream's next ``count`` events."""
    got: list[Event] = []
    while len(got) < count:
        item = await anext(stream)
        if isinstance(item, Event):
            got.append(item)
    return got


@asynccontextmanager
async def open_stream(
    client: httpx.AsyncClient, how: str
) -> AsyncIterator[tuple[str, str, AsyncIterator[Event | Comment]]]:
    """``(generation id, the path the stream was opened on, its response)``: a GET of the events of
    a generation started before, or a POST that starts and streams one."""
    if how == "get":
        created = (await client.post("/v1/generations", json=LONG)).json()
        request = client.build_request("GET", created["events_url"])
    else:
        request = client.build_request(
            "POST", "/v1/generations", json=LONG, headers={"accept": "text/event-stream"}
        )
    response = await client.send(request, stream=True)
    stream = iter_stream(response)
    try:
        assert response.status_code == 200
        yield response.headers["x-generation-id"], request.url.path, stream
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
        await response.aclose()


@pytest.mark.parametrize("how", ["get", "post"])
async def test_an_open_stream_counts_as_a_viewer_until_it_closes(
    paths: str, log_url: str | None, how: str
) -> None:
    async with server(log_url, abandon_grace=30.0) as (client, ended):
        async with open_stream(client, how) as (generation_id, path, stream):
            first = await asyncio.wait_for(events(stream, 1), _WAIT)
            assert first[0].event == "start"
            assert await viewers(client, generation_id) == ("streaming", 1)
            # Still counted once it rides the live fan-out (events written after it joined).
            assert len(await asyncio.wait_for(events(stream, 3), _WAIT)) == 3
            assert await viewers(client, generation_id) == ("streaming", 1)
        await ended.wait(path)
        assert await viewers(client, generation_id) == ("streaming", 0)
        await client.post(f"/v1/generations/{generation_id}/cancel")


async def test_a_generation_with_an_open_viewer_is_not_abandoned(paths: str, log_url: str | None) -> None:
    grace = 0.2
    async with server(log_url, abandon_grace=grace, first_viewer_grace=grace) as (client, ended):
        async with open_stream(client, "get") as (generation_id, path, stream):
            # Watched for over five graces (20 tokens a second paces it), each event read as it comes.
            texts = [e for e in await asyncio.wait_for(events(stream, 24), _WAIT) if e.event == "text"]
            assert len(texts) >= 20
            assert await viewers(client, generation_id) == ("streaming", 1)
        await ended.wait(path)
        # Nobody watches now: abandoned after the grace (the ticker's doing, no event says when).
        described = await wait_for_state(client, generation_id, {"done", "error", "cancelled"})
        assert (described["state"], described["viewers"]) == ("cancelled", 0)
