"""Over the embedded log, the next entry of a caught-up group is written as it is appended: no loop
turn between the producer's append and the viewers' sockets. A burst of appends still reaches every
viewer once and in order, the rest of the burst in one write after the first."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ssegate.log.memory import MemoryEventLog
from ssegate.server.fanout import FanOut, frame
from tests.support.fanout import caught_up_group
from tests.support.transports import RecordingTransport


class SlowTransport(RecordingTransport):
    """A socket whose writes take a millisecond, as a loaded machine's can."""

    def write(self, data: bytes) -> None:
        time.sleep(0.001)
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
        idle = group.flush_handle is None and group.pending is None
        if idle and loop.time() >= group.last_write + group.budget:
            return
        await asyncio.sleep(0.001)
    raise AssertionError("the write budget never ended")


async def test_the_next_token_is_on_the_viewers_sockets_when_append_returns() -> None:
    async with caught_up_viewers(2, coalesce=0.0) as (log, transports, _):
        first = await log.append("answer", "text", '{"delta":"Hel"}')
        await asyncio.sleep(0)  # the group learns where it stands from one read of the log
        second = await log.append("answer", "text", '{"delta":"lo"}')
        # No loop turn since the append: the write happened inside it.
        assert all(bytes(t.written) == frame(first.wire) + frame(second.wire) for t in transports)


async def test_a_burst_reaches_every_viewer_once_and_in_order_in_two_writes() -> None:
    # The first write took 3 ms: the write budget (twice that) holds the rest of the burst back.
    async with caught_up_viewers(3, coalesce=0.05, slow=True) as (log, transports, fanout):
        first = await log.append("answer", "text", '{"delta":"a"}')
        await past_the_write_budget(fanout, "answer")  # so the burst's first entry goes out at once
        before = [t.writes for t in transports]
        burst = [await log.append("answer", "text", f'{{"delta":"{n}"}}') for n in range(10)]
        for _ in range(500):  # the rest of the burst waits for the write budget, a few ms
            if all(t.writes == b + 2 for t, b in zip(transports, before, strict=True)):
                break
            await asyncio.sleep(0.001)
        expected = frame(first.wire) + frame(burst[0].wire) + frame(b"".join(e.wire for e in burst[1:]))
        assert all(bytes(t.written) == expected for t in transports)
        assert all(t.writes == b + 2 for t, b in zip(transports, before, strict=True))


async def test_the_end_of_the_stream_still_sends_the_viewers_back() -> None:
    # The terminal entry goes through a flush, which also ends the group (members read on their own).
    async with caught_up_viewers(1, coalesce=0.0) as (log, transports, _):
        await log.append("answer", "text", '{"delta":"x"}')
        await asyncio.sleep(0)
        done = await log.append("answer", "done", "{}", terminal=True)
        assert done.wire not in transports[0].written  # not inside the append
        await asyncio.sleep(0)
        assert bytes(transports[0].written).endswith(frame(done.wire))


class BrokenTransport(RecordingTransport):
    def write(self, data: bytes) -> None:
        raise RuntimeError("a bug below the fan-out")


async def test_a_failing_write_inside_an_append_sends_viewers_back_not_the_error_to_the_producer() -> None:
    broken = [BrokenTransport()]
    async with caught_up_group("answer", broken, coalesce=0.0, opening="start") as (log, _, members):
        first = await log.append("answer", "text", '{"delta":"a"}')  # through a flush: logged there
        await asyncio.sleep(0)
        second = await log.append("answer", "text", '{"delta":"b"}')  # inside the append: no raise
        assert second.seq == first.seq + 1
        assert members[0].resumed is not None  # sent back to read on its own
