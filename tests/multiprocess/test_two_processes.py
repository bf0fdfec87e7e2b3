"""Two real ``ssegate serve`` processes on one real Redis: any process serves, resumes and cancels
any generation; a killed process's streams end with ``upstream_lost``; abandonment is judged
across processes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from ssegate.codec.events import Event
from tests.deploy.nginx import nginx_in_front_of
from tests.fakes._upstream import Faults
from tests.fakes.fake_anthropic import AnthropicScript, FakeAnthropic
from tests.multiprocess.processes import SsegateProcess, ssegate_processes
from tests.support.sse import Received, iter_stream, read_stream

pytestmark = pytest.mark.redis

LEASE_TTL = 2.0
ABANDON_GRACE = 1.5
SHORT = {
    "SSEGATE_LEASE_TTL": str(LEASE_TTL),
    "SSEGATE_ABANDON_GRACE": str(ABANDON_GRACE),
    "SSEGATE_DEMO_TTFT": "0.05",
    "SSEGATE_DEMO_TOKENS_PER_SECOND": "20",
}
LONG = {"messages": [{"role": "user", "content": "/long"}]}  # ~500 demo tokens: 25 s at 20/s
# The slow upstream: 400 deltas, 20 a second, so it is still streaming when the test acts.
UPSTREAM_TEXT = tuple(f" tok{n}" for n in range(400))
_WAIT = 15.0
TERMINAL = {"done", "error"}
TERMINAL_STATES = {"done", "error", "cancelled"}


@pytest.fixture
async def slow_anthropic() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic(AnthropicScript(text=UPSTREAM_TEXT, faults=Faults(interval=0.05))) as fake:
        yield fake


async def start(process: SsegateProcess, body: dict[str, Any]) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=process.url, timeout=_WAIT) as client:
        response = await client.post("/v1/generations", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def describe(process: SsegateProcess, generation_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=process.url, timeout=_WAIT) as client:
        described: dict[str, Any] = (await client.get(f"/v1/generations/{generation_id}")).json()
    return described


async def wait_for_state(
    process: SsegateProcess, generation_id: str, states: set[str], within: float
) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        described = await describe(process, generation_id)
        if described["state"] in states or time.monotonic() > deadline:
            return described
        await asyncio.sleep(0.05)


async def read_all(process: SsegateProcess, url: str, headers: dict[str, str] | None = None) -> Received:
    async with httpx.AsyncClient(base_url=process.url, timeout=_WAIT) as client:
        return await asyncio.wait_for(read_stream(client, "GET", url, headers=headers), _WAIT)


async def test_two_processes_watch_resume_and_cancel_a_generation_of_the_other(
    redis_url: str, slow_anthropic: FakeAnthropic
) -> None:
    env = {**SHORT, "SSEGATE_ANTHROPIC_API_KEY": "test", "SSEGATE_ANTHROPIC_BASE_URL": slow_anthropic.url}
    async with ssegate_processes(2, redis_url, env) as (a, b):
        # keep_running: only the explicit cancel may end it, never a slow first viewer (abandonment).
        created = await start(a, {**LONG, "provider": "anthropic", "keep_running": True})
        events_url = created["events_url"]
        async with httpx.AsyncClient(base_url=b.url, timeout=_WAIT) as on_b:
            part = await read_stream(on_b, "GET", events_url, max_events=5)
            rest = Received(status=0, headers=httpx.Headers())
            resume = {"Last-Event-ID": part.events[-1].id or ""}
            async with on_b.stream("GET", events_url, headers=resume) as response:
                rest.status = response.status_code
                async for item in iter_stream(response):
                    if isinstance(item, Event):
                        rest.events.append(item)
                    if len(rest.data("text")) == 3:
                        cancelled = await on_b.post(created["cancel_url"])
                        assert cancelled.status_code == 202
                        assert cancelled.json()["state"] == "cancelled"
        # A's producer stopped: it closed its upstream request before the answer ended.
        await asyncio.wait_for(slow_anthropic.client_closed_early.wait(), LEASE_TTL + 3)
        whole = await read_all(a, events_url)
        described = await describe(a, created["id"])

    assert rest.status == 200
    assert [e.id for e in part.events + rest.events] == [e.id for e in whole.events]  # no gap, no duplicate
    assert rest.types[-1] == "done"
    assert rest.data("done")[0]["finish_reason"] == "cancelled"
    assert sum(t in TERMINAL for t in whole.types) == 1
    assert whole.types[-1] == "done"
    texts = whole.data("text")
    assert 3 <= len(texts) < len(UPSTREAM_TEXT)
    assert whole.text == "".join(UPSTREAM_TEXT[: len(texts)])
    assert described["state"] == "cancelled"
    assert slow_anthropic.completed == 0


async def test_two_processes_a_lost_producer_shows_in_the_description_with_nobody_watching(
    redis_url: str,
) -> None:
    # Nobody watches, so no viewer's tick ends it: asking for its state must be enough.
    async with ssegate_processes(2, redis_url, SHORT) as (a, b):
        created = await start(a, {**LONG, "keep_running": True})
        assert (await describe(b, created["id"]))["state"] in ("pending", "streaming")
        a.kill()
        deadline = time.monotonic() + LEASE_TTL + 5
        while (described := await describe(b, created["id"]))["state"] not in TERMINAL_STATES:
            assert time.monotonic() < deadline, f"still {described['state']} after the lease expired"
            await asyncio.sleep(0.1)  # a lease runs out with time: nothing to wait on but the clock

    assert described["state"] == "error"
    assert described["error"]["code"] == "upstream_lost"
    assert described["error"]["retryable"] is True


async def test_two_processes_killed_producer_ends_viewers_with_upstream_lost(redis_url: str) -> None:
    async with ssegate_processes(2, redis_url, SHORT) as (a, b):
        # keep_running: only the lost producer may end it, never a slow first viewer (abandonment).
        created = await start(a, {**LONG, "keep_running": True})
        first_text = [asyncio.Event(), asyncio.Event()]

        async def watch_on_b(seen_text: asyncio.Event) -> tuple[list[Event], float]:
            events: list[Event] = []
            async with (
                httpx.AsyncClient(base_url=b.url, timeout=_WAIT) as client,
                client.stream("GET", created["events_url"]) as response,
            ):
                async for item in iter_stream(response):
                    if isinstance(item, Event):
                        events.append(item)
                        if item.event == "text":
                            seen_text.set()
            return events, time.monotonic()

        viewers = [asyncio.create_task(watch_on_b(seen)) for seen in first_text]
        await asyncio.wait_for(asyncio.gather(*(seen.wait() for seen in first_text)), _WAIT)
        a.kill()
        killed_at = time.monotonic()
        results = await asyncio.wait_for(asyncio.gather(*viewers), LEASE_TTL + 5)
        described = await describe(b, created["id"])

    for events, ended_at in results:
        assert events[-1].event == "error", events[-3:]
        error = json.loads(events[-1].data)
        assert error["code"] == "upstream_lost"
        assert error["retryable"] is True
        assert set(error) >= {"code", "message", "retryable"}
        assert ended_at - killed_at < LEASE_TTL + 3
        assert sum(e.event in TERMINAL for e in events) == 1
    assert described["state"] == "error"


async def test_two_processes_viewer_elsewhere_keeps_a_generation_alive_until_it_leaves(
    redis_url: str,
) -> None:
    async with (
        ssegate_processes(2, redis_url, SHORT) as (a, b),
        httpx.AsyncClient(base_url=b.url, timeout=_WAIT) as on_b,
    ):
        # A warm connection to B, so B's viewer joins well inside the grace period after the start.
        assert (await on_b.get("/healthz")).status_code == 200
        created = await start(a, LONG)
        watched_for = 3 * ABANDON_GRACE
        async with on_b.stream("GET", created["events_url"]) as response:
            # Watch on B (and only on B) well past the grace period, reading as a viewer does.
            stop_at = time.monotonic() + watched_for
            async for _ in iter_stream(response):
                if time.monotonic() >= stop_at:
                    while_watched = await describe(a, created["id"])
                    break
        left_at = time.monotonic()
        after = await wait_for_state(a, created["id"], {"done", "error", "cancelled"}, ABANDON_GRACE + 3)
        abandoned_after = time.monotonic() - left_at
        whole = await read_all(a, created["events_url"])

    assert while_watched["state"] == "streaming"
    assert while_watched["viewers"] == 1
    assert after["state"] == "cancelled"
    assert abandoned_after < ABANDON_GRACE + 3
    assert whole.data("done")[0]["reason"] == "abandoned"


@pytest.mark.nginx
async def test_two_processes_behind_nginx_serve_one_generation_wherever_requests_land(
    redis_url: str,
) -> None:
    # The shipped upstream block with both processes: consecutive requests may land on either
    # process, and with Redis every one of them must see the same generation.
    async with (
        ssegate_processes(2, redis_url, {**SHORT, "SSEGATE_DEMO_TOKENS_PER_SECOND": "200"}) as processes,
        nginx_in_front_of([p.url for p in processes]) as proxy_url,
        httpx.AsyncClient(base_url=proxy_url, timeout=_WAIT) as proxied,
    ):
        response = await proxied.post(
            "/v1/generations", json={"messages": [{"role": "user", "content": "hi"}]}
        )
        assert response.status_code == 201
        created = response.json()
        part = await read_stream(proxied, "GET", created["events_url"], max_events=4)
        rest = await read_stream(
            proxied, "GET", created["events_url"], headers={"Last-Event-ID": part.events[-1].id or ""}
        )
        views = [await read_all(p, created["events_url"]) for p in processes]

    for whole in views:
        assert [e.id for e in part.events + rest.events] == [e.id for e in whole.events]
        assert whole.types[-1] == "done"
        assert part.text + rest.text == whole.text


async def test_a_generation_cancelled_from_another_process_records_the_output_tokens_it_streamed(
    redis_url: str, slow_anthropic: FakeAnthropic
) -> None:
    # Issue 26, failure 9: Anthropic reports output_tokens 1 in message_start and the real count
    # only at the end; the producer's count of streamed deltas lives in process A. B cancels:
    # the deltas are counted where B can see them, in the log.
    env = {**SHORT, "SSEGATE_ANTHROPIC_API_KEY": "test", "SSEGATE_ANTHROPIC_BASE_URL": slow_anthropic.url}
    async with ssegate_processes(2, redis_url, env) as (a, b):
        created = await start(a, {**LONG, "provider": "anthropic", "keep_running": True})
        async with httpx.AsyncClient(base_url=b.url, timeout=_WAIT) as on_b:
            seen = await read_stream(on_b, "GET", created["events_url"], max_events=14)
            assert len(seen.data("text")) >= 10
            cancelled = await on_b.post(created["cancel_url"])
            assert cancelled.status_code == 202
        await asyncio.wait_for(slow_anthropic.client_closed_early.wait(), LEASE_TTL + 3)
        whole = await read_all(b, created["events_url"])
        described_on_a = await describe(a, created["id"])
        described_on_b = await describe(b, created["id"])

    streamed = len(whole.data("text"))
    done = whole.data("done")[0]
    assert done["finish_reason"] == "cancelled"
    assert len(seen.data("text")) <= done["usage"]["output_tokens"] <= streamed
    assert described_on_a["usage"]["output_tokens"] == streamed
    assert described_on_b["usage"]["output_tokens"] == streamed
