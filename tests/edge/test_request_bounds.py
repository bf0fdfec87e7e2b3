"""Every request is bounded (issue 26, failure 3), with the fast paths on and off.

Real sockets against a real server: a 100 MB header is refused after a few kilobytes, not read
whole; connections that send their headers a byte at a time are answered 408 and closed after the
header timeout; a body that does not arrive in time is a 408 from the app, and one nobody reads is
cut off. ``ssegate serve`` takes the bounds as flags.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from ssegate import _fast
from ssegate.config import Settings
from ssegate.server.app import create_app
from ssegate.server.bounds import RequestBounds
from ssegate.server.main import uvicorn_options
from tests.operations.test_serve_ready import serving
from tests.support.servers import serve_asgi

BOUNDS = RequestBounds(max_header_bytes=8192, max_headers=20, header_timeout=1.0, body_timeout=1.0)
_WAIT = 10.0


@asynccontextmanager
async def bounded_server() -> AsyncIterator[tuple[str, int]]:
    settings = Settings(body_timeout=BOUNDS.body_timeout, demo_ttft=0.01, demo_tokens_per_second=400.0)
    async with serve_asgi(create_app(settings), http=uvicorn_options(BOUNDS)["http"]) as url:
        yield url, int(url.rsplit(":", 1)[1])


async def _answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, Any] | None, bytes]:
    """The status and JSON body of the one response on a connection the server then closes."""
    raw = await asyncio.wait_for(reader.read(), _WAIT)  # to EOF: the server closes after it
    if not raw:
        return 0, None, raw
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body) if body else None, head


async def _still_serving(url: str) -> None:
    async with httpx.AsyncClient(timeout=_WAIT) as client:
        assert (await client.get(f"{url}/healthz")).status_code == 200


async def test_headers_over_the_size_limit_get_a_json_431(paths: str) -> None:
    async with bounded_server() as (url, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n")
        status, body, head = await _answer(reader)
        writer.close()
        await _still_serving(url)
    assert status == 431
    assert body is not None
    assert body["error"]["code"] == "headers_too_large"
    assert b"connection: close" in head.lower()


async def test_more_headers_than_the_limit_get_a_json_431(paths: str) -> None:
    async with bounded_server() as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        many = b"".join(b"X-H%d: v\r\n" % i for i in range(BOUNDS.max_headers + 1))
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + many + b"\r\n")
        status, body, _ = await _answer(reader)
        writer.close()
    assert status == 431
    assert body is not None
    assert body["error"]["code"] == "headers_too_large"


async def test_a_100_mb_header_is_refused_after_a_few_kilobytes_not_read_whole(paths: str) -> None:
    chunk = b"a" * (1 << 20)
    sent = 0
    async with bounded_server() as (url, port):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        hung_up = False
        for _ in range(100):  # the server hangs up long before the 100th megabyte
            try:
                writer.write(chunk)
                await asyncio.wait_for(writer.drain(), _WAIT)
            except (ConnectionError, BrokenPipeError):
                hung_up = True
                break
            sent += len(chunk)
        writer.close()
        await _still_serving(url)
    assert hung_up
    # What the kernel buffers on both sides (a few MB on loopback), not the 100 MB the client had.
    assert sent < 16 * len(chunk)


async def test_slow_headers_get_408_and_the_connection_closes_after_the_header_timeout(paths: str) -> None:
    async def slowloris(port: int) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")

        async def trickle() -> None:
            for _ in range(int(_WAIT / 0.2)):  # a header, a byte at a time, never ending
                await asyncio.sleep(0.2)
                writer.write(b"X")

        dripping = asyncio.create_task(trickle())
        try:
            status, body, _ = await _answer(reader)
        finally:
            dripping.cancel()
            writer.close()
        assert body is None or body["error"]["code"] == "header_timeout"
        return status

    async with bounded_server() as (url, port):
        started = time.monotonic()
        statuses = await asyncio.gather(*(slowloris(port) for _ in range(50)))
        elapsed = time.monotonic() - started
        await _still_serving(url)
    assert statuses == [408] * 50
    assert elapsed < BOUNDS.header_timeout + 4  # all of them closed once their time was up


async def test_a_silent_connection_is_closed_after_the_header_timeout(paths: str) -> None:
    async with bounded_server() as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        status, _, _ = await _answer(reader)
        writer.close()
    assert status == 408


async def test_a_later_request_with_slow_headers_only_closes_the_connection(paths: str) -> None:
    async with bounded_server() as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        first = await asyncio.wait_for(reader.readuntil(b'{"status":"ok"}'), _WAIT)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # ...and nothing more
        rest = await asyncio.wait_for(reader.read(), _WAIT)  # EOF once the header time is up
        writer.close()
    assert first.startswith(b"HTTP/1.1 200")
    assert rest == b""  # an earlier response may still be on its way there: nothing is written


async def test_a_body_that_does_not_arrive_in_time_is_a_json_408(paths: str) -> None:
    async with bounded_server() as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /v1/topics/t/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"data": '
        )
        status, body, _ = await _answer(reader)
        writer.close()
    assert status == 408
    assert body is not None
    assert body["error"]["code"] == "body_timeout"


async def test_a_body_nobody_reads_is_cut_off_after_the_body_timeout(paths: str) -> None:
    async with bounded_server() as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /v1/topics/t/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 1000000\r\n\r\nx"
        )
        started = time.monotonic()
        refused = await asyncio.wait_for(reader.readuntil(b"}}"), _WAIT)  # 415 at once
        for _ in range(int(_WAIT / 0.2)):
            await asyncio.sleep(0.2)
            if reader.at_eof():
                break
            writer.write(b"x")
            await reader.read(0)
        rest = await asyncio.wait_for(reader.read(), _WAIT)
        elapsed = time.monotonic() - started
        writer.close()
    assert refused.startswith(b"HTTP/1.1 415")
    assert rest == b""
    assert elapsed < BOUNDS.body_timeout + 4


async def test_ordinary_requests_and_streams_pass_unchanged(paths: str) -> None:
    async with bounded_server() as (url, _), httpx.AsyncClient(base_url=url, timeout=_WAIT) as client:
        created = await client.post("/v1/generations", json={"messages": [{"role": "user", "content": "hi"}]})
        assert created.status_code == 201
        async with client.stream("GET", created.json()["events_url"]) as stream:
            text = b"".join([chunk async for chunk in stream.aiter_bytes()])
        again = await client.get("/healthz")  # the same kept-alive connection
    assert b"event: done" in text
    assert again.status_code == 200


@pytest.mark.parametrize("fast_paths", ["1", "0"])
async def test_ssegate_serve_takes_the_bounds_as_flags(fast_paths: str) -> None:
    args = ("--header-timeout", "1", "--max-header-bytes", "4096")
    async with serving({_fast.ENV: fast_paths}, args=args) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        started = time.monotonic()
        slow = await _answer(reader)
        elapsed = time.monotonic() - started
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n")
        big = await _answer(reader)
        writer.close()
    assert slow[0] == 408
    assert elapsed < 5
    assert big[0] == 431


def _peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):  # the high-water mark: what the process ever held
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.parametrize("fast_paths", ["1", "0"])
async def test_ssegate_serve_memory_stays_flat_under_a_100_mb_header(fast_paths: str) -> None:
    chunk = b"a" * (1 << 20)
    async with serving({_fast.ENV: fast_paths}) as server:
        before = await asyncio.to_thread(_peak_rss_kib, server.pid)
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        for _ in range(100):
            try:
                writer.write(chunk)
                await asyncio.wait_for(writer.drain(), _WAIT)
            except (ConnectionError, BrokenPipeError):
                break
        writer.close()
        after = await asyncio.to_thread(_peak_rss_kib, server.pid)
        async with httpx.AsyncClient(timeout=_WAIT) as client:
            assert (await client.get(f"http://127.0.0.1:{server.port}/healthz")).status_code == 200
    # Before the bound: the whole header was read (issue 26: 179 -> 357 MB). Now a few MB at most.
    assert after - before < 16 * 1024, (before, after)
