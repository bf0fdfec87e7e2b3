"""A viewer whose socket accepts nothing for ``viewer_stall_timeout`` is dropped (issue 26,
failure 7): its stream slot and memory are freed, and it can resume with ``Last-Event-ID``.

The viewer is a raw socket with a tiny receive window that never reads; a topic is fed large
events until every buffer between it and the server is full.
"""

from __future__ import annotations

import asyncio
import socket
import time
from urllib.parse import urlsplit

import httpx

from ssegate.config import Settings
from ssegate.server.app import create_app
from tests.support.servers import serve_asgi
from tests.support.sse import read_stream

BIG = "x" * (128 * 1024)
STALL = 0.5
_WAIT = 30.0


async def open_silent_viewer(base_url: str, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Subscribe, read the response head, then never read again (a frozen tab, a dead phone)."""
    parts = urlsplit(base_url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a tiny window fills fast
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(f"GET {path} HTTP/1.1\r\nhost: {parts.netloc}\r\naccept: text/event-stream\r\n\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _WAIT)
    assert head.startswith(b"HTTP/1.1 200")
    return reader, writer


async def test_a_viewer_that_accepts_nothing_is_dropped_after_the_stall_timeout_and_can_resume() -> None:
    settings = Settings(viewer_stall_timeout=STALL, max_body_bytes=1 << 20, keepalive_interval=60.0)
    app = create_app(settings)
    async with (
        serve_asgi(app) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=_WAIT) as client,
    ):
        state = app.state.ssegate
        reader, writer = await open_silent_viewer(base_url, "/v1/topics/slow/events")
        published = []
        began = time.monotonic()
        # Enough to fill the kernel's buffers on both sides and the server's own (a few MB).
        for n in range(80):
            response = await client.post("/v1/topics/slow/events", json={"data": {"n": n, "pad": BIG}})
            assert response.status_code == 201
            published.append(response.json()["id"])
            if not state.streams.attached:
                break
        await state.streams.until_closed(_WAIT)  # the slot is freed once the stall timeout passes
        assert not state.streams.attached
        dropped_after = time.monotonic() - began
        # The viewer finds its connection gone (reset), never a hang.
        gone = False
        async with asyncio.timeout(_WAIT):
            try:
                while await reader.read(1 << 20):
                    pass
                gone = True
            except ConnectionError:
                gone = True
        writer.close()
        # It resumes where it wants (here: after the second event) and gets the rest.
        rest = await read_stream(
            client, "GET", "/v1/topics/slow/events", headers={"last-event-id": published[1]}, max_events=3
        )

    assert gone
    assert dropped_after < _WAIT
    assert [e.id for e in rest.events] == published[2:5]
