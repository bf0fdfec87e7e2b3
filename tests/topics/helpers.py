"""Reading topic streams in tests: open, read a number of events, hang up like a closed tab."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from ssegate.codec.events import Event
from ssegate.codec.parser import EventStreamParser


@dataclass
class TopicStream:
    response: httpx.Response
    parser: EventStreamParser
    _chunks: AsyncIterator[bytes]
    _ready: list[Event]

    @property
    def last_event_id(self) -> str:
        """What a browser would send back as Last-Event-ID now (id-only blocks included)."""
        return self.parser.last_event_id

    async def events(self, count: int) -> list[Event]:
        while len(self._ready) < count:
            chunk = await anext(self._chunks)
            self._ready.extend(item for item in self.parser.feed(chunk) if isinstance(item, Event))
        taken, self._ready[:] = self._ready[:count], self._ready[count:]
        return taken

    async def until_id_known(self) -> str:
        while not self.parser.last_event_id:
            chunk = await anext(self._chunks)
            self._ready.extend(item for item in self.parser.feed(chunk) if isinstance(item, Event))
        return self.parser.last_event_id


@contextlib.asynccontextmanager
async def subscribe(
    client: httpx.AsyncClient, path: str, *, last_event_id: str | None = None, **params: Any
) -> AsyncIterator[TopicStream]:
    """An open subscription (its cursor is fixed once this yields: headers came back)."""
    headers = {"last-event-id": last_event_id} if last_event_id else {}
    async with client.stream("GET", path, headers=headers, params=params) as response:
        assert response.status_code == 200, (await response.aread()).decode()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield TopicStream(response, EventStreamParser(), response.aiter_raw(), [])


def datas(events: list[Event]) -> list[Any]:
    return [json.loads(e.data) for e in events]


async def publish(client: httpx.AsyncClient, topic: str, data: Any, **fields: Any) -> str:
    response = await client.post(f"/v1/topics/{topic}/events", json={"data": data, **fields})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])
