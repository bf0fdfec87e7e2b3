"""The live fan-out over a real server: caught-up viewers share one writer per stream, and every
viewer still gets every event exactly once, in order, whatever it does (reads slowly, leaves)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from ssegate import _fast
from ssegate.codec.events import Event
from ssegate.codec.parser import EventStreamParser
from tests.multiprocess.processes import SsegateProcess
from tests.server.conftest import ServerFactory
from tests.support.metrics import total
from tests.support.servers import free_port
from tests.topics.helpers import subscribe

VIEWERS = 20


async def gauge(client: httpx.AsyncClient, name: str) -> int:
    return int(total((await client.get("/metrics")).text, name))


async def live_viewers(client: httpx.AsyncClient) -> int:
    return await gauge(client, "ssegate_live_viewers")


async def wait_for_gauge(client: httpx.AsyncClient, name: str, value: int) -> None:
    for _ in range(400):
        if await gauge(client, name) == value:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{name} never reached {value}: {await gauge(client, name)}")


async def wait_for_live_viewers(client: httpx.AsyncClient, count: int) -> None:
    await wait_for_gauge(client, "ssegate_live_viewers", count)


async def publish(client: httpx.AsyncClient, topic: str, data: object) -> str:
    response = await client.post(f"/v1/topics/{topic}/events", json={"data": data})
    assert response.status_code == 201, response.text
    published: str = response.json()["id"]
    return published


@pytest.mark.fast_paths(_fast.LIVE_SOCKET)
async def test_caught_up_viewers_share_the_fan_out_and_all_get_every_event_in_order(
    ssegate_server: ServerFactory,
) -> None:
    async with ssegate_server() as client, contextlib.AsyncExitStack() as stack:
        streams = [
            await stack.enter_async_context(subscribe(client, "/v1/topics/news/events"))
            for _ in range(VIEWERS)
        ]
        await wait_for_live_viewers(client, VIEWERS)  # idle subscribers sit in the fan-out
        ids = [await publish(client, "news", {"n": n}) for n in range(50)]
        for stream in streams:
            events = await stream.events(50)
            assert [e.id for e in events] == ids
            assert [json.loads(e.data)["n"] for e in events] == list(range(50))
    async with ssegate_server() as client:
        assert await live_viewers(client) == 0


@pytest.mark.fast_paths(_fast.LIVE_SOCKET)
async def test_viewers_leaving_the_fan_out_are_counted_out(ssegate_server: ServerFactory) -> None:
    async with ssegate_server() as client:
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(3):
                await stack.enter_async_context(subscribe(client, "/v1/topics/news/events"))
            await wait_for_live_viewers(client, 3)
        await wait_for_live_viewers(client, 0)
        # The stream still works for the next viewer after its group went away.
        async with subscribe(client, "/v1/topics/news/events") as stream:
            await wait_for_live_viewers(client, 1)
            published = await publish(client, "news", "again")
            assert [e.id for e in await stream.events(1)] == [published]


@contextlib.asynccontextmanager
async def raw_subscriber(base_url: str, path: str) -> AsyncIterator[socket.socket]:
    """A subscriber that does not read: a tiny receive buffer, so the server's writes back up."""
    host, port = base_url.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode())
    try:
        yield sock
    finally:
        sock.close()


def read_events(sock: socket.socket, count: int) -> list[Event]:
    """Read the raw HTTP response until ``count`` events arrived (chunk framing stripped)."""
    sock.settimeout(20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    parser = EventStreamParser()
    events: list[Event] = []
    pending = b""
    in_body = False
    while len(events) < count:
        data = sock.recv(1 << 20)
        assert data, f"connection closed after {len(events)} events"
        pending += data
        if not in_body:
            head, sep, pending = pending.partition(b"\r\n\r\n")
            if not sep:
                pending = head
                continue
            in_body = True
        while True:  # every complete HTTP chunk goes to the SSE parser
            size_line, sep, rest = pending.partition(b"\r\n")
            if not sep or len(rest) < int(size_line, 16) + 2:
                break
            size = int(size_line, 16)
            events += [item for item in parser.feed(rest[:size]) if isinstance(item, Event)]
            pending = rest[size + 2 :]
    return events


@pytest.mark.fast_paths(_fast.LIVE_SOCKET)
async def test_a_slow_viewer_lags_only_itself_and_still_gets_every_event_once(
    ssegate_server: ServerFactory,
) -> None:
    payload = "x" * 70_000
    count = 60  # ~4 MB: far past the socket buffers of a viewer that does not read
    async with ssegate_server() as client:
        base_url = str(client.base_url).rstrip("/")
        async with (
            raw_subscriber(base_url, "/v1/topics/big/events") as slow,
            subscribe(client, "/v1/topics/big/events") as fast,
        ):
            await wait_for_live_viewers(client, 2)
            ids = [await publish(client, "big", {"n": n, "pad": payload}) for n in range(count)]
            # The fast viewer has everything while the slow one has not read a byte.
            assert [e.id for e in await fast.events(count)] == ids
            # The slow viewer was sent back to wait for its socket on its own (the fan-out never
            # buffers without bound) while the fast one is served live; reading now, the slow one
            # gets each event once.
            await wait_for_live_viewers(client, 1)
            events = await asyncio.to_thread(read_events, slow, count)
            assert [e.id for e in events] == ids
            assert [json.loads(e.data)["n"] for e in events] == list(range(count))


async def test_the_fan_out_serves_viewers_of_ssegate_serve_on_uvloop(tmp_path: Path) -> None:
    # `ssegate serve` runs uvloop and httptools, whose transports are not asyncio's classes.
    process = SsegateProcess(free_port(), None, {}, tmp_path / "serve.log")
    try:
        assert await process.wait_ready(), process.output()
        async with (
            httpx.AsyncClient(base_url=process.url, timeout=10) as client,
            subscribe(client, "/v1/topics/news/events") as stream,
        ):
            await wait_for_live_viewers(client, 1)
            published = await publish(client, "news", "hello")
            assert [e.id for e in await stream.events(1)] == [published]
    finally:
        process.stop()


@pytest.mark.fast_paths(_fast.LIVE_SOCKET)
async def test_a_live_viewer_of_a_quiet_stream_gets_keep_alive_comments(
    ssegate_server: ServerFactory,
) -> None:
    # A viewer in the fan-out does not read the log itself: the group must keep its socket alive.
    async with (
        ssegate_server(keepalive_interval=0.1) as client,
        client.stream("GET", "/v1/topics/quiet/events") as response,
    ):
        await wait_for_live_viewers(client, 1)
        chunks = response.aiter_bytes()
        seen = b""
        while seen.count(b": keep-alive\n") < 3:
            seen += await anext(chunks)
        assert await live_viewers(client) == 1  # still riding the fan-out, not on its own
        published = await publish(client, "quiet", "after the quiet")
        async for chunk in chunks:
            seen += chunk
            if published.encode() in seen:
                break
        assert b"after the quiet" in seen
