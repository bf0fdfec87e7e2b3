"""A real HTTP server whose every connection follows a script the test writes.

The test gives a handler ``(request, n) -> Response`` (``n`` counts connections from 0); the server
records what each request carried, so a test can assert what the client sent on each reconnection.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ssegate.codec.encoder import encode_event
from ssegate.codec.events import Event
from tests.support.servers import serve_asgi

Handler = Callable[[Request, int], Awaitable[Response]]


@dataclass(frozen=True)
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def last_event_id(self) -> str | None:
        return self.headers.get("last-event-id")


class DropConnection(Exception):
    """Raised inside a streaming body: the server closes the socket mid-response."""


def sse(chunks: AsyncIterator[bytes] | Iterable[bytes], headers: dict[str, str] | None = None) -> Response:
    return StreamingResponse(chunks, media_type="text/event-stream", headers=headers)


def numbered(first: int, last: int, event: str = "message") -> list[bytes]:
    """Events ``first..last`` whose id and data are their number."""
    return [encode_event(Event(data=str(n), event=event, id=str(n))) for n in range(first, last + 1)]


@contextlib.asynccontextmanager
async def scripted_server(handler: Handler) -> AsyncIterator[tuple[str, list[Seen]]]:
    seen: list[Seen] = []

    async def endpoint(request: Request) -> Response:
        body = await request.body()
        seen.append(Seen(request.method, request.url.path, dict(request.headers), body))
        return await handler(request, len(seen) - 1)

    app = Starlette(routes=[Route("/{path:path}", endpoint, methods=["GET", "POST"])])
    async with serve_asgi(app) as base_url:
        yield base_url, seen
