"""One behavioural contract, run against every :class:`~ssegate.log.base.EventLog` backend.

A backend's test module subclasses :class:`EventLogConformance` and provides two fixtures:
``log`` (a fresh instance) and ``other_log`` (a second instance on the same backend, standing in
for another process; the memory backend hands back the same instance).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import pytest

from ssegate.errors import LogError, StreamClosed, StreamExists, StreamNotFound
from ssegate.log.base import (
    RESET_FUTURE,
    RESET_OTHER_EPOCH,
    RESET_TRIMMED,
    RESET_UNKNOWN_ID,
    EventLog,
    LogEntry,
    Retention,
    make_entry,
    parse_id,
)

RETENTION = Retention(max_events=1000, max_age=60.0)
_POLL = 0.02


async def eventually(condition: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    """Poll ``condition`` until it holds; for effects of time passing, which no event announces."""
    for _ in range(int(within / _POLL)):
        if await condition():
            return
        await asyncio.sleep(_POLL)
    raise AssertionError(f"still not true after {within} s")


async def follow(log: EventLog, stream: str, after: str | None = None) -> list[LogEntry]:
    """Everything a viewer sees from ``after`` to the end of the stream, the way a server reads it."""
    seen: list[LogEntry] = []
    while True:
        result = await log.read(stream, after, wait=10.0)
        assert result.reset is None
        seen.extend(result.entries)
        after = result.last_id or after
        if result.closed:
            return seen


def epoch_of(entry: LogEntry) -> str:
    parsed = parse_id(entry.id)
    assert parsed is not None
    return parsed[0]


class EventLogConformance:
    @pytest.fixture
    def stream(self) -> str:
        return f"test-{uuid.uuid4().hex}"

    async def append_many(self, log: EventLog, stream: str, count: int, start: int = 0) -> list[LogEntry]:
        return [await log.append(stream, "text", f"event {n}") for n in range(start, start + count)]

    # -- order and ids -------------------------------------------------------------------------

    async def test_log_returns_appended_events_in_order(self, log: EventLog, stream: str) -> None:
        await log.create(stream, RETENTION)
        appended = await self.append_many(log, stream, 5)

        result = await log.read(stream, None)

        assert [entry.data for entry in result.entries] == [f"event {n}" for n in range(5)]
        assert [entry.seq for entry in result.entries] == [1, 2, 3, 4, 5]
        assert [entry.id for entry in result.entries] == [entry.id for entry in appended]
        assert result.entries[2].id == f"{epoch_of(appended[0])}:3"
        assert (result.closed, result.reset) == (False, None)

    async def test_log_append_once_lands_once_per_key_in_the_same_step(
        self, log: EventLog, stream: str, other_log: EventLog
    ) -> None:
        await log.create(stream, RETENTION)
        first, first_dup = await log.append_once(stream, "tick", "1", field="k:7", key="job-1")
        again, again_dup = await other_log.append_once(stream, "tick", "1", field="k:7", key="job-1")
        other, other_dup = await log.append_once(stream, "tick", "2", field="k:7", key="job-2")

        result = await log.read(stream, None)
        assert (first_dup, again_dup, other_dup) == (False, True, False)
        assert again == first  # a retry, from any process, gets the first publish's id
        assert [entry.id for entry in result.entries] == [first, other]
        assert (await log.get_meta(stream))["k:7"] == f"{other} job-2"

    async def test_log_entry_wire_is_the_sse_encoding_with_id(self, log: EventLog, stream: str) -> None:
        await log.create(stream, RETENTION)
        appended = await log.append(stream, "text", '{"delta": "hi"}')

        (read,) = (await log.read(stream, None)).entries

        expected = make_entry(epoch_of(appended), 1, "text", '{"delta": "hi"}')
        assert read.wire == appended.wire == expected.wire
        assert f"id: {appended.id}".encode() in read.wire

    async def test_log_resumes_exactly_after_every_position(self, log: EventLog, stream: str) -> None:
        await log.create(stream, RETENTION)
        appended = await self.append_many(log, stream, 8)
        start = f"{epoch_of(appended[0])}:0"

        for position, cursor in enumerate([start, *(entry.id for entry in appended)]):
            result = await log.read(stream, cursor)
            assert result.reset is None
            assert [entry.id for entry in result.entries] == [entry.id for entry in appended[position:]]

    async def test_log_new_stream_reads_empty_and_open(self, log: EventLog, stream: str) -> None:
        await log.create(stream, RETENTION)

        result = await log.read(stream, None)

        assert (result.entries, result.closed, result.reset) == ([], False, None)

    # -- waiting and the seam between history and live ----------------------------------------

    async def test_log_wait_times_out_with_nothing_new(self, log: EventLog, stream: str) -> None:
        await log.create(stream, RETENTION)
        (entry,) = await self.append_many(log, stream, 1)

        result = await log.read(stream, entry.id, wait=0.05)

        assert (result.entries, result.closed, result.reset) == ([], False, None)

    async def test_log_waiting_reader_wakes_on_append(
        self, log: EventLog, other_log: EventLog, stream: str
    ) -> None:
        await log.create(stream, RETENTION)
        (first,) = await self.append_many(log, stream, 1)
        reader = asyncio.create_task(log.read(stream, first.id, wait=30.0))
        await asyncio.sleep(0.05)  # let the reader park (it must work whether or not it has)

        appended = await other_log.append(stream, "text", "live")

        result = await reader
        assert [entry.id for entry in result.entries] == [appended.id]

    async def test_log_reader_sees_each_event_once_across_history_and_live(
        self, log: EventLog, other_log: EventLog, stream: str
    ) -> None:
        await log.create(stream, RETENTION)
        history = await self.append_many(log, stream, 20)

        async def produce() -> list[LogEntry]:
            live = []
            for n in range(20, 120):
                live.append(await other_log.append(stream, "text", f"event {n}"))
                if n % 7 == 0:
                    await asyncio.sleep(0)
            live.append(await other_log.append(stream, "done", "{}", terminal=True))
            return live

        readers = [asyncio.create_task(follow(log, stream)) for _ in range(3)]
        live = await produce()

        expected = [entry.id for entry in history + live]
        for reader in readers:
            assert [entry.id for entry in await reader] == expected

    async def test_log_readers_started_mid_stream_resume_without_gap_or_duplicate(
        self, log: EventLog, stream: str
    ) -> None:
        await log.create(stream, RETENTION)
        appended: list[LogEntry] = []
        views: list[tuple[int, asyncio.Task[list[LogEntry]]]] = []
        for n in range(60):
            appended.append(await log.append(stream, "text", f"event {n}"))
            if n % 10 == 9:  # a viewer reconnecting with the last id it saw
                views.append((n, asyncio.create_task(follow(log, stream, appended[-1].id))))
                await asyncio.sleep(0)
        appended.append(await log.append(stream, "done", "{}", terminal=True))

        for position, view in views:
            assert [entry.id for entry in await view] == [entry.id for entry in appended[position + 1 :]]

    async def test_log_slow_reader_lags_only_itself(self, log: EventLog, stream: str) -> None:
        await log.create(stream, RETENTION)
        (first,) = await self.append_many(log, stream, 1)
        fast = asyncio.create_task(follow(log, stream, first.id))
        rest = await self.append_many(log, stream, 50, start=1)
        last = await log.append(stream, "done", "{}", terminal=True)

        fast_view = await fast  # finished while the slow reader has not read at all
        slow_view = await follow(log, stream)

        assert [entry.id for entry in fast_view] == [entry.id for entry in [*rest, last]]
        assert [entry.id for entry in slow_view] == [entry.id for entry in [first, *rest, last]]

    async def test_log_waiting_readers_share_one_encoding(self, log: EventLog, stream: str) -> None:
        await log.create(stream, RETENTION)
        (first,) = await self.append_many(log, stream, 1)
        readers = [asyncio.create_task(log.read(stream, first.id, wait=30.0)) for _ in range(4)]
        await asyncio.sleep(0.05)  # let them park, so one append wakes them all

        await log.append(stream, "text", "shared")

        results = [await reader for reader in readers]
        wires = [result.entries[0].wire for result in results]
        assert all(wire is wires[0] for wire in wires)

    # -- the end of a stream -----------------------------------------------------------------

    async def test_log_terminal_event_closes_the_stream(self, log: EventLog, stream: str) -> None:
        await log.create(stream, RETENTION)
        await self.append_many(log, stream, 2)
        terminal = await log.append(stream, "done", "{}", terminal=True)

        whole = await log.read(stream, None)
        after_end = await log.read(stream, terminal.id, wait=5.0)

        assert whole.closed
        assert whole.entries[-1] == terminal
        assert terminal.terminal
        assert (after_end.entries, after_end.closed) == ([], True)

    async def test_log_partial_read_of_ended_stream_is_not_closed(self, log: EventLog, stream: str) -> None:
        await log.create(stream, RETENTION)
        appended = await self.append_many(log, stream, 3)
        await log.append(stream, "done", "{}", terminal=True)

        result = await log.read(stream, appended[0].id)

        assert result.closed  # entries reach the end
        assert [entry.seq for entry in result.entries] == [2, 3, 4]

    async def test_log_append_after_terminal_raises_stream_closed(self, log: EventLog, stream: str) -> None:
        await log.create(stream, RETENTION)
        await log.append(stream, "done", "{}", terminal=True)

        with pytest.raises(StreamClosed):
            await log.append(stream, "text", "late")
        with pytest.raises(StreamClosed):
            await log.append(stream, "error", "{}", terminal=True)

    async def test_log_exactly_one_terminal_lands_under_concurrent_appends(
        self, log: EventLog, other_log: EventLog, stream: str
    ) -> None:
        await log.create(stream, RETENTION)
        writers = [log, other_log] * 10
        attempts = [
            writer.append(stream, "done" if n % 3 == 0 else "text", f"{n}", terminal=n % 3 == 0)
            for n, writer in enumerate(writers)
        ]

        outcomes = await asyncio.gather(*attempts, return_exceptions=True)

        landed_terminals = [o for o in outcomes if isinstance(o, LogEntry) and o.terminal]
        assert len(landed_terminals) == 1
        assert all(isinstance(o, (LogEntry, StreamClosed)) for o in outcomes)
        entries = (await log.read(stream, None)).entries
        assert [entry.terminal for entry in entries].count(True) == 1
        assert entries[-1].terminal
        assert [entry.seq for entry in entries] == list(range(1, len(entries) + 1))

    # -- resets ------------------------------------------------------------------------------

    @pytest.mark.parametrize("cursor", ["garbage", "12", "abc:", "ABC:1", "a:b:1", "", "x" * 20 + ":1"])
    async def test_log_unknown_cursor_resets_to_earliest(
        self, log: EventLog, stream: str, cursor: str
    ) -> None:
        await log.create(stream, RETENTION)
        appended = await self.append_many(log, stream, 3)

        result = await log.read(stream, cursor)

        assert result.reset == RESET_UNKNOWN_ID
        assert [entry.id for entry in result.entries] == [entry.id for entry in appended]

    async def test_log_cursor_of_another_epoch_resets(self, log: EventLog, stream: str) -> None:
        await log.create(stream, RETENTION)
        appended = await self.append_many(log, stream, 3)
        other_epoch = "zz" if epoch_of(appended[0]) != "zz" else "yy"

        result = await log.read(stream, f"{other_epoch}:1")

        assert result.reset == RESET_OTHER_EPOCH
        assert [entry.id for entry in result.entries] == [entry.id for entry in appended]

    async def test_log_cursor_from_the_future_resets(self, log: EventLog, stream: str) -> None:
        await log.create(stream, RETENTION)
        appended = await self.append_many(log, stream, 3)

        result = await log.read(stream, f"{epoch_of(appended[0])}:4")

        assert result.reset == RESET_FUTURE
        assert [entry.id for entry in result.entries] == [entry.id for entry in appended]

    async def test_log_trimmed_cursor_resets_to_earliest_retained(self, log: EventLog, stream: str) -> None:
        await log.create(stream, Retention(max_events=3, max_age=60.0))
        appended = await self.append_many(log, stream, 10)

        trimmed = await log.read(stream, appended[5].id)
        exact = await log.read(stream, appended[6].id)

        assert trimmed.reset == RESET_TRIMMED
        assert [entry.seq for entry in trimmed.entries] == [8, 9, 10]
        assert exact.reset is None
        assert [entry.seq for entry in exact.entries] == [8, 9, 10]

    async def test_log_reset_reader_waits_for_the_first_event(self, log: EventLog, stream: str) -> None:
        await log.create(stream, RETENTION)
        reader = asyncio.create_task(log.read(stream, "not-an-id", wait=30.0))
        await asyncio.sleep(0.05)

        appended = await log.append(stream, "text", "first")

        result = await reader
        assert result.reset == RESET_UNKNOWN_ID
        assert [entry.id for entry in result.entries] == [appended.id]

    # -- retention ---------------------------------------------------------------------------

    async def test_log_keeps_at_most_max_events(self, log: EventLog, stream: str) -> None:
        await log.create(stream, Retention(max_events=4, max_age=60.0))
        await self.append_many(log, stream, 250)

        result = await log.read(stream, None)

        assert [entry.seq for entry in result.entries] == [247, 248, 249, 250]
        assert result.reset is None

    async def test_log_drops_events_older_than_max_age(self, log: EventLog, stream: str) -> None:
        await log.create(stream, Retention(max_events=100, max_age=1.0))
        (old,) = await self.append_many(log, stream, 1)
        # Time itself is what is tested; appends in between keep the stream from going idle.
        await asyncio.sleep(0.6)
        (kept,) = await self.append_many(log, stream, 1, start=1)
        await asyncio.sleep(0.6)
        (fresh,) = await self.append_many(log, stream, 1, start=2)

        whole = await log.read(stream, None)
        from_start = await log.read(stream, f"{epoch_of(old)}:0")
        after_old = await log.read(stream, old.id)

        assert [entry.id for entry in whole.entries] == [kept.id, fresh.id]
        assert from_start.reset == RESET_TRIMMED
        assert (after_old.reset, len(after_old.entries)) == (None, 2)

    async def test_log_forgets_stream_idle_for_max_age(self, log: EventLog, stream: str) -> None:
        await log.create(stream, Retention(max_events=100, max_age=0.2))
        await self.append_many(log, stream, 2)
        await log.set_meta(stream, {"state": "done"})

        async def forgotten() -> bool:
            return not await log.exists(stream)

        await eventually(forgotten)
        assert await log.get_meta(stream) == {}
        with pytest.raises(StreamNotFound):
            await log.read(stream, None)

    async def test_log_keeps_stream_appended_to_for_longer_than_max_age(
        self, log: EventLog, stream: str
    ) -> None:
        await log.create(stream, Retention(max_events=100_000, max_age=0.3))
        loop = asyncio.get_running_loop()
        until = loop.time() + 0.8
        # A millisecond apart: most appends come well within any refresh interval of the one before.
        while loop.time() < until:
            await self.append_many(log, stream, 1)
            await asyncio.sleep(0.001)

        assert await log.exists(stream)

        async def forgotten() -> bool:
            return not await log.exists(stream)

        await eventually(forgotten)

    async def test_log_append_after_expire_restores_the_default_expiry(
        self, log: EventLog, stream: str
    ) -> None:
        await log.create(stream, RETENTION)
        await self.append_many(log, stream, 1)
        await log.expire(stream, 0.2)

        await self.append_many(log, stream, 1, start=1)  # at once: within any refresh interval
        await asyncio.sleep(0.5)  # time itself is what is tested

        assert [entry.data for entry in (await log.read(stream, None)).entries] == ["event 0", "event 1"]

    async def test_log_expire_forgets_stream(self, log: EventLog, stream: str) -> None:
        await log.create(stream, RETENTION)
        await log.append(stream, "done", "{}", terminal=True)

        await log.expire(stream, 0)

        assert not await log.exists(stream)
        await log.create(stream, RETENTION)  # the key is free again
        with pytest.raises(StreamNotFound):
            await log.expire(f"{stream}-missing", 10)

    async def test_log_expire_later_keeps_stream_until_then(self, log: EventLog, stream: str) -> None:
        await log.create(stream, RETENTION)
        await log.append(stream, "done", "{}", terminal=True)

        await log.expire(stream, 0.2)

        assert await log.exists(stream)

        async def forgotten() -> bool:
            return not await log.exists(stream)

        await eventually(forgotten)

    # -- unknown and duplicate streams -------------------------------------------------------

    async def test_log_unknown_stream_raises_not_found(self, log: EventLog, stream: str) -> None:
        assert not await log.exists(stream)
        with pytest.raises(StreamNotFound):
            await log.read(stream, None)
        with pytest.raises(StreamNotFound):
            await log.read(stream, None, wait=0.1)
        with pytest.raises(StreamNotFound):
            await log.append(stream, "text", "x")
        with pytest.raises(StreamNotFound):
            await log.set_meta(stream, {"a": "b"})
        assert await log.get_meta(stream) == {}

    async def test_log_create_twice_raises_stream_exists(
        self, log: EventLog, other_log: EventLog, stream: str
    ) -> None:
        await log.create(stream, RETENTION)
        await log.append(stream, "text", "kept")

        with pytest.raises(StreamExists):
            await other_log.create(stream, RETENTION)
        assert [entry.data for entry in (await log.read(stream, None)).entries] == ["kept"]

    async def test_log_recreated_stream_has_a_new_epoch(self, log: EventLog, stream: str) -> None:
        await log.create(stream, RETENTION)
        (old,) = await self.append_many(log, stream, 1)
        await log.expire(stream, 0)
        await log.create(stream, RETENTION)
        (new,) = await self.append_many(log, stream, 1)

        result = await log.read(stream, old.id)

        assert epoch_of(new) != epoch_of(old)
        assert result.reset == RESET_OTHER_EPOCH
        assert [entry.id for entry in result.entries] == [new.id]

    # -- metadata and presence ---------------------------------------------------------------

    async def test_log_meta_merges_fields(self, log: EventLog, other_log: EventLog, stream: str) -> None:
        await log.create(stream, RETENTION)

        await log.set_meta(stream, {"state": "pending", "model": "demo"})
        await other_log.set_meta(stream, {"state": "streaming"})

        assert await log.get_meta(stream) == {"state": "streaming", "model": "demo"}

    async def test_log_members_count_until_dropped_or_expired(
        self, log: EventLog, other_log: EventLog, stream: str
    ) -> None:
        await log.heartbeat(stream, "viewer", "process-a", 30.0)
        await other_log.heartbeat(stream, "viewer", "process-b", 0.2)
        await other_log.heartbeat(stream, "producer", "process-b", 30.0)

        assert await log.live_members(stream, "viewer") == 2
        await log.drop_member(stream, "viewer", "process-a")
        assert await other_log.live_members(stream, "viewer") == 1

        async def expired() -> bool:
            return await log.live_members(stream, "viewer") == 0

        await eventually(expired)
        assert await log.live_members(stream, "producer") == 1

    async def test_log_heartbeat_renews_a_member(self, log: EventLog, stream: str) -> None:
        await log.heartbeat(stream, "producer", "p", 0.1)
        await log.heartbeat(stream, "producer", "p", 30.0)
        await asyncio.sleep(0.2)  # past the first ttl: time itself is what is tested

        assert await log.live_members(stream, "producer") == 1

    # -- closing the log ---------------------------------------------------------------------

    async def test_log_aclose_wakes_waiting_readers(self, log: EventLog, stream: str) -> None:
        await log.create(stream, RETENTION)
        (entry,) = await self.append_many(log, stream, 1)
        reader = asyncio.create_task(log.read(stream, entry.id, wait=30.0))
        await asyncio.sleep(0.05)

        await log.aclose()

        with pytest.raises(LogError):
            await reader
        with pytest.raises(LogError):
            await log.append(stream, "text", "after close")
