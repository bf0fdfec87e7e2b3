"""The live fan-out's reader over Redis, where the log's shared reader and the group's own reads
race: what the group writes must be exactly the stream, with no comments it has no reason to send."""

from __future__ import annotations

import asyncio
import contextlib

from ssegate.log.base import Handoff, Retention
from ssegate.log.redis import RedisEventLog
from ssegate.server.fanout import ChunkedSocket, FanOut, frame
from ssegate.server.metrics import Metrics
from tests.support.transports import RecordingTransport


async def test_a_wake_up_for_entries_the_group_already_has_writes_no_keep_alive(redis_server: str) -> None:
    # Under steady publishing the group's own read (after its write budget) can take entries from
    # Redis before the log's shared reader sees them; that reader's wake-up then brings nothing
    # new. It used to answer that with a keep-alive comment to every member, once per batch.
    retention = Retention(max_events=100, max_age=60.0)
    async with RedisEventLog(redis_server) as log, RedisEventLog(redis_server) as publisher:
        await log.create("news", retention)
        first = await log.append("news", "message", "1")
        assert (await log.read("news", first.id, wait=0.05)).entries == []  # now followed, at 1
        # Hold back this process's shared reader, so the entry below reaches the group first,
        # by the group's own read: the race made deterministic.
        follower = log._shards[0].task  # a single Redis: one shard follows every stream
        assert follower is not None
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
        second = await publisher.append("news", "message", "2")

        fanout = FanOut(log, keepalive=30.0, coalesce=0.01, metrics=Metrics())
        transport = RecordingTransport()
        member = fanout.join(Handoff("news", second.id), ChunkedSocket(transport))
        assert member is not None
        try:
            # The group asked Redis itself (and got nothing after its position), then waited on the
            # shared reader, which now delivers the entry the group already has, and wakes it.
            tail = log._tails["news"]
            for _ in range(500):
                if tail.last_seq == 2:
                    break
                await asyncio.sleep(0.01)
            assert tail.last_seq == 2
            third = await publisher.append("news", "message", "3")
            for _ in range(500):
                if third.id.encode() in transport.written:
                    break
                await asyncio.sleep(0.01)
            assert bytes(transport.written) == frame(third.wire)
        finally:
            fanout.leave(member)
            await fanout.aclose()
