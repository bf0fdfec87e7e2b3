"""Generations survive an event-log outage (issue 26, failure 1).

A real redis-server of the test's own (never the shared one) is killed and started again while a
generation streams from a fake upstream: with the append-only file on, the viewer's text goes on
exactly where it stopped; with no persistence, the viewer gets a ``reset`` and the generation
again from its start. Only an outage longer than ``log_outage_limit`` ends a generation, with
``error log_unavailable``, which is recorded once the log is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx
import pytest

from ssegate.codec.events import Event
from ssegate.config import Settings
from ssegate.finish import FinishedGeneration, OnFinish
from ssegate.server.app import create_app
from tests.fakes._upstream import Faults
from tests.fakes.fake_openai import FakeOpenAI, OpenAIScript
from tests.support.redis_server import RedisServer
from tests.support.servers import serve_asgi
from tests.support.sse import iter_stream

TEXT = tuple(f" w{n}" for n in range(60))  # 3 s at 20 deltas a second
_WAIT = 15.0
T = TypeVar("T")


@pytest.fixture(autouse=True)
async def no_orphaned_task_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """Fail on "Task exception was never retrieved" (a producer that died of the outage)."""
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    yield seen
    gc.collect()  # orphaned task exceptions are reported when the task is collected
    loop.set_exception_handler(previous)
    assert not seen, [context.get("message") for context in seen]


async def within(step: str, awaitable: Awaitable[T], seen: Callable[[], object] = lambda: "") -> T:
    """``awaitable`` within the test's wait; a time-out says which step it was waiting for (and
    ``seen()``: what had happened by then), where a bare TimeoutError says nothing."""
    timeout = asyncio.timeout(_WAIT)
    try:
        async with timeout:
            return await awaitable
    except TimeoutError:
        if not timeout.expired():
            raise  # not ours: a time-out inside what was awaited
        pytest.fail(f"waited {_WAIT:g} s for: {step} {seen()}".rstrip(), pytrace=False)


class Viewer:
    """Reads one generation's stream in the background, keeping every event and comment."""

    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self.events: list[Event] = []
        self.keepalives = 0
        self._changed = asyncio.Event()
        self.task = asyncio.create_task(self._read(client, url))
        self.task.add_done_callback(lambda _task: self._wake())  # an ended stream wakes until()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _read(self, client: httpx.AsyncClient, url: str) -> None:
        async with client.stream("GET", url) as response:
            assert response.status_code == 200, (response.status_code, await response.aread())
            async for item in iter_stream(response):
                if isinstance(item, Event):
                    self.events.append(item)
                else:
                    self.keepalives += 1
                self._wake()

    async def until(self, step: str, predicate: Callable[[Viewer], bool]) -> None:
        """Until ``predicate`` holds; fails naming ``step`` if it does not within the wait, or if
        the stream ended without it."""

        async def holds() -> None:
            while not predicate(self):
                if self.task.done():
                    if (failure := self.task.exception()) is not None:
                        raise AssertionError(f"the stream failed before: {step}: {self.types}") from failure
                    assert predicate(self), f"the stream ended before: {step}: {self.types}"
                await self._changed.wait()

        await within(step, holds(), lambda: f"(events so far: {self.types})")

    @property
    def types(self) -> list[str]:
        return [e.event for e in self.events]

    def texts_after_last_reset(self) -> str:
        start = max((i for i, e in enumerate(self.events) if e.event == "reset"), default=-1) + 1
        import json

        return "".join(json.loads(e.data)["delta"] for e in self.events[start:] if e.event == "text")

    def count(self, event: str) -> int:
        return sum(e.event == event for e in self.events)


@asynccontextmanager
async def gateway(
    redis: RedisServer, on_finish: OnFinish | None = None, **overrides: Any
) -> AsyncIterator[tuple[FakeOpenAI, httpx.AsyncClient]]:
    fake = FakeOpenAI(OpenAIScript(text=TEXT, faults=Faults(interval=0.05)))
    async with fake:
        settings = Settings(
            provider="openai",
            openai_api_key="test",
            openai_base_url=fake.url,
            redis_url=redis.url,
            abandon_grace=30.0,
            **overrides,
        )
        async with (
            serve_asgi(create_app(settings, on_finish=on_finish or ())) as base_url,
            httpx.AsyncClient(base_url=base_url, timeout=_WAIT) as client,
        ):
            yield fake, client


