"""Two ``ssegate serve`` processes on a real Redis Cluster of the test's own: the primary serving a
generation's slot is killed mid-stream and its replica promoted. Every viewer, on either process,
reaches the end within a bound, and either resumed exactly (ids consecutive, the whole text) or
was told ``reset`` with a reason: never a silent gap, never a hang."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from ssegate.codec.events import Event
from ssegate.gateway import stream_key
from tests.fakes._upstream import Faults
from tests.fakes.fake_anthropic import AnthropicScript, FakeAnthropic
from tests.multiprocess.processes import SsegateProcess, ssegate_processes
from tests.support.redis_cluster import RedisClusterServers
from tests.support.sse import iter_stream

pytestmark = [pytest.mark.redis, pytest.mark.cluster]

TEXT = tuple(f" tok{n}" for n in range(80))  # 4 s at 20 deltas a second
TERMINAL = {"done", "error"}
_WAIT = 40.0


@pytest.fixture
async def slow_anthropic() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic(AnthropicScript(text=TEXT, faults=Faults(interval=0.05))) as fake:
        yield fake


class Viewer:
    """Reads a generation's events, reconnecting with Last-Event-ID as a browser's EventSource would."""

    def __init__(self, process: SsegateProcess, events_url: str) -> None:
        self.events: list[Event] = []
        self.changed = asyncio.Event()
        self.task = asyncio.create_task(self._run(process, events_url))

    async def _run(self, process: SsegateProcess, events_url: str) -> None:
        async with httpx.AsyncClient(base_url=process.url, timeout=_WAIT) as client:
            while not self.ended:
                last = next((e.id for e in reversed(self.events) if e.id), None)
                headers = {"Last-Event-ID": last} if last else {}
                try:
                    async with client.stream("GET", events_url, headers=headers) as response:
                        async for item in iter_stream(response):
                            if isinstance(item, Event):
                                self.events.append(item)
                                self.changed.set()
                except httpx.HTTPError:
                    await asyncio.sleep(0.1)  # as EventSource's retry: a new request shortly

    @property
    def ended(self) -> bool:
        return bool(self.events) and self.events[-1].event in TERMINAL

    def count(self, event: str) -> int:
        return sum(e.event == event for e in self.events)

    def after_last_reset(self) -> list[Event]:
        start = max((i for i, e in enumerate(self.events) if e.event == "reset"), default=-1) + 1
        return self.events[start:]


@pytest.mark.timeout(120)
async def test_cluster_primary_killed_mid_generation_viewers_resume_exactly_or_reset(
    private_redis_cluster: RedisClusterServers, slow_anthropic: FakeAnthropic
) -> None:
    cluster = private_redis_cluster
    env = {
        "SSEGATE_ANTHROPIC_API_KEY": "test",
        "SSEGATE_ANTHROPIC_BASE_URL": slow_anthropic.url,
        "SSEGATE_LEASE_TTL": "5",
    }
    async with ssegate_processes(2, cluster.url, env) as (a, b):
        async with httpx.AsyncClient(base_url=a.url, timeout=_WAIT) as client:
            messages = [{"role": "user", "content": "hi"}]
            body = {"provider": "anthropic", "keep_running": True, "messages": messages}
            response = await client.post("/v1/generations", json=body)
        assert response.status_code == 201, response.text
        created = response.json()
        viewers = [Viewer(process, created["events_url"]) for process in (b, b, a)]
        async with asyncio.timeout(_WAIT):
            while min(v.count("text") for v in viewers) < 10:
                await asyncio.wait([asyncio.create_task(v.changed.wait()) for v in viewers], timeout=1.0)
                for v in viewers:
                    v.changed.clear()
        primary = cluster.primary_of(f"ssegate:{{{stream_key(created['id'])}}}:log")
        replica = cluster.replica_of(primary)

        await asyncio.to_thread(primary.kill)

        async with asyncio.timeout(_WAIT):  # never a hang
            await asyncio.gather(*(v.task for v in viewers))
        assert cluster.primary_of(f"ssegate:{{{stream_key(created['id'])}}}:log") is replica

    for viewer in viewers:
        assert viewer.count("done") + viewer.count("error") == 1, [e.event for e in viewer.events]
        for event in viewer.events:
            if event.event == "reset":
                assert json.loads(event.data)["reason"]
        tail = [e for e in viewer.after_last_reset() if e.id]
        positions = [(e.id.rpartition(":")[0], int(e.id.rpartition(":")[2])) for e in tail if e.id]
        for before, after in itertools.pairwise(positions):
            assert after == (before[0], before[1] + 1), f"silent gap: {before} then {after}"
        if viewer.events[-1].event == "done":
            texts = [e for e in viewer.after_last_reset() if e.event == "text"]
            text = "".join(json.loads(e.data)["delta"] for e in texts)
            if viewer.count("reset") == 0:
                assert text == "".join(TEXT)  # resumed exactly: the whole answer, nothing twice
