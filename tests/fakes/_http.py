"""A tiny HTTP/1.1 server on raw asyncio streams, for fake upstreams that must misbehave on purpose.

An ASGI server cannot stall mid-body, cut a connection without a traceback, or say the moment the
client hung up while nothing is being written; a raw socket can do all three. It understands just
what the vendor SDKs send: one request at a time per connection, bodies with Content-Length,
keep-alive. Responses are chunked, so a dropped connection is a truncated body to the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}
_REASONS |= {429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}
_REASONS |= {529: "Overloaded"}


@dataclass(frozen=True, slots=True)
class FakeRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    connection: int = 0  # which connection it came on: 1 for the first the server accepted, ...

    def json(self) -> Any:
        return json.loads(self.body)


class Responder:
    """Writes one response; knows whether the client hung up before the response ended."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.client_gone = asyncio.Event()
        self._watch: asyncio.Task[None] | None = None

    async def start(self, status: int, headers: dict[str, str]) -> None:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}", "transfer-encoding: chunked"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await self._writer.drain()
        self.watch_for_hang_up()

    def watch_for_hang_up(self) -> None:
        """From now on EOF on the socket sets ``client_gone`` (the client sends nothing more once
        its request is in)."""
        if self._watch is None:
            self._watch = asyncio.create_task(self._watch_client())

    async def _watch_client(self) -> None:
        with contextlib.suppress(ConnectionError):
            if not await self._reader.read(1):
                self.client_gone.set()

    async def send(self, data: bytes) -> None:
        if data:
            self._writer.write(b"%x\r\n%b\r\n" % (len(data), data))
            await self._writer.drain()

    async def send_raw(self, data: bytes) -> None:
        """Bytes as they are, outside the chunked framing (a broken upstream's)."""
        self._writer.write(data)
        await self._writer.drain()

    async def end(self) -> None:
        self._writer.write(b"0\r\n\r\n")
        await self._writer.drain()
        await self._stop_watching()

    async def json(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        await self.start(status, {"content-type": "application/json", **(headers or {})})
        await self.send(json.dumps(body).encode())
        await self.end()

    def abort(self) -> None:
        """Drop the connection mid-response, as a crashed upstream or a cut network would."""
        self._writer.transport.abort()

    async def wait_client_gone(self) -> None:
        await self.client_gone.wait()

    async def _stop_watching(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None


Handler = Callable[[FakeRequest, Responder], Awaitable[None]]


class RawHTTPServer:
    """Serves ``handler`` on 127.0.0.1 (port 0 by default) until :meth:`aclose`."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.connections_accepted = 0
        self._accepted = asyncio.Event()  # set (and replaced) at every accept
        self.url = ""

    async def until_accepted(self, count: int) -> None:
        """Return once ``count`` connections have been accepted in all."""
        while self.connections_accepted < count:
            await self._accepted.wait()

    async def start(self, port: int = 0) -> str:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", port)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self.url

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self.connections_accepted += 1
        number = self.connections_accepted
        accepted, self._accepted = self._accepted, asyncio.Event()
        accepted.set()
        try:
            while (request := await _read_request(reader, number)) is not None:
                responder = Responder(reader, writer)
                await self._handler(request, responder)
                await responder._stop_watching()
                if writer.transport.is_closing() or responder.client_gone.is_set():
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # Only aclose() cancels these tasks; asyncio's stream callback would log a cancelled task.
            pass
        finally:
            self._connections.discard(task)
            writer.transport.abort()


async def _read_request(reader: asyncio.StreamReader, connection: int) -> FakeRequest | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None  # the client closed an idle keep-alive connection
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    method, target, _ = request_line.split(" ", 2)
    headers = {}
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return FakeRequest(method, target, headers, body, connection)


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[str]:
    server = RawHTTPServer(handler)
    try:
        yield await server.start()
    finally:
        await server.aclose()
