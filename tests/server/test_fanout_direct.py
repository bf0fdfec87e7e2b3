"""Over the embedded log, the next entry of a caught-up group is taken as it is appended, without
reading the log back, and written at the end of that loop turn together with every other stream's:
one burst of writes per turn. A burst of appends still reaches every viewer once and in order."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from ssegate.log.base import Handoff, Retention
from ssegate.log.memory import MemoryEventLog
from ssegate.server.fanout import ChunkedSocket, FanOut, frame
from ssegate.server.metrics import Metrics
from tests.support.fanout import caught_up_group
from tests.support.transports import RecordingTransport


class SlowTransport(RecordingTransport):
    """A socket whose writes take a millisecond, as a loaded machine's can."""

    def write(self, data: bytes) -> None:
        time.sleep(0.001)
        super().write(data)


class TimelineTransport(RecordingTransport):
    """A socket that notes each write in a timeline shared with the test."""

    def __init__(self, name: str, timeline: list[str]) -> None:
        super().__init__()
        self.name = name
        self.timeline = timeline

    def write(self, data: bytes) -> None:
        self.timeline.append(f"write {self.name}")
        super().write(data)


@asynccontextmanager
async def caught_up_viewers(
    count: int, *, coalesce: float, slow: bool = False
) -> AsyncIterator[tuple[MemoryEventLog, list[RecordingTransport], FanOut]]:
    transports = [SlowTransport() if slow else RecordingTransport() for _ in range(count)]
    async with caught_up_group("answer", transports, coalesce=coalesce, opening="start") as (log, fanout, _):
        yield log, transports, fanout


async def past_the_write_budget(fanout: FanOut, stream: str) -> None:
    """Until the group has written what it had and its next write may go out at once (the budget
    depends on how long the last write took: on a loaded machine a "1 ms" write takes longer)."""
    group = fanout._groups[stream]
    loop = asyncio.get_running_loop()
    for _ in range(1000):
        idle = group.flush_handle is None and group.pending is None and group.owed is None
        if idle and loop.time() >= group.last_write + group.budget:
            return
        await asyncio.sleep(0.001)
    raise AssertionError("the write budget never ended")


