"""The embedded event log: every stream lives in this process's memory.

The default for one process. Per stream: a list of entries (each encoded once by
:func:`~ssegate.log.base.entry_fields`), the time each was appended, and one :class:`asyncio.Event`
that every waiting reader shares and that each append sets and replaces. So an append is O(1)
whatever the number of viewers, a viewer is only a sequence number, and a slow viewer lags only
itself. Sequence numbers are contiguous, so a cursor is found by subtraction.

Memory stays bounded: a stream keeps at most ``Retention.max_events`` entries, none older than
``Retention.max_age``, and a stream nothing was appended to for ``max_age`` (or past the time given to
:meth:`MemoryEventLog.expire`) is dropped, lazily, on access or by a sweep at most every
``sweep_interval`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable

from ssegate.errors import LogError, StreamClosed, StreamExists, StreamNotFound
from ssegate.log.base import LogEntry, ReadResult, Retention, entry_fields
from ssegate.log.cursor import new_epoch, resolve_cursor

__all__ = ["DEFAULT_READ_BATCH", "MemoryEventLog"]

# Most entries one read returns: bounds a single write to a far-behind viewer.
DEFAULT_READ_BATCH = 1000
# Dropped entries are removed from the front of the list in chunks, not one by one (O(1) amortised).
_COMPACT_AT = 1024
# How many of the newest entries a cursor is looked for among before it is parsed (see read_after).
_RECENT_CURSORS = 8

# A retained entry: a LogEntry's fields in a plain tuple, turned back into a LogEntry when read.
# The garbage collector stops tracking a plain tuple of strings and numbers (never a NamedTuple),
# so a long history is not walked by every full collection: under bench W4 at N=500 (250,000
# retained events) the longest pause went from 86 to 56 ms (the rest is the running streams' own
# objects), for 0.3 us more per append and read.
_Stored = tuple[str, int, str, str, bool, bytes]
_as_entry = LogEntry._make


class _Stream:
    """One stream's retained entries and the event its waiting readers share."""

    __slots__ = (
        "closed",
        "entries",
        "epoch",
        "expires_at",
        "head",
        "last_seq",
        "listeners",
        "meta",
        "retention",
        "stale",
        "times",
        "waiters",
    )

    def __init__(self, retention: Retention, now: float) -> None:
        self.epoch = new_epoch()
        self.retention = retention
        self.entries: list[_Stored] = []
        self.times: list[float] = []
        self.head = 0  # index of the earliest retained entry
        self.last_seq = 0
        self.closed = False
        self.expires_at = now + retention.max_age
        self.meta: dict[str, str] = {}
        # Readers waiting for the next append: each a future resolved True on wake-up, False at
        # its time-out. (Cheaper per wait than asyncio.Event plus asyncio.timeout.)
        self.waiters: list[asyncio.Future[bool]] = []
        self.stale = 0  # waiters in that list that timed out or were cancelled
        # Called with each appended entry, and with None when the stream is dropped (see
        # MemoryEventLog.listen).
        self.listeners: list[Callable[[LogEntry | None], None]] = []

    @property
    def first_seq(self) -> int:
        return self.entries[self.head][1] if self.head < len(self.entries) else self.last_seq + 1

    def add(self, event: str, data: str, terminal: bool, now: float) -> LogEntry:
        """Append the next entry (encoded once, here) and wake its readers."""
        seq = self.last_seq + 1
        stored = entry_fields(self.epoch, seq, event, data, terminal)
        self.entries.append(stored)
        self.times.append(now)
        self.last_seq = seq
        self.closed = terminal
        self.expires_at = now + self.retention.max_age
        if len(self.entries) - self.head > self.retention.max_events:
            self.head += 1
        if self.times[self.head] < now - self.retention.max_age or self.head >= _COMPACT_AT:
            self.drop_old(now)
        entry = _as_entry(stored)
        self.wake(entry)
        return entry

    def drop_old(self, now: float) -> None:
        cutoff = now - self.retention.max_age
        while self.head < len(self.entries) and self.times[self.head] < cutoff:
            self.head += 1
        if self.head >= _COMPACT_AT and self.head * 2 >= len(self.entries):
            del self.entries[: self.head]
            del self.times[: self.head]
            self.head = 0

    def wake(self, appended: LogEntry | None = None) -> None:
        if self.waiters:  # none while every reader is in the live fan-out
            waiters, self.waiters = self.waiters, []
            self.stale = 0
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(True)
        for listener in self.listeners[:]:  # a listener may stop listening
            listener(appended)

    async def wait(self, seconds: float) -> bool:
        """Until the next append (``True``) or for ``seconds`` (``False``)."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self.waiters.append(waiter)
        timer = loop.call_later(seconds, _time_out, waiter)
        try:
            return await waiter
        finally:
            timer.cancel()
            if waiter.cancelled() or not waiter.result():
                # Still listed: drop the dead ones once they are half the list (amortised O(1)).
                self.stale += 1
                if self.stale > 32 and self.stale * 2 > len(self.waiters):
                    self.waiters = [w for w in self.waiters if not w.done()]
                    self.stale = 0

    def read_after(self, after: str | None, now: float, batch: int) -> ReadResult:
        if self.head < len(self.times) and self.times[self.head] < now - self.retention.max_age:
            self.drop_old(now)
        index = self._index_after_recent(after)
        reset = None
        if index < 0:
            first = self.first_seq
            start, reset = resolve_cursor(after, self.epoch, first, self.last_seq)
            index = self.head + (start - first)
        entries = list(map(_as_entry, self.entries[index : index + batch]))
        reaches_end = index + len(entries) >= len(self.entries)
        return ReadResult(entries, self.closed and reaches_end, reset)

    def _index_after_recent(self, after: str | None) -> int:
        """Where a cursor naming one of the last few retained entries resumes, else -1.

        A caught-up reader (the live fan-out, after every append) holds the id of an entry it was
        just given, so it is found by comparing ids from the end instead of parsing the cursor; an
        id of this stream carries its epoch, so a match resumes exactly, as resolve_cursor would.
        """
        if after is None:
            return -1
        entries = self.entries
        index = len(entries) - 1
        stop = max(self.head, index - _RECENT_CURSORS)
        while index >= stop:
            if entries[index][0] == after:
                return index + 1
            index -= 1
        return -1


def _time_out(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


class MemoryEventLog:
    """:class:`~ssegate.log.base.EventLog` in this process's memory (one process only)."""

    def __init__(self, *, read_batch: int = DEFAULT_READ_BATCH, sweep_interval: float = 1.0) -> None:
        self._streams: dict[str, _Stream] = {}
        self._members: dict[tuple[str, str], dict[str, float]] = {}
        self._read_batch = read_batch
        self._sweep_interval = sweep_interval
        self._next_sweep = time.monotonic() + sweep_interval
        self._closed = False

    async def __aenter__(self) -> MemoryEventLog:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def create(self, stream: str, retention: Retention) -> None:
        now = self._now()
        if self._lookup(stream, now) is not None:
            raise StreamExists(f"stream {stream!r} already exists")
        self._streams[stream] = _Stream(retention, now)

    async def exists(self, stream: str) -> bool:
        return self._lookup(stream, self._now()) is not None

    async def append(self, stream: str, event: str, data: str, *, terminal: bool = False) -> LogEntry:
        return self.append_now(stream, event, data, terminal=terminal)

    def append_now(self, stream: str, event: str, data: str, *, terminal: bool = False) -> LogEntry:
        """:meth:`append` without a coroutine: for a producer that appends from a socket callback."""
        now = self._now()
        state = self._require(stream, now)
        if state.closed:
            raise StreamClosed(f"stream {stream!r} has ended")
        return state.add(event, data, terminal, now)

    async def append_once(
        self, stream: str, event: str, data: str, *, field: str, key: str
    ) -> tuple[str, bool]:
        state = self._require(stream, self._now())
        known_id, _, known_key = state.meta.get(field, "").partition(" ")
        if known_key == key:
            return known_id, True
        entry = self.append_now(stream, event, data)
        state.meta[field] = f"{entry.id} {key}"
        return entry.id, False

    async def read(self, stream: str, after: str | None, *, wait: float = 0.0) -> ReadResult:
        now = self._now()
        state = self._require(stream, now)
        result = state.read_after(after, now, self._read_batch)
        if result.entries or result.closed or wait <= 0:
            return result
        if not await state.wait(wait):
            return result
        now = self._now()  # raises LogError if aclose() woke us
        current = self._lookup(stream, now)
        if current is None:
            return ReadResult([])  # expired while we waited; the next read says StreamNotFound
        return current.read_after(after, now, self._read_batch)

    def listen(
        self, stream: str, listener: Callable[[LogEntry | None], None], after: str | None = None
    ) -> Callable[[], None]:
        """Call ``listener`` with every entry appended to ``stream``, and once with ``None`` when the
        stream is dropped or the log closes; returns the function that stops it.

        The live fan-out's way to learn of new entries without a task waiting per stream. The
        listener runs inside ``append``, in the appender's task: it must not raise, and may write
        the entry out at once or schedule a :meth:`read_now`.
        Raises :class:`~ssegate.errors.StreamNotFound` if the stream is unknown. ``after`` is
        not needed here (every append calls back).
        """
        state = self._require(stream, self._now())
        state.listeners.append(listener)

        def stop() -> None:
            with contextlib.suppress(ValueError):
                state.listeners.remove(listener)

        return stop

    def read_now(self, stream: str, after: str | None) -> ReadResult:
        """Every retained entry after ``after``, without waiting (:meth:`read` minus the batch
        limit: a caught-up reader only ever has the last few appends to take)."""
        now = self._now()
        return self._require(stream, now).read_after(after, now, sys.maxsize)

    async def expire(self, stream: str, after_seconds: float) -> None:
        now = self._now()
        self._require(stream, now).expires_at = now + after_seconds
        self._lookup(stream, now)  # drops it at once when after_seconds <= 0

    async def set_meta(self, stream: str, fields: dict[str, str]) -> None:
        self.set_meta_now(stream, fields)

    def set_meta_now(self, stream: str, fields: dict[str, str]) -> None:
        """:meth:`set_meta` without a coroutine (see :meth:`append_now`)."""
        self._require(stream, self._now()).meta.update(fields)

    async def get_meta(self, stream: str) -> dict[str, str]:
        state = self._lookup(stream, self._now())
        return dict(state.meta) if state is not None else {}

    async def heartbeat(self, stream: str, role: str, member: str, ttl: float) -> None:
        now = self._now()
        self._members.setdefault((stream, role), {})[member] = now + ttl

    async def drop_member(self, stream: str, role: str, member: str) -> None:
        self._now()
        members = self._members.get((stream, role))
        if members is not None:
            members.pop(member, None)

    async def live_members(self, stream: str, role: str) -> int:
        now = self._now()
        members = self._members.get((stream, role))
        if members is None:
            return 0
        return sum(1 for expires_at in members.values() if expires_at > now)

    async def aclose(self) -> None:
        self._closed = True
        streams, self._streams = self._streams, {}
        self._members = {}
        for state in streams.values():
            state.wake()

    def _now(self) -> float:
        """The time, after refusing work once closed and sweeping expired state when due."""
        if self._closed:
            raise LogError("the event log is closed")
        now = time.monotonic()
        if now >= self._next_sweep:
            self._sweep(now)
        return now

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + self._sweep_interval
        for stream in [name for name, state in self._streams.items() if state.expires_at <= now]:
            self._streams.pop(stream).wake()
        for key in [key for key, members in self._members.items() if max(members.values(), default=0) <= now]:
            del self._members[key]

    def _lookup(self, stream: str, now: float) -> _Stream | None:
        state = self._streams.get(stream)
        if state is not None and state.expires_at <= now:
            del self._streams[stream]
            state.wake()  # its waiters return "nothing new"; their next read finds no stream
            return None
        return state

    def _require(self, stream: str, now: float) -> _Stream:
        state = self._lookup(stream, now)
        if state is None:
            raise StreamNotFound(f"no stream {stream!r}")
        return state
