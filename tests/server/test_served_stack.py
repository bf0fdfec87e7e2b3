"""What ``ssegate serve`` runs under uvicorn for every connection: the slim httptools protocol
(ssegate._fast.protocol) and the outer layers that keep no frame (ssegate._fast.stack.ServedApp).

They exist to make a held connection cheap (bench W3); these tests hold them to that, and to
behaving exactly as stock uvicorn does otherwise."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from ssegate._fast.protocol import SlimEvent
from ssegate._fast.stack import ServedApp
from ssegate.config import Settings
from ssegate.server.app import create_app
from ssegate.server.main import uvicorn_options
from tests.support.servers import serve_asgi

FAST = {"demo_ttft": 0.01, "demo_tokens_per_second": 400.0}


# ------------------------------------------------------------------------------------ SlimEvent


async def test_a_slim_event_wakes_every_waiter_and_answers_at_once_once_set() -> None:
    event = SlimEvent()
    first = asyncio.ensure_future(event.wait())
    second = asyncio.ensure_future(event.wait())
    await asyncio.sleep(0)
    assert not first.done()
    assert not second.done()
    event.set()
    assert await first is True
    assert await second is True
    assert event.is_set()
    assert await event.wait() is True  # already set: no waiting
    event.clear()
    third = asyncio.ensure_future(event.wait())
    await asyncio.sleep(0)
    assert not third.done()
    event.set()
    assert await third is True


async def test_waiters_cancelled_while_waiting_do_not_pile_up() -> None:
    event = SlimEvent()
    for _ in range(100):
        waiter = asyncio.ensure_future(event.wait())
        await asyncio.sleep(0)
        waiter.cancel()
    survivor = asyncio.ensure_future(event.wait())
    assert len(event._waiters or ()) <= 2  # the last cancelled one and the survivor
    event.set()
    assert await survivor is True


# ---------------------------------------------------------------------------- the served stack


def address(base_url: str) -> tuple[str, int]:
    host, port = base_url[len("http://") :].split(":")
    return host, int(port)


@asynccontextmanager
async def served(**overrides: Any) -> AsyncIterator[tuple[str, int]]:
    async with serve_asgi(create_app(Settings(**{**FAST, **overrides}))) as base_url:
        yield address(base_url)


async def open_stream(host: str, port: int, topic: bytes, headers: bytes = b"") -> asyncio.StreamWriter:
    """Subscribe to ``topic`` on a raw connection; returns once the stream has opened."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /v1/topics/%s/events HTTP/1.1\r\nHost: x\r\n%s\r\n" % (topic, headers))
    await reader.readuntil(b"retry:")
    return writer


async def exchange(host: str, port: int, request: bytes, *, responses: int) -> list[bytes]:
    """Send ``request`` in one write; read ``responses`` complete responses (Content-Length)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        out = []
        for _ in range(responses):
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            out.append(head + await reader.readexactly(length))
        return out
    finally:
        writer.close()


async def test_pipelined_requests_on_one_connection_are_answered_in_order() -> None:
    async with served() as (host, port):
        get = b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n"
        first, second, third = await exchange(
            host, port, get % b"/healthz" + get % b"/v1/providers" + get % b"/nowhere", responses=3
        )
    assert first.startswith(b"HTTP/1.1 200")
    assert b'{"status":"ok"}' in first
    assert second.startswith(b"HTTP/1.1 200")
    assert b'"name":"demo"' in second
    assert third.startswith(b"HTTP/1.1 404")
    assert b'"not_found"' in third


async def test_a_request_body_sent_in_pieces_arrives_whole() -> None:
    body = json.dumps({"data": "x" * 100_000, "event": "note"}).encode()
    async with served() as (host, port):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(
            b"POST /v1/topics/big/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        for at in range(0, len(body), 7_000):
            writer.write(body[at : at + 7_000])
            await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        writer.close()
    assert head.startswith(b"HTTP/1.1 201"), head


def held_chain(task: asyncio.Task[Any]) -> list[str]:
    """The coroutines a task is suspended in, outermost first."""
    names = []
    coro: Any = task.get_coro()
    while coro is not None and hasattr(coro, "cr_code"):
        names.append(coro.cr_code.co_qualname)
        coro = coro.cr_await
    return names


async def held_chains() -> list[list[str]]:
    """The await chains of the server's held requests, once the first has joined the fan-out."""
    chains: list[list[str]] = []
    for _ in range(200):  # the viewer joins the fan-out right after its opening bytes
        chains = [held_chain(t) for t in asyncio.all_tasks() if "run_asgi" in repr(t.get_coro())]
        if chains and chains[0][-1:] == ["RequestResponseCycle.receive"]:
            break
        await asyncio.sleep(0.005)
    return chains


