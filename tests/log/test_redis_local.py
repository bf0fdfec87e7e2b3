"""The Redis log's local feed: this process's own appends reach its listeners and waiters from
memory (Redis's reply), and anyone else's through its one XREAD; either way with the ids Redis
stores, so a viewer here and a viewer on another process see the same stream."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import pytest

from ssegate.errors import LogError
from ssegate.log.base import LogEntry
from ssegate.log.redis import RedisEventLog
from tests.log.conformance import RETENTION, follow
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.redis


def _name() -> str:
    return f"test-{uuid.uuid4().hex}"


class Seen:
    """A listener that keeps what it is called with and says when the stream's end came."""

    def __init__(self) -> None:
        self.entries: list[LogEntry] = []
        self.nones = 0
        self.ended = asyncio.Event()

    def __call__(self, entry: LogEntry | None) -> None:
        if entry is None:
            self.nones += 1
            return
        self.entries.append(entry)
        if entry.terminal:
            self.ended.set()


async def test_a_local_listener_gets_the_producers_appends_without_reading_redis(redis_server: str) -> None:
    stream = _name()
    async with RedisEventLog(redis_server) as log:
        await log.create(stream, RETENTION)
        first = await log.append(stream, "text", "0")
        seen = Seen()
        stop: Callable[[], None] = log.listen(stream, seen, first.id)
        # Its first append that continues the tail makes the tail ours; after that this process
        # reads nothing of it back: its XREAD names the stream no more.
        second = await log.append(stream, "text", "1")
        assert log._tails[stream].local
        assert stream not in (log._followed(log._shard(stream)) or {})
        rest = [await log.append(stream, "text", str(n)) for n in range(2, 40)]
        rest.append(await log.append(stream, "done", "{}", terminal=True))
        async with asyncio.timeout(5):
            await seen.ended.wait()
        assert [e.id for e in seen.entries] == [e.id for e in [second, *rest]]
        assert log.read_now(stream, first.id).entries == seen.entries
        assert log.read_now(stream, first.id).closed
        stop()


async def test_a_local_viewer_and_a_remote_viewer_see_identical_ids(redis_server: str) -> None:
    stream = _name()
    async with RedisEventLog(redis_server) as here, RedisEventLog(redis_server) as there:
        await here.create(stream, RETENTION)
        start = await here.append(stream, "text", "start")
        local, remote = Seen(), Seen()
        here.listen(stream, local, start.id)
        there.listen(stream, remote, start.id)
        waiting = [asyncio.create_task(follow(log, stream, start.id)) for log in (here, there)]

        async def produce(n: int) -> list[LogEntry]:
            return [await here.append(stream, "text", f"{n}:{i}") for i in range(30)]

        appended = [e for batch in [await produce(0), await produce(1)] for e in batch]
        appended.append(await here.append(stream, "done", "{}", terminal=True))
        async with asyncio.timeout(10):
            await local.ended.wait()
            await remote.ended.wait()
            followed = await asyncio.gather(*waiting)
        ids = [e.id for e in appended]
        stored = [e.id for e in await follow(there, stream, start.id)]  # straight from Redis now
        assert ids == stored
        assert [e.id for e in local.entries] == ids
        assert [e.id for e in remote.entries] == ids
        assert [[e.id for e in entries] for entries in followed] == [ids, ids]
        assert [e.wire for e in local.entries] == [e.wire for e in remote.entries]


async def test_another_process_appending_to_a_locally_fed_stream_is_heard(redis_server: str) -> None:
    """The producer here feeds its viewers from its own appends and leaves the stream out of its
    XREAD; a cancel from another process (the terminal event) still reaches them: the append
    script names the process that appended before, and the other process notes it there."""
    stream = _name()
    async with RedisEventLog(redis_server, block=30.0) as here, RedisEventLog(redis_server) as there:
        await here.create(stream, RETENTION)
        first = await here.append(stream, "text", "0")
        seen = Seen()
        here.listen(stream, seen, first.id)
        mine = await here.append(stream, "text", "1")
        assert here._tails[stream].local
        async with asyncio.timeout(5):  # far less than the 30 s XREAD block: the note wakes it
            theirs = await there.append(stream, "error", "{}", terminal=True)
            await seen.ended.wait()
        assert [e.id for e in seen.entries] == [mine.id, theirs.id]


async def test_a_gap_in_the_local_feed_is_filled_from_redis(redis_server: str) -> None:
    stream = _name()
    async with RedisEventLog(redis_server) as here, RedisEventLog(redis_server) as there:
        await here.create(stream, RETENTION)
        first = await here.append(stream, "text", "0")
        seen = Seen()
        here.listen(stream, seen, first.id)
        ours = [await here.append(stream, "text", "1")]
        # Appended elsewhere, then here: our reply skips a number; the XREAD brings the missing one.
        theirs = await there.append(stream, "text", "2")
        ours.append(await here.append(stream, "text", "3"))
        ours.append(await here.append(stream, "done", "{}", terminal=True))
        async with asyncio.timeout(5):
            await seen.ended.wait()
        assert [e.id for e in seen.entries] == [e.id for e in [ours[0], theirs, *ours[1:]]]


