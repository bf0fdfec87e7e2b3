"""The live end of one stream as this process has seen it, shared by all its local readers.

The Redis log keeps one :class:`Tail` per stream someone in this process follows. Two sources
feed it, in order, each entry decoded and encoded once: this process's own appends, as Redis
answers them (the stream's producer runs here: no read back at all), and otherwise the single
background ``XREAD`` of the process. Local waiters serve themselves from it by sequence
arithmetic and listeners (the live fan-out) are called with each entry, so a thousand viewers of
one stream cost at most one Redis read. No IO here.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import cast

from ssegate.errors import LogError
from ssegate.log.base import LogEntry, ReadResult, parse_id

logger = logging.getLogger(__name__)

Listener = Callable[[LogEntry | None], None]
_Stored = tuple[str, int, str, str, bool, bytes]  # a LogEntry's fields
_as_entry = LogEntry._make
_stored = cast(Callable[[LogEntry], _Stored], tuple)  # a LogEntry's fields as a plain tuple


class Tail:
    """Recent entries of one stream plus the event that wakes everyone waiting for the next one."""

    def __init__(self, epoch: str, last_seq: int, closed: bool, capacity: int) -> None:
        self.epoch = epoch
        self.last_seq = last_seq
        self.closed = closed
        # Plain tuples, not LogEntry: the garbage collector stops tracking a tuple of strings and
        # numbers, never a named tuple. A process's tails hold a thousand entries per stream it
        # follows, and with them tracked each full pass stalled every stream (W4 over Redis, 300
        # streams: token p99 60-100 ms; 10 ms with no full passes).
        self.entries: deque[_Stored] = deque(maxlen=capacity)
        self.changed = asyncio.Event()
        self.waiters = 0
        self.listeners: list[Listener] = []
        self.idle_since = time.monotonic()
        self.error: LogError | None = None
        # Fed by this process's own appends: the process's XREAD leaves it out. Set by an append
        # of ours that continues the tail exactly, cleared by a gap or a note that another process
        # appended (up to ``foreign_seq``, which our appends must pass before the tail is ours).
        self.local = False
        self.foreign_seq = 0

    @property
    def first_seq(self) -> int:
        return self.entries[0][1] if self.entries else self.last_seq + 1

    @property
    def in_use(self) -> bool:
        return self.waiters > 0 or bool(self.listeners)

    def add(self, entry: LogEntry, epoch: str) -> None:
        """Record an entry read from the log (in order); one already here is skipped, a gap or new
        epoch restarts the cache (whose listeners then read for themselves)."""
        if epoch == self.epoch and entry.seq <= self.last_seq:
            return  # our own append, read back by an XREAD that was already under way
        if epoch != self.epoch or entry.seq != self.last_seq + 1:
            self.entries.clear()
            self.epoch = epoch
            self.local = False
            self.last_seq = entry.seq
            self.entries.append(_stored(entry))
            self.closed = entry.terminal
            self._call(None)
            return
        self.entries.append(_stored(entry))
        self.last_seq = entry.seq
        self.closed = entry.terminal
        self._call(entry)

    def add_local(self, entry: LogEntry) -> bool:
        """Record an entry of this epoch that this process appended (Redis's reply); ``False`` if
        it does not follow the tail exactly (someone else appended in between): the XREAD then
        fills the gap."""
        if entry.seq != self.last_seq + 1:
            if entry.seq <= self.last_seq:
                return True  # the XREAD brought it first
            self.local = False
            return False
        self.entries.append(_stored(entry))
        self.last_seq = entry.seq
        self.closed = entry.terminal
        if entry.seq >= self.foreign_seq:
            self.local = True
        self._call(entry)
        if self.waiters:
            self.wake()
        return True

    def _call(self, entry: LogEntry | None) -> None:
        for listener in self.listeners[:]:  # a listener may stop listening
            try:
                listener(entry)
            except Exception:  # one viewer group's failure is not the appender's
                logger.exception("a listener of the event log failed")

    def listen(self, listener: Listener) -> Callable[[], None]:
        self.listeners.append(listener)

        def stop() -> None:
            if listener in self.listeners:
                self.listeners.remove(listener)
                self.idle_since = time.monotonic()

        return stop

    def serve(self, after: str | None, batch: int) -> ReadResult | None:
        """What a read after ``after`` returns, or ``None`` when the cache cannot say exactly."""
        parsed = parse_id(after) if after is not None else None
        if parsed is None or parsed[0] != self.epoch:
            return None
        seq = parsed[1]
        if seq > self.last_seq or seq + 1 < self.first_seq:
            return None
        skip = seq + 1 - self.first_seq
        entries = list(map(_as_entry, itertools.islice(self.entries, skip, skip + batch)))
        end = entries[-1].seq if entries else seq
        return ReadResult(entries, closed=self.closed and end == self.last_seq)

    def wake(self) -> None:
        woken, self.changed = self.changed, asyncio.Event()
        woken.set()

    def retire(self) -> None:
        """Out of use (the stream has a new life): nothing is served from here any more; waiters
        and listeners are woken to read from the log."""
        self.epoch = ""  # matches no cursor
        self.entries.clear()
        self.wake()
        self._call(None)

    def fail(self, error: LogError) -> None:
        self.error = error
        self.wake()
        self._call(None)
