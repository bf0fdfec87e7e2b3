"""The chaos canary: a generation and a topic keep their exact history through a scripted run of
faults (issue 26).

Two real ``ssegate serve`` processes share a real redis-server of this test's own (append-only
file on). A fake OpenAI upstream streams the canary generation; a publisher feeds the canary topic;
viewers and subscribers read through both processes as browsers do (reconnect with
``Last-Event-ID``, rebuild on ``reset``), one of them slowly. Meanwhile, driven by the upstream's
progress: Redis is killed and started again, the second process is SIGKILLed, and the upstream
resets its connection. At the end every reader's events equal the full history the log holds,
byte for byte, with nothing repeated.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from ssegate.codec.events import Event
from tests.fakes._upstream import Faults
from tests.fakes.fake_openai import FakeOpenAI, OpenAIScript
from tests.multiprocess import processes
from tests.multiprocess.processes import ssegate_processes
from tests.support.redis_server import RedisServer
from tests.support.sse import iter_stream

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]

TEXT = tuple(f" c{n}" for n in range(160))
RESET_AT = 130  # the upstream cuts its connection after this many deltas
INTERVAL = 0.04  # 25 deltas a second: the run takes about 6 s of upstream time
TOPIC = "canary"
_WAIT = 30.0
TERMINAL = {"done", "error"}


@dataclass
class Reader:
    """A client that follows one stream to its end across faults, as ``ssegate.js`` would."""

    name: str
    path: str
    urls: Callable[[], list[str]]  # the processes still alive, preferred first
    slow: float = 0.0  # seconds to "process" each event (a reader slower than the stream)
    topic_until: int | None = None  # a topic reader stops once it has this many events
    events: list[Event] = field(default_factory=list)
    resets: list[str] = field(default_factory=list)
    reconnects: int = 0
    last_id: str | None = None
    finished: bool = False

    async def run(self) -> None:
        deadline = time.monotonic() + _WAIT
        async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=20.0)) as client:
            while not self.finished and time.monotonic() < deadline:
                with contextlib.suppress(httpx.TransportError, httpx.StreamError):
                    await self._connect_once(client)  # fails on a killed process: reconnect
                if not self.finished:
                    self.reconnects += 1
                    await asyncio.sleep(0.1)  # retry: as the server's retry field asks

    async def _connect_once(self, client: httpx.AsyncClient) -> None:
        url = self.urls()[0] + self.path
        headers = {"last-event-id": self.last_id} if self.last_id else {}
        async with client.stream("GET", url, headers=headers) as response:
            if response.status_code == 204:  # the stream had ended at our cursor
                self.finished = True
                return
            if response.status_code != 200:
                return
            async for item in iter_stream(response):
                if not isinstance(item, Event):
                    continue
                self._take(item)
                if self.slow:
                    await asyncio.sleep(self.slow)
                if self.finished:
                    return

    def _take(self, event: Event) -> None:
        if event.event == "reset":
            self.resets.append(event.data)
            self.events.clear()  # the stream starts over from its earliest event: rebuild
            self.last_id = None
            return
        self.events.append(event)
        if event.id:
            self.last_id = event.id
        if self.topic_until is None:
            self.finished = event.event in TERMINAL
        else:
            self.finished = len(self.events) >= self.topic_until

    def history(self) -> list[tuple[str | None, str, str]]:
        return [(e.id, e.event, e.data) for e in self.events]


async def publish_all(urls: Callable[[], list[str]], count: int) -> int:
    """Publish ``tick`` 0..count-1 to the canary topic, each retried with its idempotency key
    until some process accepts it; returns how many attempts failed (Redis away, a dead process)."""
    failed = 0
    async with httpx.AsyncClient(timeout=5.0) as client:
        for n in range(count):
            body = {"data": {"n": n}, "event": "tick", "id": f"canary-{n}"}
            while True:
                try:
                    response = await client.post(
                        f"{urls()[n % len(urls())]}/v1/topics/{TOPIC}/events", json=body
                    )
                    if response.status_code in (200, 201):
                        break
                except httpx.TransportError:
                    pass
                failed += 1
                await asyncio.sleep(0.05)
            await asyncio.sleep(INTERVAL)
    return failed


async def test_canary_history_survives_redis_restart_worker_kill_upstream_reset_slow_reader(
    persistent_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Starting a server is mostly importing the vendor SDKs: seconds of wall time on a loaded
    # machine. The faults below are bounded on their own.
    monkeypatch.setattr(processes, "_START_TIMEOUT", 90.0)
    script = OpenAIScript(text=TEXT, faults=Faults(interval=INTERVAL, drop_after=RESET_AT))
    async with FakeOpenAI(script) as fake:
        env = {
            "SSEGATE_PROVIDER": "openai",
            "SSEGATE_OPENAI_API_KEY": "test",
            "SSEGATE_OPENAI_BASE_URL": fake.url,
            "SSEGATE_RETRY_MS": "100",
            "SSEGATE_KEEPALIVE_INTERVAL": "1",
        }
        async with ssegate_processes(2, persistent_redis.url, env) as (a, b):
            alive = [b.url, a.url]

            def via_b() -> list[str]:
                return list(alive)

            def via_a() -> list[str]:
                return list(reversed(alive)) if len(alive) > 1 else list(alive)

            async with httpx.AsyncClient(base_url=a.url, timeout=_WAIT) as client:
                created = (
                    await client.post(
                        "/v1/generations",
                        json={"messages": [{"role": "user", "content": "canary"}], "keep_running": True},
                    )
                ).json()
            events_path = f"/v1/generations/{created['id']}/events"
            topic_path = f"/v1/topics/{TOPIC}/events?history=all"
            ticks = 120
            readers = [
                Reader("generation on A", events_path, via_a),
                Reader("generation on B, then A", events_path, via_b),
                Reader("slow generation reader", events_path, via_b, slow=0.06),
                Reader("topic on A", topic_path, via_a, topic_until=ticks),
                Reader("topic on B, then A", topic_path, via_b, topic_until=ticks),
            ]
            tasks = [asyncio.create_task(reader.run()) for reader in readers]
            publishing = asyncio.create_task(publish_all(via_a, ticks))

            # The faults, in order, paced by what the upstream has sent.
            await asyncio.wait_for(fake.until_deltas(15), _WAIT)
            await asyncio.to_thread(persistent_redis.kill)
            await asyncio.wait_for(fake.until_deltas(fake.deltas_sent + 10), _WAIT)  # 0.4 s away
            await asyncio.to_thread(persistent_redis.start)
            await asyncio.wait_for(fake.until_deltas(60), _WAIT)
            b.kill()  # SIGKILL: its viewers and publishes move to A
            alive.remove(b.url)
            # The upstream resets its connection after RESET_AT deltas (the script's fault).
            failed_publishes = await asyncio.wait_for(publishing, _WAIT)
            await asyncio.wait_for(asyncio.gather(*tasks), _WAIT + 10)

            full_generation = Reader("the log, afterwards", events_path, lambda: [a.url])
            full_topic = Reader("the topic, afterwards", topic_path, lambda: [a.url], topic_until=ticks)
            await asyncio.wait_for(asyncio.gather(full_generation.run(), full_topic.run()), _WAIT)

    # The whole history, as the log keeps it: the text the upstream sent, then its reset.
    assert full_generation.events[-1].event == "error"
    assert json.loads(full_generation.events[-1].data)["code"] == "upstream_disconnected"
    text = "".join(json.loads(e.data)["delta"] for e in full_generation.events if e.event == "text")
    assert text == "".join(TEXT[:RESET_AT])
    assert [json.loads(e.data)["n"] for e in full_topic.events] == list(range(ticks))
    # Every reader saw exactly that, whatever happened on the way.
    for reader in readers:
        full = full_topic if reader.topic_until else full_generation
        assert reader.history() == full.history(), reader.name
        ids = [e.id for e in reader.events]
        assert len(ids) == len(set(ids)), f"{reader.name}: an event twice"
    # The faults happened and were survived, not skipped.
    assert any(r.reconnects for r in readers if "B" in r.name), "nobody was on the killed process"
    assert failed_publishes > 0  # publishes were refused while Redis was away or B was dead
    assert fake.deltas_sent >= RESET_AT
    info: dict[str, Any] = {r.name: (r.reconnects, r.resets) for r in readers}
    print(info)
