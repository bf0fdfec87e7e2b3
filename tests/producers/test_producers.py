"""An app's own producers through ssegate, on real sockets: the guarantees of a built-in provider.

Each producer here records what happened to it (``Probe``): whether its ``finally`` ran and with
which exception its ``await`` was interrupted, so a cancel that merely stopped reading (leaving
the producer running) fails the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from ssegate.config import Settings
from ssegate.gateway import stream_key
from ssegate.mount import gateway_of
from ssegate.producers import (
    Data,
    Emitter,
    Finish,
    Generation,
    ProducerError,
    Status,
    Text,
    Thinking,
    ToolCall,
    Usage,
    producer,
    start,
)
from ssegate.server.app import App, create_app
from tests.support.servers import serve_asgi
from tests.support.sse import Received, read_stream

_WAIT = 10.0


class Probe:
    """What a producer went through."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.finished = asyncio.Event()
        self.interrupted_by: type[BaseException] | None = None
        self.seen: list[Generation] = []

    @contextlib.contextmanager
    def watching(self, generation: Generation) -> Any:
        self.seen.append(generation)
        self.started.set()
        try:
            yield
        except BaseException as exc:
            self.interrupted_by = type(exc)
            raise
        finally:
            self.finished.set()


PROBE = Probe()


@producer("my-agent", model="agent-1")
async def my_agent(generation: Generation) -> AsyncIterator[Any]:
    with PROBE.watching(generation):
        yield Status("searching", "Looking it up", progress=0.25)
        yield Thinking("the user wants a greeting")
        yield ToolCall("call_1", "search", {"q": generation.prompt})
        yield Data("citations", [{"title": "SSE", "url": "https://example.com"}])
        for word in ("Hello", ", ", "world"):
            await asyncio.sleep(0)
            yield Text(word)
        yield Usage(input_tokens=12, output_tokens=3)


@producer("stuck")
async def stuck(generation: Generation) -> AsyncIterator[Any]:
    with PROBE.watching(generation):
        await asyncio.Event().wait()  # never yields anything
        yield Text("unreachable")


@producer("broken")
async def broken(generation: Generation) -> AsyncIterator[Any]:
    yield Text("half an answer")
    raise KeyError("secret internals")


@producer("refusing")
async def refusing(generation: Generation) -> AsyncIterator[Any]:
    yield Text("let me check")
    raise ProducerError("quota_exceeded", "your plan allows 10 answers a day", retryable=True)


@producer("flood")
async def flood(generation: Generation) -> AsyncIterator[Any]:
    for i in range(10_000):
        yield Text(f"{i} ")


@producer("slow")
async def slow(generation: Generation) -> AsyncIterator[Any]:
    for i in range(8):
        await asyncio.sleep(0.05)
        yield Text(f"step {i}. ")
    yield Finish("tool_calls")


@producer("emitting")
async def emitting(generation: Generation, emit: Emitter) -> None:
    with PROBE.watching(generation):
        await emit.status("working")
        await emit.text("from ")
        await emit(Text("an emitter"))
        if generation.prompt == "hang":
            await asyncio.Event().wait()
        if generation.prompt == "fail":
            raise RuntimeError("boom")
        await emit.usage(output_tokens=2)


ALL = [my_agent, stuck, broken, refusing, flood, slow, emitting]


@contextlib.asynccontextmanager
async def server(**settings: Any) -> AsyncIterator[tuple[App, httpx.AsyncClient]]:
    global PROBE
    PROBE = Probe()
    app = create_app(Settings(**{"abandon_grace": 30.0, **settings}), producers=ALL)
    async with serve_asgi(app) as url, httpx.AsyncClient(base_url=url, timeout=_WAIT) as client:
        yield app, client


def ask(provider: str, prompt: str = "Say hello") -> dict[str, Any]:
    return {"provider": provider, "messages": [{"role": "user", "content": prompt}]}


async def generate(client: httpx.AsyncClient, provider: str, prompt: str = "Say hello") -> Received:
    return await read_stream(
        client,
        "POST",
        "/v1/generations",
        json_body=ask(provider, prompt),
        headers={"accept": "text/event-stream"},
    )


