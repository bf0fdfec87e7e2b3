from __future__ import annotations

import gc
from collections.abc import AsyncIterator

import pytest

from ssegate.errors import StreamNotFound
from ssegate.log import open_event_log
from ssegate.log.base import EventLog, LogEntry, Retention
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


async def test_retained_history_adds_no_work_to_the_garbage_collector() -> None:
    # A server keeping long histories would otherwise walk every retained event in each full
    # collection (tens of milliseconds with a few hundred thousand, a pause every viewer feels).
    async with MemoryEventLog() as log:
        await log.create("long", Retention(max_events=100_000, max_age=3600.0))
        gc.collect()
        tracked_before = len(gc.get_objects())
        for n in range(20_000):
            await log.append("long", "text", f'{{"delta":"token {n}"}}')
        gc.collect()

        assert len(gc.get_objects()) - tracked_before < 1_000
        read = await log.read("long", None)
        assert [e.data for e in read.entries[:2]] == ['{"delta":"token 0"}', '{"delta":"token 1"}']
        assert read.entries[0].id.endswith(":1")
        assert read.entries[0].wire.startswith(b"id: ")


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


async def test_memory_log_listener_hears_appends_and_the_stream_going_away() -> None:
    async with MemoryEventLog() as log:
        await log.create("s", RETENTION)
        heard: list[LogEntry | None] = []
        stop = log.listen("s", heard.append)
        first = await log.append("s", "message", "a")
        second = await log.append("s", "message", "b")
        assert heard == [first, second]  # each append hands the listener its entry
        # What the listener reads: everything after its cursor, at once.
        assert [e.data for e in log.read_now("s", first.id).entries] == ["b"]

        await log.expire("s", 0)  # dropped: the listener hears None and its next read fails
        assert heard == [first, second, None]
        with pytest.raises(StreamNotFound):
            log.read_now("s", first.id)

        await log.create("t", RETENTION)
        stop_t = log.listen("t", heard.append)
        stop_t()
        stop()
        await log.append("t", "message", "c")
        assert heard == [first, second, None]


async def test_memory_log_listen_to_unknown_stream_is_refused() -> None:
    async with MemoryEventLog() as log:
        with pytest.raises(StreamNotFound):
            log.listen("nope", lambda _entry: None)


async def test_memory_log_resumes_exactly_from_recent_and_older_cursors_alike() -> None:
    # The newest few cursors are found by comparing ids, older ones by parsing them: both resume
    # exactly, with read and read_now, up to an end that reads as closed.
    async with MemoryEventLog() as log:
        await log.create("s", RETENTION)
        appended = [await log.append("s", "text", str(n)) for n in range(20)]
        appended.append(await log.append("s", "done", "{}", terminal=True))

        for position, entry in enumerate(appended):
            expected = [e.id for e in appended[position + 1 :]]
            for result in (await log.read("s", entry.id), log.read_now("s", entry.id)):
                assert result.reset is None
                assert [e.id for e in result.entries] == expected
                assert result.closed
