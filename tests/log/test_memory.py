from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ssegate.log import open_event_log
from ssegate.log.base import EventLog, Retention
from ssegate.log.memory import MemoryEventLog
from tests.log.conformance import RETENTION, EventLogConformance


class TestMemoryEventLog(EventLogConformance):
    @pytest.fixture
    async def log(self) -> AsyncIterator[MemoryEventLog]:
        async with MemoryEventLog(sweep_interval=0.05) as log:
            yield log

    @pytest.fixture
    def other_log(self, log: MemoryEventLog) -> MemoryEventLog:
        return log  # one process: the "other process" is the same memory


async def test_memory_log_sweep_drops_streams_nobody_touches() -> None:
    async with MemoryEventLog(sweep_interval=0.0) as log:
        await log.create("idle", Retention(max_events=10, max_age=0.0))
        await log.create("busy", RETENTION)

        await log.exists("busy")  # any call sweeps when due

        # Memory stays bounded: the idle stream is gone without anyone asking for it.
        assert list(log._streams) == ["busy"]


@pytest.mark.parametrize("url", [None, "memory"])
async def test_open_event_log_defaults_to_memory(url: str | None) -> None:
    log: EventLog = open_event_log(url)
    try:
        assert isinstance(log, MemoryEventLog)
    finally:
        await log.aclose()


def test_open_event_log_rejects_unknown_url() -> None:
    with pytest.raises(ValueError, match="unknown event log URL"):
        open_event_log("postgres://localhost/db")
