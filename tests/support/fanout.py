"""A live fan-out group over the embedded log, for the fan-out's unit tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from ssegate.log.base import Handoff, Retention
from ssegate.log.memory import MemoryEventLog
from ssegate.server.fanout import ChunkedSocket, FanOut, Member
from ssegate.server.metrics import Metrics
from tests.support.transports import RecordingTransport


@asynccontextmanager
async def caught_up_group(
    stream: str, transports: Sequence[RecordingTransport], *, coalesce: float, opening: str = "message"
) -> AsyncIterator[tuple[MemoryEventLog, FanOut, list[Member]]]:
    """A stream with one ``opening`` event and one caught-up viewer per transport in its group,
    after the group's first look at the log (nothing new)."""
    log = MemoryEventLog()
    await log.create(stream, Retention(max_events=100, max_age=60.0))
    first = await log.append(stream, opening, "0")
    fanout = FanOut(log, keepalive=30.0, coalesce=coalesce, metrics=Metrics())
    members = []
    for transport in transports:
        member = fanout.join(Handoff(stream, first.id), ChunkedSocket(transport))
        assert member is not None
        members.append(member)
    await asyncio.sleep(0)
    try:
        yield log, fanout, members
    finally:
        await fanout.aclose()
        await log.aclose()
