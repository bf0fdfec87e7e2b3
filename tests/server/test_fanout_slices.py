"""A batch for a large group is written a slice of sockets per turn of the event loop, so requests
that arrive meanwhile (publishes) are not held behind a thousand syscalls; every member still gets
every batch once and in order, and one that leaves mid-batch gets its copy before it goes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import pytest

from ssegate.log.base import EventLog, Handoff, LogEntry, ReadResult, Retention
from ssegate.log.memory import MemoryEventLog
from ssegate.log.redis import RedisEventLog
from ssegate.server import fanout as fanout_module
from ssegate.server.fanout import ChunkedSocket, FanOut, Member, frame
from ssegate.server.metrics import Metrics
from ssegate.topics import MARKER_EVENT
from tests.support.fanout import caught_up_group
from tests.support.transports import RecordingTransport


@asynccontextmanager
async def live_group(
    monkeypatch: pytest.MonkeyPatch, size: int, *, slice_size: int
) -> AsyncIterator[tuple[MemoryEventLog, FanOut, list[Member], list[RecordingTransport]]]:
    """``size`` caught-up viewers of one stream, the group writing ``slice_size`` sockets a turn."""
    monkeypatch.setattr(fanout_module, "WRITE_SLICE", slice_size)
    transports = [RecordingTransport() for _ in range(size)]
    # No write budget: each append is flushed on the next loop turn, which keeps the steps exact.
    async with caught_up_group("news", transports, coalesce=0.0) as (log, fanout, members):
        yield log, fanout, members, transports


def have(transports: list[RecordingTransport], entry: LogEntry) -> int:
    return sum(entry.id.encode() in t.written for t in transports)


async def publish_and_turn(log: MemoryEventLog, transports: list[RecordingTransport]) -> tuple[LogEntry, int]:
    """Append an event and let the loop turn once: the entry, and how many viewers have it."""
    entry = await log.append("news", "message", "1")
    await asyncio.sleep(0)
    return entry, have(transports, entry)


async def test_a_large_group_s_batch_is_written_over_several_loop_turns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with live_group(monkeypatch, 5, slice_size=2) as (log, _, _, transports):
        entry, written = await publish_and_turn(log, transports)
        counts = [written]
        while counts[-1] < 5:
            await asyncio.sleep(0)  # one turn of the loop
            counts.append(have(transports, entry))
            assert len(counts) < 20
    assert counts == [2, 4, 5]  # two sockets, two more, the last: three turns
    assert all(bytes(t.written) == frame(entry.wire) for t in transports)


async def test_a_group_no_larger_than_a_slice_is_written_in_one_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    async with live_group(monkeypatch, 5, slice_size=5) as (log, _, _, transports):
        _, written = await publish_and_turn(log, transports)
        assert written == 5


async def test_a_batch_of_hidden_entries_writes_nothing_to_a_large_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A topic's opening marker is never sent; framed alone it would be the empty chunk that ends
    # every viewer's response.
    async with live_group(monkeypatch, 5, slice_size=2) as (log, _, _, transports):
        await log.append("news", MARKER_EVENT, "")
        for _ in range(5):
            await asyncio.sleep(0)
        assert [bytes(t.written) for t in transports] == [b""] * 5
        entry, _ = await publish_and_turn(log, transports)
        for _ in range(5):
            await asyncio.sleep(0)
    assert [bytes(t.written) for t in transports] == [frame(entry.wire)] * 5


async def test_events_appended_during_a_sliced_write_follow_it_to_every_member_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with live_group(monkeypatch, 5, slice_size=2) as (log, _, _, transports):
        first, written = await publish_and_turn(log, transports)
        assert written == 2  # mid-batch
        second = await log.append("news", "message", "2")
        third = await log.append("news", "message", "3")
        for _ in range(20):
            await asyncio.sleep(0)
        assert have(transports, third) == 5
    expected = frame(first.wire) + frame(second.wire + third.wire)
    assert [bytes(t.written) for t in transports] == [expected] * 5


async def test_a_member_leaving_mid_batch_gets_its_copy_first_and_only_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with live_group(monkeypatch, 3, slice_size=1) as (log, fanout, members, transports):
        entry, written = await publish_and_turn(log, transports)
        assert written == 1
        waiting = next(m for m, t in zip(members, transports, strict=True) if not t.written)
        fanout.leave(waiting)  # e.g. the server ends its stream: it resumes on its own after this
        assert waiting.resumed == entry.id
        assert bytes(transports[members.index(waiting)].written) == frame(entry.wire)
        for _ in range(10):
            await asyncio.sleep(0)
    assert all(bytes(t.written) == frame(entry.wire) for t in transports)


class _PullOnly:
    """A log that offers the fan-out reads only (no LiveFeed): its groups each run a reader task."""

    def __init__(self, log: RedisEventLog) -> None:
        self._log = log

    async def read(self, stream: str, after: str | None, *, wait: float = 0.0) -> ReadResult:
        return await self._log.read(stream, after, wait=wait)


@pytest.mark.parametrize("feed", ["live", "pull"])
async def test_over_redis_a_sliced_group_gives_every_member_every_event_once_in_order(
    monkeypatch: pytest.MonkeyPatch, redis_server: str, feed: str
) -> None:
    monkeypatch.setattr(fanout_module, "WRITE_SLICE", 2)
    stream = f"sliced-{uuid.uuid4().hex}"  # the Redis server is shared with other tests
    async with RedisEventLog(redis_server) as log:
        await log.create(stream, Retention(max_events=100, max_age=60.0))
        opening = await log.append(stream, "message", "0")
        reader = log if feed == "live" else cast(EventLog, _PullOnly(log))
        fanout = FanOut(reader, keepalive=30.0, coalesce=0.0, metrics=Metrics())
        assert (fanout._live_log is None) == (feed == "pull")
        transports = [RecordingTransport() for _ in range(5)]
        members = [fanout.join(Handoff(stream, opening.id), ChunkedSocket(t)) for t in transports]
        try:
            entries = [await log.append(stream, "message", str(n)) for n in range(1, 30)]
            for _ in range(500):
                if have(transports, entries[-1]) == 5:
                    break
                await asyncio.sleep(0.01)
            # Each member's bytes are exactly the events after its join, each once, in order.
            expected = b"".join(e.wire for e in entries)
            for transport in transports:
                assert _unframed(bytes(transport.written)) == expected
        finally:
            for member in members:
                if member is not None:
                    fanout.leave(member)
            await fanout.aclose()


def _unframed(written: bytes) -> bytes:
    """The payload of a run of HTTP/1.1 chunks."""
    out = bytearray()
    while written:
        size_line, _, rest = written.partition(b"\r\n")
        size = int(size_line, 16)
        out += rest[:size]
        written = rest[size + 2 :]
    return bytes(out)
