"""W4 reference: the least a Python relay can do per token on this machine (not a product, no features).

``POST /v1/chat {max_tokens, messages}`` opens one keep-alive connection to the upstream (a pool of
idle ones is reused), sends Anthropic's streaming request, and for every ``text_delta`` writes
``data: {"text": ...}`` to the viewer as one HTTP/1.1 chunk, then ``data: [DONE]``. Both sides are
bare ``asyncio.Protocol`` objects on uvloop: no framework, no SDK, no event log, no task per stream,
no auth, no error handling beyond closing the viewer. Per token that is one ``recv`` callback, a
chunk-and-event split, one JSON parse, one JSON dump and one ``write``: what any Python gateway
pays at least, so W4's highest N for this relay bounds what one Python process reaches here.

Run: ``python bench/peers/llm_floor_relay.py PORT UPSTREAM_PORT``.
"""

from __future__ import annotations

import asyncio
import sys
from typing import cast

import orjson

HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
DONE = b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Upstream(asyncio.Protocol):
    """One connection to the fake upstream: a chunked answer split into SSE events."""

    def __init__(self, relay: Relay) -> None:
        self.pool = relay.pool
        self.transport: asyncio.Transport | None = None
        self.viewer: Viewer | None = None
        self.buf = b""
        self.in_body = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self in self.pool:
            self.pool.remove(self)
        if self.viewer is not None:
            self.viewer.close()

    def send(self, viewer: Viewer, body: bytes) -> None:
        assert self.transport is not None
        self.viewer = viewer
        self.buf = b""
        self.in_body = False
        self.transport.write(
            b"POST /v1/messages HTTP/1.1\r\nhost: upstream\r\ncontent-type: application/json\r\n"
            b"x-api-key: dummy\r\nanthropic-version: 2023-06-01\r\ncontent-length: %d\r\n\r\n%s"
            % (len(body), body)
        )

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        if not self.in_body:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            self.in_body = True
            buf = buf[end + 4 :]
        events = bytearray()
        # chunked framing: "<hex>\r\n<data>\r\n"; the SSE events inside are whole per chunk here
        while True:
            eol = buf.find(b"\r\n")
            if eol < 0:
                break
            size = int(buf[:eol], 16)
            if len(buf) < eol + 2 + size + 2:
                break
            if size == 0:
                buf = buf[eol + 4 :]
                self._finish(bytes(events))
                self.buf = buf
                return
            events += buf[eol + 2 : eol + 2 + size]
            buf = buf[eol + 2 + size + 2 :]
        self.buf = buf
        if events:
            self._relay(bytes(events))

    def _relay(self, events: bytes) -> None:
        viewer = self.viewer
        if viewer is None or viewer.transport is None:
            return
        out = bytearray()
        for event in events.split(b"\n\n"):
            if event.startswith(b"event: content_block_delta\n"):
                payload = orjson.loads(event[event.index(b"data: ") + 6 :])
                delta = payload["delta"]
                if delta.get("type") == "text_delta":
                    out += _chunk(b"data: %s\n\n" % orjson.dumps({"text": delta["text"]}))
        if out:
            viewer.transport.write(bytes(out))

    def _finish(self, events: bytes) -> None:
        if events:
            self._relay(events)
        viewer, self.viewer = self.viewer, None
        if viewer is not None and viewer.transport is not None:
            viewer.transport.write(DONE)
        self.pool.append(self)


class Viewer(asyncio.Protocol):
    """One viewer's connection: reads one POST, then is written to by its upstream."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.transport: asyncio.Transport | None = None
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        length = 0
        for line in self.buf[:end].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(self.buf) < end + 4 + length:
            return
        request = orjson.loads(self.buf[end + 4 : end + 4 + length])
        self.buf = self.buf[end + 4 + length :]
        body = orjson.dumps(
            {
                "model": "claude-fake",
                "stream": True,
                "max_tokens": request.get("max_tokens", 1024),
                "messages": request["messages"],
            }
        )
        assert self.transport is not None
        self.transport.write(HEAD)
        asyncio.get_running_loop().create_task(self.relay.start(self, body))


class Relay:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.pool: list[Upstream] = []

    async def start(self, viewer: Viewer, body: bytes) -> None:
        if self.pool:
            upstream = self.pool.pop()
        else:
            loop = asyncio.get_running_loop()
            _, upstream = await loop.create_connection(
                lambda: Upstream(self), "127.0.0.1", self.upstream_port
            )
        upstream.send(viewer, body)


async def main(port: int, upstream_port: int) -> None:
    relay = Relay(upstream_port)
    server = await asyncio.get_running_loop().create_server(
        lambda: Viewer(relay), "127.0.0.1", port, backlog=4096
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main(int(sys.argv[1]), int(sys.argv[2])))
