"""The live end of one stream as this process has seen it, shared by all its local waiters.

The Redis log keeps one :class:`Tail` per followed stream: a single background reader appends
what ``XREAD`` returns (decoded and encoded once), sets the shared event, and every local viewer
serves itself from here by sequence arithmetic, so a thousand viewers of one stream cost one
Redis read. No IO here.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque

from ssegate.errors import LogError
from ssegate.log.base import LogEntry, ReadResult, parse_id


class Tail:
    """Recent entries of one stream plus the event that wakes everyone waiting for the next one."""

    def __init__(self, epoch: str, last_seq: int, closed: bool, capacity: int) -> None:
        self.epoch = epoch
        self.last_seq = last_seq
        self.closed = closed
        self.entries: deque[LogEntry] = deque(maxlen=capacity)
        self.changed = asyncio.Event()
        self.waiters = 0
        self.idle_since = time.monotonic()
        self.error: LogError | None = None

    @property
    def first_seq(self) -> int:
        return self.entries[0].seq if self.entries else self.last_seq + 1

    def add(self, entry: LogEntry, epoch: str) -> None:
        """Record an entry read from the log (in order); a gap or new epoch restarts the cache."""
        if epoch != self.epoch or entry.seq != self.last_seq + 1:
            self.entries.clear()
            self.epoch = epoch
        self.entries.append(entry)
        self.last_seq = entry.seq
        self.closed = entry.terminal

    def serve(self, after: str | None, batch: int) -> ReadResult | None:
        """What a read after ``after`` returns, or ``None`` when the cache cannot say exactly."""
        parsed = parse_id(after) if after is not None else None
        if parsed is None or parsed[0] != self.epoch:
            return None
        seq = parsed[1]
        if seq > self.last_seq or seq + 1 < self.first_seq:
            return None
        skip = seq + 1 - self.first_seq
        entries = list(itertools.islice(self.entries, skip, skip + batch))
        end = entries[-1].seq if entries else seq
        return ReadResult(entries, closed=self.closed and end == self.last_seq)

    def wake(self) -> None:
        woken, self.changed = self.changed, asyncio.Event()
        woken.set()

    def fail(self, error: LogError) -> None:
        self.error = error
        self.wake()
