"""A producer's appends to Redis without a round trip waited per event (QueueingLog, DurableAppender.push).

The appends go in flight together, their replies come back in order, and nothing is lost or
doubled when Redis goes away with some of them in flight: the appender finds out which landed
and sends the rest, in order, once Redis is back.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from ssegate.errors import StreamClosed
from ssegate.log.appender import DurableAppender, OutagePolicy
from ssegate.log.base import LogEntry, QueueingLog
from ssegate.log.memory import MemoryEventLog
from ssegate.log.redis import RedisEventLog
from tests.log.conformance import RETENTION
from tests.support.redis_server import RedisServer

POLICY = OutagePolicy(limit=20.0, buffer=1000, first_retry=0.01, max_retry=0.1)
_WAIT = 20.0


async def everything(log: RedisEventLog, stream: str) -> list[LogEntry]:
    entries: list[LogEntry] = []
    after = None
    while True:
        result = await log.read(stream, after)
        entries += result.entries
        if not result.entries:
            return entries
        after = result.last_id


@pytest.fixture
async def log(redis_server: str) -> AsyncIterator[RedisEventLog]:
    async with RedisEventLog(redis_server, timeout=2.0) as log:
        yield log


def appender(log: RedisEventLog, stream: str) -> DurableAppender:
    return DurableAppender(log, stream, RETENTION, policy=POLICY, meta={})


async def new_stream(log: RedisEventLog) -> tuple[str, DurableAppender]:
    """A new stream, and a producer's appender for it."""
    stream = f"q:{uuid.uuid4().hex}"
    await log.create(stream, RETENTION)
    return stream, appender(log, stream)


async def test_the_redis_log_queues_appends_and_the_embedded_one_does_not() -> None:
    assert isinstance(RedisEventLog("redis://127.0.0.1:1/0"), QueueingLog)
    async with MemoryEventLog() as memory:
        assert not isinstance(memory, QueueingLog)
        with pytest.raises(AssertionError):
            DurableAppender(memory, "s", RETENTION, policy=POLICY, meta={}).push("text", "x")


async def test_pushed_events_land_once_in_order(log: RedisEventLog) -> None:
    stream, out = await new_stream(log)
    for n in range(300):  # no await between them: all in flight together
        out.push("text", f"token {n}")
    await asyncio.wait_for(out.drain(), _WAIT)

    landed = await everything(log, stream)
    assert [entry.data for entry in landed] == [f"token {n}" for n in range(300)]
    assert [entry.seq for entry in landed] == list(range(1, 301))


async def test_metadata_waits_for_the_events_in_flight(log: RedisEventLog) -> None:
    stream, out = await new_stream(log)
    for n in range(50):
        out.push("text", str(n))
    await asyncio.wait_for(out.set_meta({"state": "done"}), _WAIT)

    # The state never says more than the events do: all 50 landed before it was written.
    assert (await log.get_meta(stream))["state"] == "done"
    assert len(await everything(log, stream)) == 50


async def test_a_stream_ended_elsewhere_stops_the_pushing_producer(
    log: RedisEventLog, redis_server: str
) -> None:
    stream, out = await new_stream(log)
    async with RedisEventLog(redis_server) as elsewhere:  # another process cancels it
        await elsewhere.append(stream, "error", "cancelled", terminal=True)
    out.push("text", "too late")
    with pytest.raises(StreamClosed):
        await asyncio.wait_for(out.drain(), _WAIT)
    with pytest.raises(StreamClosed):
        out.push("text", "later still")
    assert [entry.data for entry in await everything(log, stream)] == ["cancelled"]


async def test_redis_killed_with_appends_in_flight_loses_and_doubles_nothing(
    persistent_redis: RedisServer,
) -> None:
    async with RedisEventLog(persistent_redis.url, timeout=2.0) as log:
        stream, out = await new_stream(log)
        for n in range(100):
            out.push("text", str(n))
        await asyncio.sleep(0)  # the batch goes out: its reply is what Redis takes with it
        await asyncio.sleep(0)
        persistent_redis.kill()
        for n in range(100, 200):  # queued behind the call that fails: held back, then resent
            out.push("text", str(n))
        draining = asyncio.ensure_future(out.drain())
        await asyncio.sleep(0.3)  # a few failed retries
        assert not draining.done()
        await asyncio.to_thread(persistent_redis.start)
        await asyncio.wait_for(draining, _WAIT)

        landed = await everything(log, stream)
    assert out.outages >= 1
    assert [entry.data for entry in landed] == [str(n) for n in range(200)]
    assert len({entry.seq for entry in landed}) == 200


async def test_appends_that_landed_after_their_replies_were_lost_are_not_sent_again(
    persistent_redis: RedisServer,
) -> None:
    async with RedisEventLog(persistent_redis.url, timeout=0.3) as log:
        stream, out = await new_stream(log)
        out.push("text", "0")
        await asyncio.wait_for(out.drain(), _WAIT)  # the appends' connection is open
        persistent_redis.freeze()
        try:
            for n in range(1, 150):  # sent to a server that takes the bytes but does not answer
                out.push("text", str(n))
            draining = asyncio.ensure_future(out.drain())
            await asyncio.sleep(1.0)  # the call times out, its reply is lost; retries time out too
            assert out.outages == 1
        finally:
            persistent_redis.thaw()  # the call runs now: its appends land, unanswered
        await asyncio.wait_for(draining, _WAIT)

        landed = await everything(log, stream)
    assert [entry.data for entry in landed] == [str(n) for n in range(150)]
