"""Topics on a real Redis: resume exactly across a restart of the server process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as aioredis

from tests.server.conftest import ServerFactory
from tests.support.servers import free_port
from tests.topics.helpers import datas, publish, subscribe

pytestmark = pytest.mark.redis


@contextlib.asynccontextmanager
async def ssegate_process(redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """``ssegate serve`` in its own process, as an operator runs it; stopped with SIGTERM."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "ssegate", "serve", "--port", str(port), "--redis", redis_url),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            for _ in range(1000):
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/healthz")).status_code == 200:
                        break
                assert proc.returncode is None, "ssegate serve exited"
                await asyncio.sleep(0.01)  # polling a process that offers no readiness signal
            yield client
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()


async def test_topic_resume_is_exact_across_a_server_restart_on_redis(redis_url: str) -> None:
    async with ssegate_process(redis_url) as client:
        for n in range(3):
            await publish(client, "jobs/42", n)
        async with subscribe(client, "/v1/topics/jobs/42/events", history="all") as stream:
            events = await stream.events(2)
    assert datas(events) == [0, 1]
    async with ssegate_process(redis_url) as client:
        await publish(client, "jobs/42", 3)
        async with subscribe(client, "/v1/topics/jobs/42/events", last_event_id=events[-1].id) as stream:
            assert datas(await stream.events(2)) == [2, 3]


async def test_topics_multi_resume_is_exact_on_redis(ssegate_server: ServerFactory, redis_url: str) -> None:
    async with ssegate_server(redis_url=redis_url) as client:
        async with subscribe(client, "/v1/topics/events", topic=["x", "y"]) as stream:
            await publish(client, "x", "x1")
            [event] = await stream.events(1)
        await publish(client, "y", "y1")
        await publish(client, "x", "x2")
    async with (
        ssegate_server(redis_url=redis_url) as client,
        subscribe(client, "/v1/topics/events", last_event_id=event.id, topic=["x", "y"]) as stream,
    ):
        assert sorted(datas(await stream.events(2))) == ["x2", "y1"]


async def test_topic_lost_from_redis_resumes_with_reset_epoch_changed(
    ssegate_server: ServerFactory, redis_url: str
) -> None:
    async with ssegate_server(redis_url=redis_url) as client:
        seen = await publish(client, "lost", "before")
        redis = aioredis.Redis.from_url(redis_url)
        await redis.flushall()  # Redis restarted without persistence, as far as ssegate can tell
        await redis.aclose()
        await publish(client, "lost", "after")
        async with subscribe(client, "/v1/topics/lost/events", last_event_id=seen) as stream:
            events = await stream.events(2)
    assert json.loads(events[0].data) == {"reason": "epoch_changed", "topic": "lost"}
    assert datas(events[1:]) == ["after"]


async def test_topic_live_publish_reaches_many_subscribers_on_redis(
    ssegate_server: ServerFactory, redis_url: str
) -> None:
    async with ssegate_server(redis_url=redis_url) as client, contextlib.AsyncExitStack() as stack:
        streams = [
            await stack.enter_async_context(subscribe(client, "/v1/topics/fan/events")) for _ in range(5)
        ]
        await publish(client, "fan", {"n": 1})
        for stream in streams:
            assert datas(await stream.events(1)) == [{"n": 1}]
