"""The event log: the one place producers write to and viewers read from.

Data flows one way: a producer ``append``s events to a stream; every viewer is only a cursor that
``read``s what came after the last id it saw. A viewer never touches a producer, and a producer
never touches a socket. Two backends implement :class:`EventLog` (memory for one process, Redis
Streams for many); ``tests/log/conformance.py`` runs the same suite against both.

Ids are made only by ssegate: ``"<epoch>:<seq>"``. ``seq`` counts from 1 within a stream; the
epoch is a random word chosen when the stream is created, so an id from a stream that was lost and
created again (say, Redis restarted without persistence) can never be mistaken for a position in the
new one. A cursor that cannot resume exactly gets a ``reset`` reason and the stream from its earliest
retained event — never a silent gap.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

from ssegate.codec.encoder import encode_fields
from ssegate.errors import StreamClosed, StreamExists, StreamNotFound

__all__ = [
    "EventLog",
    "Landed",
    "ListenableLog",
    "LiveFeed",
    "LogEntry",
    "QueueingLog",
    "ReadResult",
    "Retention",
    "StreamClosed",
    "StreamExists",
    "StreamNotFound",
    "format_id",
    "make_entry",
    "parse_id",
]

# An id we can parse back into (epoch, seq). Anything else cannot resume exactly.
_ID_RE = re.compile(r"^([0-9a-z]{1,16}):([0-9]{1,19})$")


def format_id(epoch: str, seq: int) -> str:
    return f"{epoch}:{seq}"


def parse_id(value: str) -> tuple[str, int] | None:
    """``(epoch, seq)`` for an id this log could have made, else ``None``."""
    match = _ID_RE.match(value)
    if match is None:
        return None
    return match.group(1), int(match.group(2))


@dataclass(frozen=True, slots=True)
class Retention:
    """How much history a stream keeps: at most ``max_events``, and nothing older than ``max_age`` s."""

    max_events: int = 10_000
    max_age: float = 3600.0


class LogEntry(NamedTuple):
    """One event in a stream. ``wire`` is its SSE encoding (with ``id:``), made once for all viewers.

    Build entries with :func:`make_entry` (or their fields with :func:`entry_fields`) so ``wire`` is
    always the encoding of the other fields.
    A named tuple: one is made for every event of every stream, and a tuple is built at about
    three quarters of the cost of a frozen dataclass (2.8 vs 3.7 µs per :func:`make_entry`).
    """

    id: str
    seq: int
    event: str
    data: str
    terminal: bool
    wire: bytes


def make_entry(epoch: str, seq: int, event: str, data: str, *, terminal: bool = False) -> LogEntry:
    return LogEntry(*entry_fields(epoch, seq, event, data, terminal))


def entry_fields(
    epoch: str, seq: int, event: str, data: str, terminal: bool
) -> tuple[str, int, str, str, bool, bytes]:
    """A :class:`LogEntry`'s fields as a plain tuple (how the embedded log keeps them)."""
    entry_id = format_id(epoch, seq)
    return (entry_id, seq, event, data, terminal, encode_fields(entry_id, event, data))


def entry_after_encoding(
    epoch: str, seq: int, event: str, data: str, terminal: bool, body: bytes
) -> LogEntry:
    """:func:`make_entry` when the event's own lines (``body``: ``encode_fields(None, event, data)``)
    were encoded before its id was known: the Redis log checks an append at once and learns the id
    from Redis's reply, and need not encode the event twice."""
    entry_id = format_id(epoch, seq)
    return LogEntry(entry_id, seq, event, data, terminal, b"id: %b\n%b" % (entry_id.encode(), body))


# Why a cursor could not resume exactly (the ``reason`` of the ``reset`` event viewers receive).
RESET_UNKNOWN_ID = "unknown_id"  # not an id this log makes
RESET_OTHER_EPOCH = "epoch_changed"  # made by an earlier life of the stream (history was lost)
RESET_TRIMMED = "trimmed"  # the events after it fell out of retention
RESET_FUTURE = "future_id"  # a position the stream has not reached


class WireView(Protocol):
    """How the live fan-out writes a stream's entries for viewers that do not read their stored
    bytes (a front door's dialect): viewers of one stream and one ``key`` share a group."""

    @property
    def key(self) -> str: ...

    @property
    def keepalive(self) -> bytes: ...

    def wire(self, entry: LogEntry) -> bytes:
        """The entry's bytes for these viewers (may be empty); entries come in order, each once."""
        ...


@dataclass(frozen=True, slots=True)
class Handoff:
    """A stream position a viewer's chunk source offers to the live fan-out: "I have sent everything
    up to ``after``" (see :mod:`ssegate.server.fanout`), in the entries' own bytes or ``view``'s."""

    stream: str
    after: str
    view: WireView | None = None


class ReadResult(NamedTuple):
    """What a cursor sees: the entries after it, and whether more can ever come.

    ``reset`` is set (one of the ``RESET_*`` reasons) when the cursor could not resume exactly and
    ``entries`` therefore start at the earliest retained event. ``closed`` is true when the stream has
    ended (its terminal event was appended) and ``entries`` reach that end. A named tuple, as
    :class:`LogEntry` is: the live fan-out makes one per flush of every stream.
    """

    entries: list[LogEntry]
    closed: bool = False
    reset: str | None = None

    @property
    def last_id(self) -> str | None:
        return self.entries[-1].id if self.entries else None