async def test_registered_producer_runs_by_name_with_every_event_kind() -> None:
    async with server() as (_, client):
        providers = {p["name"] for p in (await client.get("/v1/providers")).json()}
        assert "my-agent" in providers
        got = await generate(client, "my-agent")
        assert got.status == 200
        assert got.types == [
            "start",
            "status",
            "thinking",
            "tool_call",
            "tool_call",
            "tool_call",
            "data",
            "text",
            "text",
            "text",
            "usage",
            "done",
        ]
        assert got.data("start")[0]["model"] == "agent-1"
        assert got.data("status")[0] == {"stage": "searching", "message": "Looking it up", "progress": 0.25}
        calls = got.data("tool_call")
        assert [c["phase"] for c in calls] == ["start", "delta", "end"]
        assert calls[0]["name"] == "search"
        assert calls[1]["delta"] == '{"q":"Say hello"}'
        assert got.data("data")[0] == {
            "name": "citations",
            "value": [{"title": "SSE", "url": "https://example.com"}],
        }
        assert got.text == "Hello, world"
        assert got.data("done")[0] == {
            "finish_reason": "stop",
            "usage": {"input_tokens": 12, "output_tokens": 3},
        }
        # The producer knew its generation.
        assert PROBE.seen[0].id == got.headers["x-generation-id"]
        assert PROBE.seen[0].owner == "local"
        # Resume exactly from any point.
        events_url = got.headers["location"]
        cut = got.events[4].id
        assert cut is not None
        rest = await read_stream(client, "GET", events_url, headers={"last-event-id": cut})
        assert [(e.id, e.data) for e in rest.events] == [(e.id, e.data) for e in got.events[5:]]


async def test_unknown_provider_names_the_registered_ones() -> None:
    async with server() as (_, client):
        answer = await client.post("/v1/generations", json=ask("no-such-agent"))
        assert answer.status_code == 400
        assert "my-agent" in answer.json()["error"]["message"]


async def test_an_exception_becomes_one_error_event_without_its_details() -> None:
    async with server() as (_, client):
        got = await generate(client, "broken")
        assert got.types == ["start", "text", "error"]
        error = got.data("error")[0]
        assert error == {
            "code": "producer_failed",
            "message": "the producer failed (KeyError)",
            "retryable": False,
        }
        assert "secret" not in got.raw.decode() + "".join(e.data for e in got.events)


async def test_a_producer_error_says_its_own_code() -> None:
    async with server() as (_, client):
        got = await generate(client, "refusing")
        assert got.types == ["start", "text", "error"]
        assert got.data("error")[0] == {
            "code": "quota_exceeded",
            "message": "your plan allows 10 answers a day",
            "retryable": True,
        }


async def test_cancel_interrupts_a_producer_that_never_yields() -> None:
    async with server() as (app, client):
        created = (await client.post("/v1/generations", json=ask("stuck"))).json()
        await asyncio.wait_for(PROBE.started.wait(), _WAIT)
        assert (await client.post(created["cancel_url"])).status_code == 202
        await asyncio.wait_for(PROBE.finished.wait(), _WAIT)
        assert PROBE.interrupted_by is asyncio.CancelledError
        got = await read_stream(client, "GET", created["events_url"])
        assert got.types == ["start", "done"]
        assert got.data("done")[0]["finish_reason"] == "cancelled"
        await _no_producer_left(app)


async def test_an_abandoned_producer_is_cancelled_at_its_await() -> None:
    async with server(abandon_grace=0.2, first_viewer_grace=0.2) as (app, client):
        created = (await client.post("/v1/generations", json=ask("stuck"))).json()
        await asyncio.wait_for(PROBE.finished.wait(), _WAIT)  # nobody watched: abandoned
        assert PROBE.interrupted_by is asyncio.CancelledError
        got = await read_stream(client, "GET", created["events_url"])
        done = got.data("done")[-1]
        assert (done["finish_reason"], done["reason"]) == ("cancelled", "abandoned")
        await _no_producer_left(app)


async def test_ten_thousand_quick_events_all_arrive_and_memory_returns() -> None:
    expected = "".join(f"{i} " for i in range(10_000))

    async def flood_once() -> str:
        got = await generate(client, "flood")
        assert got.types[-1] == "done"
        assert got.text == expected
        return got.headers["x-generation-id"]

    async with server() as (app, client):
        gateway = gateway_of(app)
        # Warm up (imports, caches, free lists that grow on a second run too), then measure.
        for _ in range(2):
            await gateway.log.expire(stream_key(await flood_once()), 0)
        gc.collect()
        idle_tasks = len(asyncio.all_tasks())
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            generation_id = await flood_once()
            held = tracemalloc.get_traced_memory()[0]
            # The log holds the events for its retention; once they go, so must everything else.
            await gateway.log.expire(stream_key(generation_id), 0)
            await _no_producer_left(app)
            await _tasks_back_to(idle_tasks)  # the server's side of the stream has ended too
            # What the fan-out held of the last batch goes on its next loop callbacks: a bounded wait.
            for _ in range(100):
                gc.collect()
                after = tracemalloc.get_traced_memory()[0]
                if after - before < 64 * 1024:
                    break
                await asyncio.sleep(0.02)
        finally:
            tracemalloc.stop()
        assert held - before > 500_000, "the log should have held the events meanwhile"
        assert after - before < 64 * 1024, f"{after - before} bytes stayed after the generation ended"


