"""Read real event streams in tests with ssegate's own parser (the codec is tested on its own)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from ssegate.codec.events import Comment, Event
from ssegate.codec.parser import EventStreamParser


@dataclass
class Received:
    status: int
    headers: httpx.Headers
    events: list[Event] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    raw: bytes = b""

    @property
    def types(self) -> list[str]:
        return [e.event for e in self.events]

    def data(self, event_type: str) -> list[Any]:
        return [json.loads(e.data) for e in self.events if e.event == event_type]

    @property
    def text(self) -> str:
        return "".join(d["delta"] for d in self.data("text"))


async def iter_stream(response: httpx.Response) -> AsyncIterator[Event | Comment]:
    parser = EventStreamParser()
    async for chunk in response.aiter_raw():
        for item in parser.feed(chunk):
            if isinstance(item, Event | Comment):
                yield item


async def read_stream(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    json_body: Any = None,
    max_events: int | None = None,
) -> Received:
    """Read a stream to its end (or ``max_events`` events, then hang up like a closed tab)."""
    async with client.stream(method, url, headers=headers, json=json_body) as response:
        received = Received(status=response.status_code, headers=response.headers)
        if response.status_code != 200:
            received.raw = await response.aread()
            return received
        async for item in iter_stream(response):
            if isinstance(item, Comment):
                received.comments.append(item.text)
                continue
            received.events.append(item)
            if max_events is not None and len(received.events) >= max_events:
                break
        return received