@pytest.mark.fast_paths
async def test_a_held_subscriber_is_suspended_in_the_app_s_own_frames_only() -> None:
    async with served() as (host, port):
        writer = await open_stream(host, port, b"quiet")
        chains = await held_chains()
        writer.close()
    assert chains == [
        [
            "RequestResponseCycle.run_asgi",
            "StreamEndpoint.__call__",
            "EventStreamResponse.__call__",
            "RequestResponseCycle.receive",
        ]
    ]


@pytest.mark.fast_paths
async def test_a_generation_started_with_a_stream_takes_the_short_path_too() -> None:
    # The demo model's first token is a minute away: the stream is held, waiting for it.
    async with served(demo_ttft=60.0) as (host, port):
        body = b'{"messages":[{"role":"user","content":"hi"}]}'
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(
            b"POST /v1/generations HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        head = await reader.readuntil(b"retry:")
        chains = await held_chains()
        writer.close()
    assert head.startswith(b"HTTP/1.1 200")
    assert chains == [
        [
            "RequestResponseCycle.run_asgi",
            "StreamEndpoint.__call__",
            "_StreamGeneration.__call__",
            "_StreamGeneration._stream",
            "EventStreamResponse.__call__",
            "RequestResponseCycle.receive",
        ]
    ]


async def idle_subscriber_heap(host: str, port: int, count: int) -> float:
    """Python heap the server keeps per idle subscriber (client and server share this process,
    but the client's part is the same whatever the server runs)."""
    writers = []
    try:

        async def subscribe() -> None:
            writers.append(await open_stream(host, port, b"idle"))

        await subscribe()  # warm-up: the topic, its group, first-use caches
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        await asyncio.gather(*(subscribe() for _ in range(count)))
        for _ in range(5):  # let every viewer settle into the fan-out
            await asyncio.sleep(0.02)
        gc.collect()
        return (tracemalloc.get_traced_memory()[0] - before) / count
    finally:
        for writer in writers:
            writer.close()


@pytest.mark.fast_paths
async def test_an_idle_subscriber_costs_kibibytes_less_than_under_stock_uvicorn() -> None:
    settings = Settings(**FAST, max_streams_per_principal=1000, max_streams_total=1000)
    tracemalloc.start()
    try:
        async with serve_asgi(ServedApp(create_app(settings).dispatch), **uvicorn_options()) as url:
            slim = await idle_subscriber_heap(*address(url), 200)
        # Stock: uvicorn's own httptools protocol and proxy-headers middleware, the app as is.
        async with serve_asgi(create_app(settings).__call__, http="httptools", interface="asgi3") as url:
            stock = await idle_subscriber_heap(*address(url), 200)
    finally:
        tracemalloc.stop()
    assert stock - slim >= 2048, f"stock {stock:.0f} B, served {slim:.0f} B per idle subscriber"


def client_addresses(caplog: pytest.LogCaptureFixture) -> list[str | None]:
    return [
        json.loads(record.getMessage())["client"]
        for record in caplog.records
        if record.name == "ssegate.access"
    ]


FORWARDED = b"X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n"


async def request_with_forwarded_headers(host: str, port: int) -> None:
    # One ordinary request and one held stream (the short path), each through "a proxy".
    await exchange(host, port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + FORWARDED + b"\r\n", responses=1)
    writer = await open_stream(host, port, b"t", FORWARDED)
    writer.close()
    await writer.wait_closed()


async def wait_for_access_lines(caplog: pytest.LogCaptureFixture, count: int) -> None:
    for _ in range(400):
        if len(client_addresses(caplog)) >= count:
            return
        await asyncio.sleep(0.005)


async def test_a_trusted_proxy_s_forwarded_client_address_reaches_the_access_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="ssegate.access"):
        async with served() as (host, port):
            await request_with_forwarded_headers(host, port)
            await wait_for_access_lines(caplog, 2)
    assert client_addresses(caplog) == ["203.0.113.7", "203.0.113.7"]


async def test_forwarded_headers_from_an_untrusted_peer_are_ignored(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "192.0.2.1")  # read as uvicorn reads it
    with caplog.at_level(logging.INFO, logger="ssegate.access"):
        async with served() as (host, port):
            await request_with_forwarded_headers(host, port)
            await wait_for_access_lines(caplog, 2)
    assert client_addresses(caplog) == ["127.0.0.1", "127.0.0.1"]