async def start(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.post("/v1/generations", json={"messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def final_state(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    """The generation's description once its state is final. The producer records the state
    after its last event has landed (one more write to Redis), so a viewer may see ``done`` a
    moment before the state says so."""

    async def described() -> dict[str, Any]:
        while True:
            body: dict[str, Any] = (await client.get(url)).json()
            if body["state"] in ("done", "error", "cancelled"):
                return body
            await asyncio.sleep(0.05)

    return await within("a final state", described())


async def outage_while_streaming(redis: RedisServer, fake: FakeOpenAI, viewer: Viewer) -> None:
    """Kill Redis after 10 deltas reached the viewer; start it again once the upstream has sent 15
    more (so they exist only in the producer's memory meanwhile)."""
    await viewer.until("10 deltas before the outage", lambda v: v.count("text") >= 10)
    await asyncio.to_thread(redis.kill)
    sent_before = fake.deltas_sent
    await within("15 more deltas sent upstream during the outage", fake.until_deltas(sent_before + 15))
    await asyncio.to_thread(redis.start)


async def test_a_redis_restart_with_persistence_resumes_every_viewer_exactly(
    persistent_redis: RedisServer,
) -> None:
    async with gateway(persistent_redis) as (fake, client):
        created = await start(client)
        viewer = Viewer(client, created["events_url"])
        await outage_while_streaming(persistent_redis, fake, viewer)
        await viewer.until("the end after the outage", lambda v: v.count("done") + v.count("error") > 0)
        described = await final_state(client, created["url"])

    assert viewer.types[-1] == "done", viewer.types
    assert "reset" not in viewer.types
    assert viewer.texts_after_last_reset() == "".join(TEXT)  # nothing lost, nothing twice
    assert len([e for e in viewer.events if e.event == "text"]) == len(TEXT)
    assert described["state"] == "done"
    assert len(fake.requests) == 1  # the upstream call went on through the outage


async def test_a_redis_that_came_back_empty_gives_viewers_a_reset_then_the_whole_generation(
    private_redis: RedisServer,
) -> None:
    async with gateway(private_redis) as (fake, client):
        created = await start(client)
        viewer = Viewer(client, created["events_url"])
        await outage_while_streaming(private_redis, fake, viewer)
        await viewer.until("the end after the outage", lambda v: v.count("done") + v.count("error") > 0)
        described = await final_state(client, created["url"])
        again = Viewer(client, created["events_url"])
        await again.until("a second viewer's done", lambda v: v.count("done") > 0)

    assert viewer.types[-1] == "done", viewer.types
    assert viewer.count("reset") == 1
    reset = next(e for e in viewer.events if e.event == "reset")
    assert reset.data == '{"reason":"epoch_changed"}'
    assert viewer.texts_after_last_reset() == "".join(TEXT)
    assert described["state"] == "done"
    assert again.texts_after_last_reset() == "".join(TEXT)
    assert "reset" not in again.types


async def test_an_outage_past_the_limit_ends_the_generation_log_unavailable_recorded_once_back(
    persistent_redis: RedisServer,
) -> None:
    finished: asyncio.Queue[FinishedGeneration] = asyncio.Queue()
    async with gateway(persistent_redis, finished.put_nowait, log_outage_limit=1.0) as (fake, client):
        created = await start(client)
        viewer = Viewer(client, created["events_url"])
        await viewer.until("5 deltas before the outage", lambda v: v.count("text") >= 5)
        began = time.monotonic()
        await asyncio.to_thread(persistent_redis.kill)
        await viewer.until("the viewer's log_unavailable error", lambda v: v.count("error") > 0)
        waited = time.monotonic() - began
        # The upstream call is closed: no tokens paid for a generation nobody can receive.
        await within("the upstream call closed early", fake.client_closed_early.wait())
        assert (await client.get(created["url"])).status_code == 503
        await asyncio.to_thread(persistent_redis.start)
        # A new viewer follows the stream until the producer has recorded its end.
        replay = Viewer(client, created["events_url"])
        await replay.until("the recorded end, once the log is back", lambda v: v.count("error") > 0)
        # The end event lands before the state that goes with it: the app's on-finish hook is
        # called once both are recorded.
        ended = await within("the on-finish hook, once the end is recorded", finished.get())
        described = await final_state(client, created["url"])

    error = viewer.events[-1]
    # It carries no id of its own: a reconnect resumes after the last real event.
    assert error.event == "error"
    assert error.id == viewer.events[-2].id
    assert '"code":"log_unavailable"' in error.data
    assert 1.0 <= waited < 10.0  # the limit plus two retries, with room for a loaded machine
    assert described["error"]["code"] == "log_unavailable"
    assert ended.error is not None
    assert ended.error["code"] == "log_unavailable"
    assert finished.empty()  # called once
    # What the upstream sent before the generation was stopped is kept, then the recorded end.
    assert "".join(TEXT).startswith(replay.texts_after_last_reset())
    assert replay.texts_after_last_reset().startswith(viewer.texts_after_last_reset())
    assert replay.types[-1] == "error"
    assert replay.count("error") == 1


async def test_a_503_names_the_log_plainly(private_redis: RedisServer) -> None:
    async with gateway(private_redis) as (_fake, client):
        await asyncio.to_thread(private_redis.kill)
        response = await client.post(
            "/v1/generations", json={"messages": [{"role": "user", "content": "hi"}]}
        )
        ready = await client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "log_unavailable"
    assert response.headers["retry-after"]
    assert ready.status_code == 503
    assert ready.json()["error"]["code"] == "log_unavailable"


# -- topic subscribers (issue 26: they wait out an outage too) ------------------------------------


async def publish_until_accepted(client: httpx.AsyncClient, topic: str, data: str) -> None:
    """Publish once the log answers again (503 log_unavailable meanwhile: the publisher retries)."""

    async def publish() -> None:
        while True:
            response = await client.post(f"/v1/topics/{topic}/events", json={"data": data})
            if response.status_code == 201:
                return
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "log_unavailable"
            await asyncio.sleep(0.05)  # the publisher's own back-off: nothing to wait on

    await within(f"the log to take the publish of {data!r}", publish())


async def hang_up(viewer: Viewer) -> None:
    """A topic stream never ends by itself: the subscriber leaves."""
    viewer.task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await viewer.task


def datas(viewer: Viewer) -> list[str]:
    return [e.data for e in viewer.events if e.event == "message"]


@pytest.mark.parametrize("url", ["/v1/topics/canary/events", "/v1/topics/events?topic=canary&topic=other"])
async def test_a_topic_subscriber_waits_out_a_redis_restart_and_resumes_exactly(
    persistent_redis: RedisServer, url: str
) -> None:
    # Keep-alives every half second: how the test sees the stream held open through the outage.
    async with gateway(persistent_redis, keepalive_interval=0.5) as (_fake, client):
        viewer = Viewer(client, url)
        await viewer.until("a keep-alive: subscribed, the stream open", lambda v: v.keepalives > 0)
        for n in range(5):
            await publish_until_accepted(client, "canary", f"before {n}")
        await viewer.until("5 events before the outage", lambda v: len(datas(v)) == 5)
        await asyncio.to_thread(persistent_redis.kill)
        kept_open = viewer.keepalives
        await viewer.until("a keep-alive in the outage: not ended", lambda v: v.keepalives > kept_open)
        await asyncio.to_thread(persistent_redis.start)
        for n in range(5):
            await publish_until_accepted(client, "canary", f"after {n}")
        await viewer.until("5 events after the outage", lambda v: len(datas(v)) == 10)
        assert not viewer.task.done()
        await hang_up(viewer)

    assert "reset" not in viewer.types
    assert datas(viewer) == [f'"before {n}"' for n in range(5)] + [f'"after {n}"' for n in range(5)]


async def test_a_topic_subscriber_gets_a_reset_with_its_reason_when_redis_came_back_empty(
    private_redis: RedisServer,
) -> None:
    async with gateway(private_redis, keepalive_interval=0.5) as (_fake, client):
        viewer = Viewer(client, "/v1/topics/canary/events")
        await viewer.until("a keep-alive: subscribed", lambda v: v.keepalives > 0)
        for n in range(3):
            await publish_until_accepted(client, "canary", f"before {n}")
        await viewer.until("3 events before the outage", lambda v: len(datas(v)) == 3)
        await asyncio.to_thread(private_redis.kill)
        kept_open = viewer.keepalives
        await viewer.until("a keep-alive during the outage", lambda v: v.keepalives > kept_open)
        await asyncio.to_thread(private_redis.start)
        # The reset comes when the subscriber's read finds the stream gone, or with the first
        # publish that makes it again (a blocked read of a missing stream just waits): before the
        # events published after the outage in either case.
        for n in range(3):
            await publish_until_accepted(client, "canary", f"after {n}")
        await viewer.until("the reset and 3 events after the outage", lambda v: len(datas(v)) == 6)
        await hang_up(viewer)

    assert viewer.count("reset") == 1
    reset = next(e for e in viewer.events if e.event == "reset")
    assert '"reason":"epoch_changed"' in reset.data
    at = viewer.events.index(reset)
    assert [e.data for e in viewer.events[at + 1 :] if e.event == "message"] == [
        f'"after {n}"' for n in range(3)
    ]
    assert datas(viewer)[:3] == [f'"before {n}"' for n in range(3)]
