"""The Redis log through Sentinel (a real redis-server --sentinel on loopback): a
``redis+sentinel://`` URL finds the primary, and after a Sentinel failover finds the new one."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from ssegate.errors import LogError
from ssegate.log import open_event_log
from ssegate.log.redis import RedisEventLog
from tests.log.conformance import RETENTION, follow
from tests.support.redis_sentinel import SERVICE, SentinelServers

pytestmark = pytest.mark.redis


async def test_sentinel_url_streams_through_the_primary_and_follows_a_failover(
    redis_sentinel: SentinelServers,
) -> None:
    stream = f"test-{uuid.uuid4().hex}"
    log = open_event_log(redis_sentinel.url)
    assert isinstance(log, RedisEventLog)
    async with log, RedisEventLog(redis_sentinel.url) as reader:
        await log.create(stream, RETENTION)
        before = [await log.append(stream, "text", str(n)) for n in range(5)]
        assert [e.id for e in (await reader.read(stream, None)).entries] == [e.id for e in before]
        with redis_sentinel.primary.client() as client:
            client.execute_command("WAIT", 1, 5000)  # the replica has every write: a clean failover

        with redis_sentinel.sentinel.client() as client:
            client.execute_command("SENTINEL", "FAILOVER", SERVICE)
        redis_sentinel.wait_until(
            lambda: redis_sentinel.primary_port() == redis_sentinel.replica.port, time.monotonic() + 20
        )

        viewer = asyncio.create_task(follow(reader, stream, before[-1].id))
        after = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while len(after) < 5:  # the old primary's connections fail (or it refuses writes) once
            try:
                after.append(await log.append(stream, "text", f"after {len(after)}"))
            except LogError:
                assert loop.time() < deadline, "appends never reached the new primary"
                await asyncio.sleep(0.1)
        after.append(await log.append(stream, "done", "{}", terminal=True))
        async with asyncio.timeout(20):
            seen = await viewer

    assert [e.id for e in after] == [f"{before[0].id.rpartition(':')[0]}:{n}" for n in range(6, 12)]
    assert [e.id for e in seen] == [e.id for e in after]  # resumed exactly across the failover
    # Landed on the new primary, not on the old one (which stays writable until a sentinel demotes
    # it, then drops them): what a viewer connecting after that gets.
    async with RedisEventLog(f"redis://127.0.0.1:{redis_sentinel.replica.port}") as new_primary:
        kept = await new_primary.read(stream, before[-1].id)
    assert [e.id for e in kept.entries] == [e.id for e in after]
