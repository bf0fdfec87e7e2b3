"""The live fan-out over Redis: no reader task per group, the log calls it back (a
:class:`~ssegate.log.base.LiveFeed`) with the producer's appends from memory when the producer
runs in this process, and with what the process's one XREAD brings otherwise. What the group
writes must be exactly the stream, with no comments it has no reason to send."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from ssegate.log.base import Handoff, LogEntry, Retention
from ssegate.log.redis import RedisEventLog
from ssegate.server.fanout import ChunkedSocket, FanOut, Member
from ssegate.server.metrics import Metrics
from tests.support.transports import RecordingTransport

RETENTION = Retention(max_events=100, max_age=60.0)


class WatchedTransport(RecordingTransport):
    """A recording transport that says when something was written."""

    def __init__(self) -> None:
        super().__init__()
        self.wrote = asyncio.Event()

    def write(self, data: bytes) -> None:
        super().write(data)
        self.wrote.set()


async def _written(transport: WatchedTransport, entries: list[LogEntry]) -> None:
    """Wait until the last entry's id is written (the group writes as the log calls back)."""
    async with asyncio.timeout(10):
        while entries[-1].id.encode() not in transport.written:
            transport.wrote.clear()
            await transport.wrote.wait()


def _payload(transport: RecordingTransport) -> bytes:
    """The written HTTP chunks' contents, framing taken off."""
    data, out = bytes(transport.written), b""
    while data:
        size, _, rest = data.partition(b"\r\n")
        length = int(size, 16)
        out += rest[:length]
        data = rest[length + 2 :]
    return out


@pytest.mark.parametrize("producer_here", [True, False], ids=["local-producer", "remote-producer"])
async def test_a_group_over_redis_writes_exactly_the_stream(redis_server: str, producer_here: bool) -> None:
    news = f"news-{uuid.uuid4().hex}"
    async with RedisEventLog(redis_server) as log, RedisEventLog(redis_server) as elsewhere:
        producer = log if producer_here else elsewhere
        await log.create(news, RETENTION)
        first = await producer.append(news, "message", "0")
        fanout = FanOut(log, keepalive=30.0, coalesce=0.01, metrics=Metrics())
        transport = WatchedTransport()
        member = fanout.join(Handoff(news, first.id), ChunkedSocket(transport))
        assert member is not None
        assert fanout._groups[news].task is None  # no reader task
        try:
            appended = []
            for n in range(1, 30):
                appended.append(await producer.append(news, "message", str(n)))
                if n % 7 == 0:
                    await asyncio.sleep(0.02)  # several write budgets, not one batch
            await _written(transport, appended)
            assert _payload(transport) == b"".join(e.wire for e in appended)
            assert member.resumed is None  # still in the group
            assert log._tails[news].local is producer_here
        finally:
            fanout.leave(member)
            await fanout.aclose()


async def test_a_group_the_logs_memory_cannot_serve_sends_its_members_back(redis_server: str) -> None:
    # Joined at a position the log's tail does not hold (it began following later): the members
    # go back to reading Redis on their own, from where they were, rather than miss anything.
    news = f"news-{uuid.uuid4().hex}"
    async with RedisEventLog(redis_server) as log, RedisEventLog(redis_server) as elsewhere:
        await log.create(news, RETENTION)
        early = await log.append(news, "message", "0")
        later = await log.append(news, "message", "1")
        seen: list[LogEntry | None] = []
        stop = log.listen(news, seen.append, later.id)  # the tail starts after `later`
        try:
            fanout = FanOut(log, keepalive=30.0, coalesce=0.01, metrics=Metrics())
            transport = RecordingTransport()
            woken = asyncio.Event()
            socket = ChunkedSocket(transport, woken.set)
            member = fanout.join(Handoff(news, early.id), socket, waiting=True)
            assert isinstance(member, Member)
            async with asyncio.timeout(10):
                await woken.wait()
            assert member.resumed == early.id
            assert bytes(transport.written) == b""
            await fanout.aclose()
            await elsewhere.append(news, "message", "2")  # the log goes on following
        finally:
            stop()


async def test_two_publishers_in_every_loop_turn_reach_every_member_exactly(redis_server: str) -> None:
    # Bench W1's shape in small: two publishers' appends to one topic made while the previous
    # append's call is still out (each publish its own request). Every member must get exactly
    # the stream and stay in the group: before appends were sent one call at a time, replies
    # landing out of order moved the stream to a new epoch and sent every member back (reset).
    news = f"news-{uuid.uuid4().hex}"
    async with RedisEventLog(redis_server) as log:
        await log.create(news, RETENTION)
        first = await log.append(news, "message", "start")
        fanout = FanOut(log, keepalive=30.0, coalesce=0.01, metrics=Metrics())
        transports = [WatchedTransport() for _ in range(20)]
        members = [fanout.join(Handoff(news, first.id), ChunkedSocket(t)) for t in transports]
        try:
            publishes: list[asyncio.Task[LogEntry]] = []
            for n in range(80):  # one publish per loop turn, alternating between the publishers
                publishes.append(asyncio.create_task(log.append(news, "message", f"{n % 2}:{n}")))
                await asyncio.sleep(0)
            appended = list(await asyncio.gather(*publishes))
            for transport in transports:
                await _written(transport, appended)
            assert [e.seq for e in appended] == list(range(2, 82))
            for member, transport in zip(members, transports, strict=True):
                assert member is not None
                assert member.resumed is None  # never sent back
                assert _payload(transport) == b"".join(e.wire for e in appended)
        finally:
            for member in members:
                if member is not None:
                    fanout.leave(member)
            await fanout.aclose()
