"""A stand-in for the ssegate server's HTTP API, speaking its wire vocabulary, on a real socket.

It lets the client and the CLI be tested on their own; the server's own tests cover the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ssegate.codec.encoder import encode_event, encode_retry
from ssegate.codec.events import Event
from tests.support.servers import serve_asgi

GENERATION_ID = "g1"


@dataclass
class FakeGateway:
    """The script: ``events`` are (type, data) pairs; ``hold_after`` makes the stream wait for a cancel."""

    events: list[tuple[str, dict[str, Any]]]
    hold_after: int | None = None
    started: list[dict[str, Any]] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)
    published: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    def wire(self, index: int) -> bytes:
        event_type, data = self.events[index]
        return encode_event(Event(data=json.dumps(data), event=event_type, id=str(index + 1)))

    async def start(self, request: Request) -> Response:
        self.authorizations.append(request.headers.get("authorization"))
        self.started.append(await request.json())
        base = f"/v1/generations/{GENERATION_ID}"
        return JSONResponse(
            {"id": GENERATION_ID, "events_url": f"{base}/events", "cancel_url": f"{base}/cancel"},
            status_code=201,
        )

    async def stream(self, request: Request) -> Response:
        after = int(request.headers.get("last-event-id", "0"))
        if after >= len(self.events):
            return Response(status_code=204)
        return StreamingResponse(self.body(after), media_type="text/event-stream")

    async def body(self, after: int) -> AsyncIterator[bytes]:
        yield encode_retry(10)
        for index in range(after, len(self.events)):
            if index == self.hold_after:
                await self.cancelled.wait()
                yield encode_event(
                    Event(data=json.dumps({"finish_reason": "cancelled"}), event="done", id=str(index + 1))
                )
                return
            yield self.wire(index)

    async def cancel(self, request: Request) -> Response:
        self.cancelled.set()
        return JSONResponse({"status": "cancelling"}, status_code=202)

    async def state(self, request: Request) -> Response:
        if request.path_params["id"] != GENERATION_ID:
            return JSONResponse({"code": "not_found", "message": "no such generation"}, status_code=404)
        return JSONResponse({"id": GENERATION_ID, "status": "done"})

    async def publish(self, request: Request) -> Response:
        self.authorizations.append(request.headers.get("authorization"))
        self.published.append((request.path_params["topic"], await request.json()))
        return JSONResponse({"id": "7"}, status_code=201)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/generations", self.start, methods=["POST"]),
                Route("/v1/generations/{id}/events", self.stream),
                Route("/v1/generations/{id}/cancel", self.cancel, methods=["POST"]),
                Route("/v1/generations/{id}", self.state),
                Route("/v1/topics/{topic}/events", self.publish, methods=["POST"]),
            ]
        )


@contextlib.asynccontextmanager
async def serve_gateway(gateway: FakeGateway) -> AsyncIterator[str]:
    try:
        async with serve_asgi(gateway.app()) as base_url:
            yield base_url
    finally:
        gateway.cancelled.set()  # release a held stream so the server can stop


ANSWER: list[tuple[str, dict[str, Any]]] = [
    ("start", {"id": GENERATION_ID, "model": "demo", "provider": "demo"}),
    ("thinking", {"delta": "hmm"}),
    ("text", {"delta": "Hel"}),
    ("text", {"delta": "lo"}),
    ("usage", {"input_tokens": 3, "output_tokens": 2}),
    ("done", {"finish_reason": "stop", "usage": {"input_tokens": 3, "output_tokens": 2}}),
]
