"""Every door keeps ssegate's lifecycle: a reader that leaves for good gets the upstream closed
after the grace, a cut stream resumes in the same dialect with Last-Event-ID (nothing lost or
repeated), and the stream limits apply."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from ssegate.config import Settings
from ssegate.server.app import create_app
from tests.fakes._upstream import Faults
from tests.fakes.fake_openai import FakeOpenAI, OpenAIScript
from tests.support.servers import serve_asgi
from tests.support.sse import read_stream

SLOW_TEXT = tuple(f" tok{n}" for n in range(400))  # 20 s at 20/s: still running when the test acts
_WAIT = 10.0


@dataclass(frozen=True)
class DoorCase:
    name: str
    path: str
    body: dict[str, Any]
    resume: str  # the resume URL, {id} for the generation id

    def resume_url(self, generation_id: str) -> str:
        return self.resume.format(id=generation_id)


USER = [{"role": "user", "content": "hello"}]
DOORS = [
    DoorCase(
        "openai",
        "/v1/chat/completions",
        {"model": "openai", "messages": USER, "stream": True},
        "/v1/chat/completions/chatcmpl-{id}",
    ),
    DoorCase(
        "anthropic",
        "/v1/messages",
        {"model": "openai", "max_tokens": 1000, "messages": USER, "stream": True},
        "/v1/messages/msg_{id}",
    ),
]


@pytest.fixture
async def slow_openai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(OpenAIScript(text=SLOW_TEXT, faults=Faults(interval=0.05))) as fake:
        yield fake


def settings(fake: FakeOpenAI, **overrides: Any) -> Settings:
    return Settings(
        provider="openai", openai_api_key="sk-test", openai_base_url=f"{fake.url}/v1", **overrides
    )


@pytest.mark.parametrize("door", DOORS, ids=lambda d: d.name)
async def test_a_reader_that_leaves_gets_the_upstream_closed_after_the_grace(
    door: DoorCase, slow_openai: FakeOpenAI
) -> None:
    grace = {"abandon_grace": 0.3, "first_viewer_grace": 0.3}
    async with (
        serve_asgi(create_app(settings(slow_openai, **grace))) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=_WAIT) as http,
    ):
        first = await read_stream(http, "POST", door.path, json_body=door.body, max_events=5)
        assert first.status == 200
        await asyncio.wait_for(slow_openai.client_closed_early.wait(), _WAIT)
        state = (await http.get(f"/v1/generations/{first.headers['x-generation-id']}")).json()
    assert state["state"] == "cancelled"


@pytest.mark.parametrize("door", DOORS, ids=lambda d: d.name)
async def test_a_reload_within_the_grace_resumes_in_the_same_dialect(door: DoorCase) -> None:
    script = OpenAIScript(text=tuple(f" tok{n}" for n in range(60)), faults=Faults(interval=0.01))
    async with (
        FakeOpenAI(script) as fake,
        serve_asgi(create_app(settings(fake, abandon_grace=5.0))) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=_WAIT) as http,
    ):
        first = await read_stream(http, "POST", door.path, json_body=door.body, max_events=10)
        generation_id = first.headers["x-generation-id"]
        accept = {"accept": "text/event-stream"}
        rest = await read_stream(
            http,
            "GET",
            door.resume_url(generation_id),
            headers={**accept, "last-event-id": first.events[-1].id},
        )
        whole = await read_stream(http, "GET", door.resume_url(generation_id), headers=accept)
        # A sub-event id (one log event written as several wire events) resumes inside it.
        partial = next(e.id for e in whole.events if "/" in e.id)
        at = [e.id for e in whole.events].index(partial)
        inside = await read_stream(
            http, "GET", door.resume_url(generation_id), headers={**accept, "last-event-id": partial}
        )
        over = await read_stream(
            http,
            "GET",
            door.resume_url(generation_id),
            headers={**accept, "last-event-id": whole.events[-1].id},
        )
        bad = await http.get(door.resume_url(generation_id), headers={**accept, "last-event-id": "zz:999999"})
    assert fake.completed == 1  # one upstream call for all those readers
    assert rest.headers["x-generation-id"] == generation_id
    assert [(e.event, e.data) for e in first.events + rest.events] == [
        (e.event, e.data) for e in whole.events
    ]
    assert [e.data for e in inside.events] == [e.data for e in whole.events[at + 1 :]]
    assert over.status == 204
    assert bad.status_code == 409


@pytest.mark.parametrize("door", DOORS, ids=lambda d: d.name)
async def test_the_stream_limit_applies(door: DoorCase, slow_openai: FakeOpenAI) -> None:
    async with (
        serve_asgi(create_app(settings(slow_openai, max_streams_per_principal=1))) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=_WAIT) as http,
        http.stream("POST", door.path, json=door.body) as held,
    ):
        assert held.status_code == 200
        refused = await http.post(door.path, json=door.body)
        assert refused.status_code == 429
        assert refused.headers["retry-after"]
        error = refused.json()["error"]
    assert error["code"] == "too_many_streams" or "stream" in error["message"]