def count_log_reads(log: MemoryEventLog, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    reads: list[str] = []
    read_now = log.read_now

    def counted(stream: str, after: str) -> object:
        reads.append(stream)
        return read_now(stream, after)

    monkeypatch.setattr(log, "read_now", counted)
    return reads


async def test_the_next_token_goes_out_at_the_end_of_its_turn_without_a_log_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with caught_up_viewers(2, coalesce=0.0) as (log, transports, _):
        first = await log.append("answer", "text", '{"delta":"Hel"}')
        await asyncio.sleep(0)  # the group learns where it stands from one read of the log
        reads = count_log_reads(log, monkeypatch)
        second = await log.append("answer", "text", '{"delta":"lo"}')
        assert all(bytes(t.written) == frame(first.wire) for t in transports)  # owed, not yet out
        await asyncio.sleep(0)
        assert all(bytes(t.written) == frame(first.wire) + frame(second.wire) for t in transports)
        assert reads == []


async def test_tokens_of_many_streams_in_one_turn_are_written_back_to_back() -> None:
    timeline: list[str] = []
    log = MemoryEventLog()
    fanout = FanOut(log, keepalive=30.0, coalesce=0.0, metrics=Metrics())
    streams = ["a", "b", "c"]
    transports = {}
    for stream in streams:
        await log.create(stream, Retention(max_events=100, max_age=60.0))
        opening = await log.append(stream, "start", "0")
        transports[stream] = TimelineTransport(stream, timeline)
        assert fanout.join(Handoff(stream, opening.id), ChunkedSocket(transports[stream])) is not None
    await asyncio.sleep(0)
    for stream in streams:  # each group's first entry goes through a flush: they learn their place
        await log.append(stream, "text", '{"delta":"x"}')
    await asyncio.sleep(0)
    timeline.clear()
    try:
        appended = {}
        for stream in streams:  # one poll's worth of upstream reads, each appending a token
            appended[stream] = log.append_now(stream, "text", '{"delta":"y"}')
            timeline.append(f"append {stream}")
        await asyncio.sleep(0)
        assert timeline == [*(f"append {s}" for s in streams), *(f"write {s}" for s in streams)]
        assert all(bytes(transports[s].written).endswith(frame(appended[s].wire)) for s in streams)
    finally:
        await fanout.aclose()
        await log.aclose()


async def test_a_burst_in_one_turn_is_one_write_and_the_next_waits_for_the_budget() -> None:
    # The first write took 3 ms: the write budget (twice that) holds the entry after the burst back.
    async with caught_up_viewers(3, coalesce=0.05, slow=True) as (log, transports, fanout):
        first = await log.append("answer", "text", '{"delta":"a"}')
        await past_the_write_budget(fanout, "answer")  # so the burst goes out at the end of its turn
        before = [t.writes for t in transports]
        burst = [log.append_now("answer", "text", f'{{"delta":"{n}"}}') for n in range(10)]
        await asyncio.sleep(0)
        assert all(t.writes == b + 1 for t, b in zip(transports, before, strict=True))
        later = await log.append("answer", "text", '{"delta":"later"}')
        await asyncio.sleep(0)
        assert all(t.writes == b + 1 for t, b in zip(transports, before, strict=True))  # in budget
        for _ in range(500):
            if all(t.writes == b + 2 for t, b in zip(transports, before, strict=True)):
                break
            await asyncio.sleep(0.001)
        expected = frame(first.wire) + frame(b"".join(e.wire for e in burst)) + frame(later.wire)
        assert all(bytes(t.written) == expected for t in transports)


async def test_a_viewer_joining_while_a_write_is_owed_gets_each_event_once() -> None:
    async with caught_up_viewers(1, coalesce=0.0) as (log, transports, fanout):
        await log.append("answer", "text", '{"delta":"a"}')
        await asyncio.sleep(0)
        owed = log.append_now("answer", "text", '{"delta":"b"}')
        late = RecordingTransport()  # it read up to ``owed`` from the log on its own
        assert fanout.join(Handoff("answer", owed.id), ChunkedSocket(late)) is not None
        after = log.append_now("answer", "text", '{"delta":"c"}')
        await asyncio.sleep(0)
        assert bytes(late.written) == frame(after.wire)
        assert bytes(transports[0].written).endswith(frame(owed.wire) + frame(after.wire))


async def test_a_viewer_leaving_while_a_write_is_owed_takes_it_along() -> None:
    transports = [RecordingTransport(), RecordingTransport()]
    async with caught_up_group("answer", transports, coalesce=0.0, opening="start") as (log, fanout, members):
        await log.append("answer", "text", '{"delta":"a"}')
        await asyncio.sleep(0)
        owed = log.append_now("answer", "text", '{"delta":"b"}')
        fanout.leave(members[0])
        assert bytes(transports[0].written).endswith(frame(owed.wire))
        assert members[0].resumed == owed.id  # it resumes after what it was given
        await asyncio.sleep(0)
        assert bytes(transports[1].written).endswith(frame(owed.wire))
        assert bytes(transports[0].written).count(frame(owed.wire)) == 1


async def test_the_end_of_the_stream_still_sends_the_viewers_back() -> None:
    # The terminal entry goes through a flush, which also ends the group (members read on their own).
    async with caught_up_viewers(1, coalesce=0.0) as (log, transports, _):
        await log.append("answer", "text", '{"delta":"x"}')
        await asyncio.sleep(0)
        token = log.append_now("answer", "text", '{"delta":"y"}')
        done = log.append_now("answer", "done", "{}", terminal=True)
        assert done.wire not in transports[0].written  # not inside the append
        await asyncio.sleep(0)
        assert bytes(transports[0].written).endswith(frame(token.wire) + frame(done.wire))


class BrokenTransport(RecordingTransport):
    def write(self, data: bytes) -> None:
        raise RuntimeError("a bug below the fan-out")


async def test_a_failing_owed_write_sends_viewers_back_not_the_error_to_the_producer() -> None:
    broken = [BrokenTransport()]
    async with caught_up_group("answer", broken, coalesce=0.0, opening="start") as (log, _, members):
        first = await log.append("answer", "text", '{"delta":"a"}')  # through a flush: logged there
        await asyncio.sleep(0)
        second = log.append_now("answer", "text", '{"delta":"b"}')  # owed: no raise
        assert second.seq == first.seq + 1
        await asyncio.sleep(0)
        assert members[0].resumed is not None  # sent back to read on its own
