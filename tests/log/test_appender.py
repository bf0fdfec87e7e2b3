"""The producer's appender through log failures, on the embedded log with failures injected.

A Redis outage is tested end to end in tests/gateway/test_log_outage.py; here are the cases a real
Redis cannot be made to produce on cue: an append that landed but whose reply was lost, a full
buffer, and a stream ended by someone else while the log was away.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ssegate.errors import LogError, LogUnavailable, StreamClosed
from ssegate.log.appender import DurableAppender, OutagePolicy
from ssegate.log.base import LogEntry, Retention
from ssegate.log.memory import MemoryEventLog

STREAM = "gen:test"
RETENTION = Retention(max_events=1000, max_age=60.0)
FAST = OutagePolicy(limit=2.0, buffer=1000, first_retry=0.001, max_retry=0.01)


class FlakyLog(MemoryEventLog):
    """The embedded log, failing on cue: ``down`` refuses every call; ``lose_reply`` lets the next
    append land and then fails as a dropped connection would."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.lose_reply = False

    async def append(self, stream: str, event: str, data: str, *, terminal: bool = False) -> LogEntry:
        if self.down:
            raise LogError("down")
        entry = await super().append(stream, event, data, terminal=terminal)
        if self.lose_reply:
            self.lose_reply = False
            raise LogError("connection dropped after the command ran")
        return entry

    async def read(self, stream: str, after: str | None, *, wait: float = 0.0) -> Any:
        if self.down:
            raise LogError("down")
        return await super().read(stream, after, wait=wait)

    async def set_meta(self, stream: str, fields: dict[str, str]) -> None:
        if self.down:
            raise LogError("down")
        await super().set_meta(stream, fields)


@pytest.fixture
async def log() -> AsyncIterator[FlakyLog]:
    async with FlakyLog() as log:
        await log.create(STREAM, RETENTION)
        yield log


async def events(log: FlakyLog) -> list[tuple[str, str]]:
    result = await log.read(STREAM, None)
    return [(e.event, e.data) for e in result.entries]


async def test_an_append_that_landed_before_its_reply_was_lost_lands_once(log: FlakyLog) -> None:
    out = DurableAppender(log, STREAM, RETENTION, policy=FAST, meta={})
    await out.append("text", "1")
    log.lose_reply = True
    await out.append("text", "2")  # landed, but the appender cannot know: it is queued
    await out.append("text", "3")
    await out.drain()

    assert await events(log) == [("text", "1"), ("text", "2"), ("text", "3")]
    assert out.outages == 1


async def test_events_wait_in_order_while_the_log_is_down(log: FlakyLog) -> None:
    out = DurableAppender(log, STREAM, RETENTION, policy=FAST, meta={})
    log.down = True
    for n in range(5):
        await out.append("text", str(n))  # does not block: the upstream keeps being read
    await out.set_meta({"usage": "5"})
    assert out.buffered == 6
    log.down = False
    await out.drain()

    assert await events(log) == [("text", str(n)) for n in range(5)]
    assert (await log.get_meta(STREAM))["usage"] == "5"


async def test_a_full_buffer_holds_the_producer_back_until_the_log_is_back(log: FlakyLog) -> None:
    out = DurableAppender(
        log, STREAM, RETENTION, policy=OutagePolicy(limit=5.0, buffer=3, max_retry=0.01), meta={}
    )
    log.down = True
    for n in range(3):
        await out.append("text", str(n))
    blocked = asyncio.create_task(out.append("text", "3"))
    await asyncio.sleep(0.05)  # several retries' worth: it must still be waiting
    assert not blocked.done()
    log.down = False
    await asyncio.wait_for(blocked, 2.0)
    await out.drain()

    assert [data for _event, data in await events(log)] == ["0", "1", "2", "3"]


async def test_an_outage_past_the_limit_raises_log_unavailable_and_rearm_records_the_rest(
    log: FlakyLog,
) -> None:
    out = DurableAppender(log, STREAM, RETENTION, policy=OutagePolicy(limit=0.05, max_retry=0.01), meta={})
    log.down = True
    await out.append("text", "kept")
    with pytest.raises(LogUnavailable):
        await asyncio.wait_for(out.drain(), 2.0)
    with pytest.raises(LogUnavailable):
        await out.append("text", "refused")
    out.rearm(5.0, max_retry=0.01)
    await out.append("error", "{}", terminal=True)
    log.down = False
    await out.drain()

    assert await events(log) == [("text", "kept"), ("error", "{}")]


async def test_a_stream_ended_elsewhere_during_the_outage_stops_the_appender(log: FlakyLog) -> None:
    out = DurableAppender(log, STREAM, RETENTION, policy=FAST, meta={})
    await out.append("text", "1")
    log.down = True
    await out.append("text", "2")
    log.down = False
    await MemoryEventLog.append(log, STREAM, "done", "{}", terminal=True)  # a cancel elsewhere
    with pytest.raises(StreamClosed):
        await asyncio.wait_for(out.drain(), 2.0)

    assert await events(log) == [("text", "1"), ("done", "{}")]


async def test_a_lost_stream_is_created_again_with_its_metadata_and_whole_history(log: FlakyLog) -> None:
    out = DurableAppender(log, STREAM, RETENTION, policy=FAST, meta={"state": "pending"})
    await out.append("start", "{}")
    await out.set_meta({"state": "streaming"})
    await out.append("text", "1")
    before = (await log.read(STREAM, None)).entries[-1].id
    await log.expire(STREAM, 0)  # the log came back empty
    await out.append("text", "2")
    await out.drain()

    assert await events(log) == [("start", "{}"), ("text", "1"), ("text", "2")]
    assert (await log.get_meta(STREAM))["state"] == "streaming"
    assert (await log.read(STREAM, before)).reset == "epoch_changed"
