"""sse-starlette peer: POST /pub puts the body on every subscriber's queue; GET /sub streams it.

The usual sse-starlette broadcast shape (the library has no broadcast primitive): one
``asyncio.Queue`` per subscriber, an ``EventSourceResponse`` draining it.
Run: python starlette_app.py PORT  (uvicorn, uvloop + httptools, one process).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import uvicorn
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

subscribers: set[asyncio.Queue[str]] = set()


async def publish(request: Request) -> Response:
    message = (await request.body()).decode()
    for queue in subscribers:
        queue.put_nowait(message)
    return Response(status_code=202)


async def subscribe(request: Request) -> EventSourceResponse:
    queue: asyncio.Queue[str] = asyncio.Queue()
    subscribers.add(queue)

    async def events() -> AsyncIterator[dict[str, str]]:
        try:
            while True:
                yield {"data": await queue.get()}
        finally:
            subscribers.discard(queue)

    return EventSourceResponse(events(), ping=15)


app = Starlette(routes=[Route("/pub", publish, methods=["POST"]), Route("/sub", subscribe)])

if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        backlog=4096,
    )