async def test_appends_batched_across_streams_keep_each_streams_order(redis_server: str) -> None:
    """Many streams appending in the same loop turns (one pipeline per turn): each stream's
    listener, each stream's reader and Redis all see each stream's events in the order sent."""
    streams = [_name() for _ in range(12)]
    async with RedisEventLog(redis_server) as log, RedisEventLog(redis_server) as reader:
        seen: dict[str, Seen] = {}
        for stream in streams:
            await log.create(stream, RETENTION)
            start = await log.append(stream, "text", "start")
            seen[stream] = Seen()
            log.listen(stream, seen[stream], start.id)

        async def produce(stream: str) -> list[LogEntry]:
            sent = [await log.append(stream, "text", f"{stream}:{n}") for n in range(25)]
            return [*sent, await log.append(stream, "done", "{}", terminal=True)]

        produced = await asyncio.gather(*(produce(stream) for stream in streams))
        async with asyncio.timeout(10):
            for stream in streams:
                await seen[stream].ended.wait()
        for stream, sent in zip(streams, produced, strict=True):
            assert [e.data for e in sent[:-1]] == [f"{stream}:{n}" for n in range(25)]
            assert [e.seq for e in sent] == list(range(2, 28))
            assert seen[stream].entries == sent
            stored = await follow(reader, stream, None)
            assert [e.id for e in stored[1:]] == [e.id for e in sent]


async def test_read_now_refuses_what_its_memory_cannot_say(redis_server: str) -> None:
    stream = _name()
    async with RedisEventLog(redis_server) as log:
        await log.create(stream, RETENTION)
        entry = await log.append(stream, "text", "0")
        with pytest.raises(LogError):
            log.read_now(stream, entry.id)  # nobody follows it here
        log.listen(stream, Seen(), entry.id)
        assert log.read_now(stream, entry.id).entries == []
        with pytest.raises(LogError):
            log.read_now(stream, None)  # from the start: only Redis knows
        with pytest.raises(LogError):
            log.listen(_name(), Seen(), "not-an-id")


async def test_two_publishers_appending_one_stream_in_every_loop_turn_lose_nothing(redis_server: str) -> None:
    # Bench W1's shape: two publishers' requests arrive independently of the replies, so an append
    # is made while the previous turn's call is still out. Two calls in flight on two connections
    # could be answered in either order: a lower number landing after a higher one read as writes
    # a failover lost, the stream moved to a new epoch (its entries deleted) and every viewer
    # reset (W1 delivery 0.13). Every viewer here must get every event once, in order.
    stream = _name()
    async with RedisEventLog(redis_server) as log:
        await log.create(stream, RETENTION)
        start = await log.append(stream, "text", "start")
        listeners = [Seen() for _ in range(8)]
        for seen in listeners:
            log.listen(stream, seen, start.id)
        readers = [asyncio.create_task(follow(log, stream, start.id)) for _ in range(8)]
        await asyncio.sleep(0)  # the readers are waiting on the tail

        publishes: list[asyncio.Task[LogEntry]] = []
        for n in range(200):  # one publish per loop turn, alternating between the publishers
            publishes.append(asyncio.create_task(log.append(stream, "text", f"{n % 2}:{n}")))
            await asyncio.sleep(0)
        appended = list(await asyncio.gather(*publishes))
        appended.append(await log.append(stream, "done", "{}", terminal=True))

        assert {e.id.partition(":")[0] for e in appended} == {start.id.partition(":")[0]}  # no new epoch
        assert [e.seq for e in appended] == list(range(2, 203))
        async with asyncio.timeout(10):
            for seen in listeners:
                await seen.ended.wait()
            seen_by_readers = await asyncio.gather(*readers)
        ids = [e.id for e in appended]
        for seen in listeners:
            assert seen.nones == 0
            assert [e.id for e in seen.entries] == ids
        for entries in seen_by_readers:
            assert [e.id for e in entries] == ids


async def test_a_local_listener_hears_when_redis_goes_away(private_redis: RedisServer) -> None:
    """A tail fed by this process's own appends is not in the XREAD, but its viewers must hear
    of an outage as soon as the follower does (else they wait, silent, for a producer that
    cannot append): the listener is called with ``None``, and reading the tail raises."""
    stream = _name()
    async with RedisEventLog(private_redis.url) as log:
        await log.create(stream, RETENTION)
        first = await log.append(stream, "text", "0")
        heard = asyncio.Event()
        seen = Seen()

        def listener(entry: LogEntry | None) -> None:
            seen(entry)
            if entry is None:
                heard.set()

        log.listen(stream, listener, first.id)
        await log.append(stream, "text", "1")
        assert log._tails[stream].local  # fed from our appends, out of the XREAD
        await asyncio.to_thread(private_redis.kill)
        async with asyncio.timeout(8):  # the follower's block (5 s) at most
            await heard.wait()
        with pytest.raises(LogError):
            await log.read(stream, first.id, wait=1.0)
