"""What every dialect shares: wire events, their SSE framing with resumable ids, and the cache that
encodes each log event once per dialect.

A dialect is a front door in another API's words (OpenAI Chat Completions, Anthropic Messages, the
AI SDK's UI message stream) over the same generations and the same event log. It has two halves,
both free of IO: a request mapper (the dialect's JSON -> :class:`GenerationRequest`) and an
:class:`Encoder` (the log's typed events -> the dialect's wire events). One log event may become
several wire events (an Anthropic block switch is a ``content_block_stop`` and a
``content_block_start`` before the delta), or none (usage is reported at the end).

Ids. Every wire event carries an SSE ``id``, so ``Last-Event-ID`` resumes in the same dialect: the
last wire event of log entry ``X`` has id ``X``; the ones before it ``X/0``, ``X/1``... A client
that has seen ``X/0`` gets the rest of ``X`` and then what follows, never a repeat.

Keep-alives are a lone comment line (``:\\n``) with no blank line after it: the vendor SDKs' SSE
decoders dispatch an empty event on a blank line once an id has been seen (the WHATWG parser does
not), and an empty event is a JSON error in the OpenAI SDK.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from ssegate.errors import GapError as GapError
from ssegate.log.base import LogEntry, format_id, parse_id

# (SSE event name or None for unnamed, data). ``data`` is one line (compact JSON or ``[DONE]``).
WireEvent = tuple[str | None, str]

KEEPALIVE_LINE = b":\n"
DONE = "[DONE]"


def dumps(value: Any) -> str:
    """Compact JSON, UTF-8 as is (what the vendors send)."""
    return orjson.dumps(value).decode()


class Encoder(Protocol):
    """Turns a generation's log events, in order, into a dialect's wire events. Stateful (block
    indexes, open parts), deterministic: the same events give the same wire events."""

    def encode(self, event: str, data: dict[str, Any]) -> list[WireEvent]: ...


EncoderFactory = Callable[[str], Encoder]  # generation id -> a fresh encoder


def frame(entry_id: str, events: list[WireEvent]) -> list[bytes]:
    """Each wire event of one log entry as SSE bytes, with the ids described above."""
    last = len(events) - 1
    out = []
    for index, (name, data) in enumerate(events):
        event_id = entry_id if index == last else f"{entry_id}/{index}"
        head = b"id: %b\n" % event_id.encode()
        if name is not None:
            head += b"event: %b\n" % name.encode()
        out.append(head + b"data: %b\n\n" % data.encode())
    return out


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a dialect client resumes: after log entry ``after`` (``None``: from the start), with
    the first ``skip`` wire events of entry ``partial`` (the next one) already seen."""

    after: str | None = None
    partial: str | None = None  # the log entry id whose wire events were partly seen
    skip: int = 0


def parse_cursor(value: str | None) -> Cursor | None:
    """A dialect Last-Event-ID (``X`` or ``X/k``) as a :class:`Cursor`; ``None`` if it is not one."""
    if not value:
        return Cursor()
    base, slash, sub = value.partition("/")
    parsed = parse_id(base)
    if parsed is None:
        return None
    if not slash:
        return Cursor(after=base)
    if not sub.isdigit() or len(sub) > 6:
        return None
    epoch, seq = parsed
    before = format_id(epoch, seq - 1) if seq > 1 else None
    return Cursor(after=before, partial=base, skip=int(sub) + 1)


@dataclass(slots=True)
class EncodedStream:
    """One generation's wire bytes in one dialect, encoded once for every viewer in this process.

    ``frames[i]`` are the framed wire events of the log entry with seq ``i + 1``. A viewer reads
    the log from its own cursor; whichever viewer first meets an entry encodes it.
    """

    encoder: Encoder
    frames: list[list[bytes]] = field(default_factory=list)
    last_id: str | None = None  # the last encoded entry's
    viewers: int = 0

    @property
    def next_seq(self) -> int:
        return len(self.frames) + 1

    def add(self, entry: LogEntry) -> list[bytes]:
        """The entry's framed wire events, encoding it if it is the next one."""
        if entry.seq < self.next_seq:
            return self.frames[entry.seq - 1]
        if entry.seq != self.next_seq:
            raise GapError(entry.seq, self.next_seq)
        try:
            data = orjson.loads(entry.data) if entry.data else {}
        except orjson.JSONDecodeError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        framed = frame(entry.id, self.encoder.encode(entry.event, data))
        self.frames.append(framed)
        self.last_id = entry.id
        return framed


class EncodedStreams:
    """This process's :class:`EncodedStream` per (generation, dialect key), kept while viewed."""

    def __init__(self) -> None:
        self._streams: dict[tuple[str, str], EncodedStream] = {}

    def acquire(self, generation_id: str, key: str, factory: EncoderFactory) -> EncodedStream:
        stream = self._streams.get((generation_id, key))
        if stream is None:
            stream = self._streams[(generation_id, key)] = EncodedStream(factory(generation_id))
        stream.viewers += 1
        return stream

    def release(self, generation_id: str, key: str) -> None:
        stream = self._streams.get((generation_id, key))
        if stream is None:
            return
        stream.viewers -= 1
        if stream.viewers <= 0:
            del self._streams[(generation_id, key)]

    def __len__(self) -> int:
        return len(self._streams)