@runtime_checkable
class LiveFeed(Protocol):
    """A log that calls this process back when a stream it follows grows (both backends): the live
    fan-out then flushes from that callback instead of keeping a reader task per stream.

    ``listen`` calls ``listener`` with each new entry, in order, and with ``None`` when the stream
    changed in a way only a read can tell (dropped, recreated, the log failing); ``after`` is where
    the caller has read up to (the Redis log starts following there). ``read_now`` answers from
    memory, without waiting, or raises :class:`~ssegate.errors.LogError` when it cannot say
    exactly: the caller then reads with :meth:`EventLog.read` instead."""

    def listen(
        self, stream: str, listener: Callable[[LogEntry | None], None], after: str | None = None
    ) -> Callable[[], None]: ...

    def read_now(self, stream: str, after: str | None) -> ReadResult: ...


@runtime_checkable
class ListenableLog(LiveFeed, Protocol):
    """A log in this process (the embedded one): a :class:`LiveFeed` that also appends without a
    coroutine, so a producer can append from the upstream socket's callback."""

    def append_now(self, stream: str, event: str, data: str, *, terminal: bool = False) -> LogEntry: ...

    def set_meta_now(self, stream: str, fields: dict[str, str]) -> None: ...


# What a queued append's reply is handed to: the entry as it landed, or why it did not.
Landed = Callable[[LogEntry | Exception], None]


@runtime_checkable
class QueueingLog(Protocol):
    """A log across the network (Redis) that takes an append without waiting for it to land: a
    producer keeps several in flight instead of waiting a round trip for each.

    ``append_soon`` raises at once only for what can be known here (an event SSE cannot carry, a
    closed log); how the append went reaches ``landed``, called with the :class:`LogEntry` or the
    error, in the order the appends were queued. After an append of a stream fails (any
    :class:`~ssegate.errors.LogError` but :class:`~ssegate.errors.StreamClosed`), the appends of
    that stream queued with a ``landed`` and not sent yet are not sent: they fail with the same
    error, in order, so that nothing of the stream lands after a gap."""

    def append_soon(self, stream: str, event: str, data: str, *, terminal: bool, landed: Landed) -> None: ...


class EventLog(Protocol):
    """Ordered, retained, resumable event streams, shared by every process that uses the same backend."""

    async def create(self, stream: str, retention: Retention) -> None:
        """Make an empty stream (a new epoch). Raises :class:`StreamExists` if it already exists."""

    async def exists(self, stream: str) -> bool: ...

    async def append(self, stream: str, event: str, data: str, *, terminal: bool = False) -> LogEntry:
        """Append one event atomically; a ``terminal`` event closes the stream.

        Raises :class:`StreamClosed` if the stream already ended (so exactly one terminal event ever
        lands, whichever process tries first) and :class:`ssegate.errors.StreamNotFound` if it is unknown.
        """

    async def append_once(
        self, stream: str, event: str, data: str, *, field: str, key: str
    ) -> tuple[str, bool]:
        """Append unless metadata ``field`` already names ``key``, in one atomic step: ``(entry id,
        False)``, or ``(the id appended for key, True)``. The field then holds ``"<id> <key>"``.

        A retried publish (its reply lost to a dropped connection, say) lands once, whichever
        process it is retried on. Raises as :meth:`append` does.
        """

    async def read(self, stream: str, after: str | None, *, wait: float = 0.0) -> ReadResult:
        """The entries after cursor ``after`` (``None``: from the start).

        If there are none yet and the stream is open, wait up to ``wait`` seconds for the next
        append; an empty, not-closed result means "nothing new yet" (time for a keep-alive).
        A result holds at most one batch (1000 entries by default); read again after its ``last_id``
        for the rest. Raises :class:`ssegate.errors.StreamNotFound` if the stream is unknown.
        """

    async def expire(self, stream: str, after_seconds: float) -> None:
        """Forget the stream (events, metadata) ``after_seconds`` from now, e.g. once it has ended.

        Streams also vanish on their own when nothing was appended for ``Retention.max_age``; an
        append after ``expire`` restores that default. Raises :class:`StreamNotFound` if unknown.
        """

    async def set_meta(self, stream: str, fields: dict[str, str]) -> None:
        """Merge ``fields`` into the stream's small metadata record (state, model, times...).

        Raises :class:`ssegate.errors.StreamNotFound` if the stream is unknown (create it first).
        """

    async def get_meta(self, stream: str) -> dict[str, str]:
        """The metadata record; empty if the stream is unknown."""

    async def heartbeat(self, stream: str, role: str, member: str, ttl: float) -> None:
        """Say that ``member`` (a process, usually) holds ``role`` on ``stream`` for the next ``ttl`` s."""

    async def drop_member(self, stream: str, role: str, member: str) -> None:
        """Withdraw a heartbeat at once (the last local viewer left, the producer finished)."""

    async def live_members(self, stream: str, role: str) -> int:
        """How many members' heartbeats for ``role`` on ``stream`` have not expired."""

    async def aclose(self) -> None:
        """Release connections and wake every waiting reader."""


@runtime_checkable
class WindowCounter(Protocol):
    """Counts hits per key in a sliding window, for limits every process must share."""

    async def admit(self, key: str, limit: int, window: float) -> float:
        """Count one hit on ``key`` and return 0 if fewer than ``limit`` hits fell in the last
        ``window`` s; otherwise count nothing and return the seconds until the oldest one leaves."""
        ...