async def run_to_its_end(client: httpx.AsyncClient, kind: str) -> tuple[str, str]:
    """One generation of ``kind`` run to its end the way its test does: ``(id, terminal event)``."""
    if kind == "stuck":  # never yields: cancelled while a viewer waits
        created = (await client.post("/v1/generations", json=ask("stuck"))).json()
        viewer = asyncio.create_task(read_stream(client, "GET", created["events_url"]))
        await asyncio.wait_for(PROBE.started.wait(), _WAIT)
        await client.post(created["cancel_url"])
        got = await asyncio.wait_for(viewer, _WAIT)
        return created["id"], got.types[-1]
    if kind == "slow":  # three viewers, each faster than the producer
        created = (await client.post("/v1/generations", json=ask("slow"))).json()
        views = await asyncio.gather(*(read_stream(client, "GET", created["events_url"]) for _ in range(3)))
        assert len({v.types[-1] for v in views}) == 1
        return created["id"], views[0].types[-1]
    got = await generate(client, kind)
    return got.headers["x-generation-id"], got.types[-1]


@pytest.mark.parametrize(("kind", "terminal"), [("broken", "error"), ("stuck", "done"), ("slow", "done")])
async def test_memory_returns_after_each_kind_of_producer(kind: str, terminal: str) -> None:
    async with server() as (app, client):
        gateway = gateway_of(app)
        for _ in range(2):  # warm up, as above
            generation_id, _ = await run_to_its_end(client, kind)
            await gateway.log.expire(stream_key(generation_id), 0)
            PROBE.started.clear()
        gc.collect()
        idle_tasks = len(asyncio.all_tasks())
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            generation_id, ended_with = await run_to_its_end(client, kind)
            await gateway.log.expire(stream_key(generation_id), 0)
            await _no_producer_left(app)
            await _tasks_back_to(idle_tasks)
            for _ in range(100):
                gc.collect()
                after = tracemalloc.get_traced_memory()[0]
                if after - before < 32 * 1024:
                    break
                await asyncio.sleep(0.02)
        finally:
            tracemalloc.stop()
        assert ended_with == terminal
        assert after - before < 32 * 1024, f"{after - before} bytes stayed after a {kind!r} generation"


async def test_a_producer_slower_than_its_viewers() -> None:
    async with server() as (_, client):
        created = (await client.post("/v1/generations", json=ask("slow"))).json()
        viewers = await asyncio.wait_for(
            asyncio.gather(*(read_stream(client, "GET", created["events_url"]) for _ in range(3))), _WAIT
        )
        expected = "".join(f"step {i}. " for i in range(8))
        for got in viewers:
            assert got.text == expected
            assert got.types[-1] == "done"
            assert got.data("done")[0]["finish_reason"] == "tool_calls"
        assert len({tuple(e.id for e in got.events) for got in viewers}) == 1


async def test_emitter_style_producer_streams_and_fails_like_the_others() -> None:
    async with server() as (app, client):
        got = await generate(client, "emitting", "go")
        assert got.types == ["start", "status", "text", "text", "usage", "done"]
        assert got.text == "from an emitter"
        failed = await generate(client, "emitting", "fail")
        assert failed.types[-1] == "error"
        assert failed.data("error")[0]["code"] == "producer_failed"
        await _no_producer_left(app)


async def test_emitter_style_producer_is_cancelled_at_its_await() -> None:
    async with server() as (app, client):
        created = (await client.post("/v1/generations", json=ask("emitting", "hang"))).json()
        got = await read_stream(client, "GET", created["events_url"], max_events=3)
        assert got.text == "from "
        PROBE.finished.clear()
        assert (await client.post(created["cancel_url"])).status_code == 202
        await asyncio.wait_for(PROBE.finished.wait(), _WAIT)
        assert PROBE.interrupted_by is asyncio.CancelledError
        await _no_producer_left(app)


async def test_start_from_an_app_route_with_metadata() -> None:
    async with server() as (app, client):
        gateway = gateway_of(app)
        meta = await start(gateway, my_agent, "Hi there", owner="local", metadata={"conversation": 7})
        got = await read_stream(client, "GET", f"/v1/generations/{meta['id']}/events")
        assert got.text == "Hello, world"
        assert PROBE.seen[0].metadata == {"conversation": 7}
        assert PROBE.seen[0].prompt == "Hi there"
        described = (await client.get(f"/v1/generations/{meta['id']}")).json()
        assert described["metadata"] == {"conversation": 7}
        assert described["provider"] == "my-agent"


def test_producer_names_are_checked() -> None:
    with pytest.raises(ValueError, match="name of its own"):
        producer("demo")(my_agent.function)
    with pytest.raises(ValueError, match="two producers"):
        create_app(Settings(), producers=[my_agent, my_agent])


async def _no_producer_left(app: App) -> None:
    """Nothing of a finished generation keeps running: no producer task, no local state."""
    gateway = gateway_of(app)
    for _ in range(100):
        running = [t for t in asyncio.all_tasks() if t.get_name().startswith("ssegate-generation-")]
        if not running and not gateway._local:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"still running: {running}, local state: {gateway._local}")


async def _tasks_back_to(count: int) -> None:
    for _ in range(200):
        if len(asyncio.all_tasks()) <= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"tasks still running: {asyncio.all_tasks()}")
