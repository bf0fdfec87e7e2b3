"""Topics: publish/subscribe on the same event log as generations. No HTTP here.

A topic is a log stream (key ``topic:<name>``) that never ends. Publishing appends one event;
subscribing is a cursor that reads after a position, exactly as a generation viewer does.

Rules, in one place:

* **Names.** ``[A-Za-z0-9_.:-]`` segments joined by ``/`` (no empty, ``.`` or ``..`` segment), at most
  :data:`MAX_TOPIC_LENGTH` characters. ``user/<principal>/...`` topics are private:
  :func:`may_read_topic`.
* **Data.** Any JSON value, always sent as JSON text: ``"hi"`` arrives as ``data: "hi"``, so a
  subscriber can ``JSON.parse`` every event. Event types are ``[A-Za-z0-9_.:-]{1,64}``; ``reset``
  and ``ssegate*`` are reserved for ssegate's own signals.
* **Creation.** A stream is created by the first publish *or* the first subscribe, so subscribing
  to a topic nobody has published to yet is valid: the subscriber waits for the first event.
  A new stream starts with one hidden marker event (never delivered) so that it always has a
  position with an epoch: a subscriber's opening position can then be resumed exactly, and a
  cursor left behind by retention gets ``reset {reason: "trimmed"}`` instead of a silent gap.
* **History.** With no ``Last-Event-ID`` a subscriber gets only new events (``history=0``), or the
  last N retained ones first (``history=N``), or all of them (``history=None`` = "all"). Every
  stream opens with an id-only block (``id: <position>``, no data: it sets the browser's
  ``lastEventId`` without dispatching anything) so a reconnect never loses an event published after
  the connection opened. A ``Last-Event-ID`` always resumes exactly (or says ``reset`` why not).
* **Idempotency.** A publish may carry a client ``key`` (the HTTP body's ``id``): publishing the same
  key to the same topic again returns the first event's id and appends nothing. Keys are remembered
  in :data:`IDEMPOTENCY_SLOTS` hash slots in the stream's metadata (so memory stays bounded and a
  recent key is always found; a much older key may have been displaced). Exact within one process;
  two processes racing the very same key at the same instant on Redis could both publish.
* **Several topics on one connection.** Each event's id is a compound cursor made for that
  connection: ``m<check>.<seq>.<seq>...`` with one base-64 sequence number per topic (in sorted topic
  order) and an 8-character check over the topics and their epochs; at most
  :data:`MAX_TOPICS_PER_SUBSCRIPTION` topics keep it within the 128-byte ``Last-Event-ID`` limit.
  If a topic was recreated since the id was made the check fails and every topic of the
  connection restarts with ``reset {reason: "epoch_changed"}``. A one-topic subscription uses the
  log's own ids and its shared, encoded-once bytes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import re
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any

from ssegate.codec.encoder import KEEPALIVE, encode_event
from ssegate.codec.events import Event
from ssegate.errors import LogError, ReservedEventType, StreamExists, StreamNotFound, TopicInputError
from ssegate.log.appender import OutagePolicy
from ssegate.log.base import (
    EventLog,
    Handoff,
    LogEntry,
    ReadResult,
    Retention,
    format_id,
    parse_id,
)
from ssegate.text import has_surrogate

__all__ = [
    "IDEMPOTENCY_SLOTS",
    "MAX_TOPICS_PER_SUBSCRIPTION",
    "MAX_TOPIC_LENGTH",
    "Published",
    "ReservedEventType",
    "Subscription",
    "TopicInputError",
    "Topics",
    "decode_compound_id",
    "encode_compound_id",
    "may_read_topic",
    "topic_stream",
    "validate_event_type",
    "validate_topic",
]

MAX_TOPIC_LENGTH = 200
MAX_EVENT_TYPE_LENGTH = 64
MAX_KEY_LENGTH = 128
# 16 topics x (6 base-64 digits, enough for 68 billion events, + a dot) + 9 = 121 bytes <= 128.
MAX_TOPICS_PER_SUBSCRIPTION = 16
# Idempotency keys remembered per topic (hash slots in the stream's metadata). About the count
# retention keeps, so a retry of any recent publish is recognised while memory stays bounded.
IDEMPOTENCY_SLOTS = 1024
# Reads of a topic block this long at most; keep-alives are timed separately, per connection.
_MAX_WAIT = 30.0

_SEGMENT_RE = re.compile(r"^[A-Za-z0-9_.:-]+$")
_EVENT_TYPE_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_KEY_RE = re.compile(r"^[\x21-\x7e]{1,128}$")
MARKER_EVENT = "ssegate.opened"
# ssegate's own signal (reset), and the generation vocabulary's types that clients treat as special
# (start) or terminal (done, error): a publisher's "done" would end a reader that follows both.
RESERVED_EVENT_TYPES = frozenset({"reset", "start", "done", "error"})
_STREAM_PREFIX = "topic:"
# Positions a stream's log can never have made: resuming from them makes the log say why (reset).
_FOREIGN_EPOCH_CURSOR = "x:0"
_UNKNOWN_CURSOR = "?"


# -- validation ----------------------------------------------------------------------------------


def validate_topic(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise TopicInputError("topic", "a topic name must be a non-empty string")
    if len(name) > MAX_TOPIC_LENGTH:
        raise TopicInputError("topic", f"a topic name is at most {MAX_TOPIC_LENGTH} characters")
    for segment in name.split("/"):
        if not _SEGMENT_RE.match(segment) or segment in (".", ".."):
            raise TopicInputError(
                "topic",
                f"invalid topic name {name!r}: use segments of letters, digits, '_', '.', ':', '-' "
                "joined by '/' (no empty, '.' or '..' segment)",
            )
    return name


def validate_event_type(event: str) -> str:
    if not isinstance(event, str) or not _EVENT_TYPE_RE.match(event):
        raise TopicInputError(
            "event",
            f"an event type is 1-{MAX_EVENT_TYPE_LENGTH} letters, digits, '_', '.', ':' or '-'",
        )
    if event in RESERVED_EVENT_TYPES or event.startswith("ssegate"):
        raise ReservedEventType(
            "event",
            f"the event type {event!r} is reserved (reserved: {', '.join(sorted(RESERVED_EVENT_TYPES))} "
            "and names starting with 'ssegate'): clients give it a meaning of its own",
        )
    return event


def validate_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise TopicInputError(
            "id", f"an idempotency id is 1-{MAX_KEY_LENGTH} printable ASCII characters without spaces"
        )
    return key


def encode_data(value: Any) -> str:
    """Any JSON value as compact JSON text (strings too, so every event's data parses as JSON)."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise TopicInputError("data", f"data must be a JSON value: {exc}") from None
    if has_surrogate(text):  # a lone half of a UTF-16 pair: not text, and no UTF-8 for it
        raise TopicInputError("data", "data holds a lone UTF-16 surrogate (\\ud800-\\udfff): not text")
    return text


def topic_stream(topic: str) -> str:
    return _STREAM_PREFIX + topic


def may_read_topic(principal: str, topic: str, *, admin: bool = False) -> bool:
    """``user/<p>/...`` is readable only by principal ``p`` (or an admin); every other topic by anyone.

    Local mode (no auth configured) authenticates everyone as ``"local"``, which may read all.
    """
    if admin or principal == "local":
        return True
    segments = topic.split("/")
    if segments[0] != "user":
        return True
    return len(segments) >= 2 and segments[1] == principal


# -- compound ids (several topics on one connection) ------------------------------------------

_B64 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_"
_B64_VALUE = {ch: i for i, ch in enumerate(_B64)}


def _b64_int(n: int) -> str:
    digits = []
    while True:
        n, digit = divmod(n, 64)
        digits.append(_B64[digit])
        if n == 0:
            return "".join(reversed(digits))


def _int_b64(text: str) -> int | None:
    if not text or len(text) > 11:
        return None
    n = 0
    for ch in text:
        value = _B64_VALUE.get(ch)
        if value is None:
            return None
        n = n * 64 + value
    return n


def _check(topics: Sequence[str], epochs: Sequence[str]) -> str:
    digest = hashlib.blake2b(digest_size=6)
    for topic, epoch in zip(topics, epochs, strict=True):
        digest.update(f"{topic}\0{epoch}\0".encode())
    return base64.urlsafe_b64encode(digest.digest()).decode()


def encode_compound_id(topics: Sequence[str], epochs: Sequence[str], seqs: Sequence[int]) -> str:
    """The id of a position in several topics (``topics`` sorted, one epoch and seq each)."""
    return "m" + _check(topics, epochs) + "." + ".".join(_b64_int(seq) for seq in seqs)


def decode_compound_id(value: str, topics: Sequence[str]) -> tuple[str, list[int]] | None:
    """``(check, seqs)`` of a compound id for ``topics``, or ``None`` if it is not one."""
    if not value.startswith("m"):
        return None
    check, dot, rest = value[1:].partition(".")
    if not dot or len(check) != 8:
        return None
    seqs = [_int_b64(part) for part in rest.split(".")]
    if len(seqs) != len(topics) or any(seq is None for seq in seqs):
        return None
    return check, [seq for seq in seqs if seq is not None]


# -- wire helpers ---------------------------------------------------------------------------------


def _id_only(event_id: str) -> bytes:
    # No data: a WHATWG parser sets lastEventId and dispatches nothing.
    return b"id: " + event_id.encode() + b"\n\n"


def _reset(reason: str, topic: str, event_id: str | None) -> bytes:
    data = json.dumps({"reason": reason, "topic": topic}, separators=(",", ":"), ensure_ascii=False)
    return encode_event(Event(data=data, event="reset", id=event_id))


def _without_id(entry: LogEntry) -> bytes:
    # The encoder writes the id line first: the rest is shared by every connection's copy.
    return entry.wire[len(entry.id) + 5 :]


@dataclass(frozen=True, slots=True)
class Published:
    id: str
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class _Step:
    """Where a cursor is after one thing read: a reset to send, an entry to send, or neither."""

    epoch: str
    seq: int
    reset: str | None
    entry: LogEntry | None


@dataclass(slots=True)
class _Cursor:
    """One topic's position on one connection: the last seq delivered (0 = before the first)."""

    topic: str
    stream: str
    epoch: str
    seq: int
    # The first read may return a reset the subscriber asked for (history reaching past retention).
    quiet_reset: bool = False
    # A cursor the log should judge (a stale or unknown id); None = use epoch:seq.
    pending: str | None = None
    # When this cursor's reads began to fail (the log is away), and the retries since.
    failing_since: float | None = None
    retries: int = 0

    @property
    def after(self) -> str:
        return self.pending if self.pending is not None else format_id(self.epoch, self.seq)


class Topics:
    """Publish to and subscribe to topics on ``log``; one per process (holds small caches)."""

    def __init__(
        self,
        log: EventLog,
        retention: Retention,
        *,
        position_cache: int = 10_000,
        outage: OutagePolicy | None = None,
    ) -> None:
        """``outage``: how long subscribers wait out an unreachable log (None: not at all, their
        streams end at the first failed read)."""
        self.log = log
        self.retention = retention
        self.outage = outage
        # The last position seen per stream: a new subscriber's "where is the end now" usually
        # costs one short read from here instead of a read of the whole history.
        self._positions: dict[str, str] = {}
        self._position_cache = position_cache

    # -- publishing ------------------------------------------------------------------------------

    async def publish(
        self, topic: str, data: Any, *, event: str | None = None, key: str | None = None
    ) -> Published:
        """Append an event (``data`` any JSON value); with ``key``, at most once per key."""
        validate_topic(topic)
        event_type = validate_event_type(event) if event is not None else "message"
        text = encode_data(data)
        stream = topic_stream(topic)
        if key is None:
            entry = await self._append(stream, event_type, text)
            return Published(entry.id)
        validate_key(key)
        slot = (
            f"k:{int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest()) % IDEMPOTENCY_SLOTS}"
        )
        # The check, the append and the record in one atomic step of the log: a publish retried
        # after a lost reply (a Redis restart), on this process or another, lands once.
        try:
            entry_id, duplicate = await self.log.append_once(stream, event_type, text, field=slot, key=key)
        except StreamNotFound:
            await self.ensure_stream(stream)
            entry_id, duplicate = await self.log.append_once(stream, event_type, text, field=slot, key=key)
        if not duplicate:
            self.remember_position(stream, entry_id)
        return Published(entry_id, duplicate=duplicate)

    async def _append(self, stream: str, event: str, data: str) -> LogEntry:
        try:
            entry = await self.log.append(stream, event, data)
        except StreamNotFound:
            await self.ensure_stream(stream)
            entry = await self.log.append(stream, event, data)
        self.remember_position(stream, entry.id)
        return entry

    async def ensure_stream(self, stream: str) -> None:
        with contextlib.suppress(StreamExists):  # another publisher or subscriber was first
            await self.log.create(stream, self.retention)

    def remember_position(self, stream: str, position: str) -> None:
        if len(self._positions) >= self._position_cache and stream not in self._positions:
            self._positions.clear()  # crude but bounded; it is only a hint
        self._positions[stream] = position

    # -- positions ---------------------------------------------------------------------------------

    async def position(self, topic: str) -> tuple[str, int]:
        """``(epoch, seq)`` of the topic's newest event, creating the topic if needed."""
        stream = topic_stream(topic)
        cursor = self._positions.get(stream)
        for _attempt in range(3):
            try:
                while True:
                    result = await self.log.read(stream, cursor)
                    if result.reset:
                        cursor = None
                    if not result.entries:
                        break
                    cursor = result.entries[-1].id
            except StreamNotFound:
                await self.ensure_stream(stream)
                cursor = None
                continue
            if cursor is None:
                # An empty stream has no epoch to name; a hidden marker gives it one.
                cursor = (await self._append(stream, MARKER_EVENT, "")).id
            self.remember_position(stream, cursor)
            parsed = parse_id(cursor)
            assert parsed is not None
            return parsed
        raise StreamNotFound(f"topic {topic!r} keeps vanishing")

    # -- subscribing ---------------------------------------------------------------------------------

    async def subscribe(
        self,
        topics: Sequence[str],
        *,
        last_event_id: str | None = None,
        history: int | None = 0,
    ) -> Subscription:
        """Prepare a subscription (validated, positions resolved) before any byte is sent.

        ``history``: events replayed first when there is no ``last_event_id`` (0 = only new ones,
        None = every retained one). ``last_event_id`` always wins and resumes exactly.
        """
        names = sorted(set(topics))
        if not names:
            raise TopicInputError("topic", "name at least one topic")
        if len(names) > MAX_TOPICS_PER_SUBSCRIPTION:
            raise TopicInputError("topic", f"at most {MAX_TOPICS_PER_SUBSCRIPTION} topics per connection")
        for name in names:
            validate_topic(name)
        if history is not None and history < 0:
            raise TopicInputError("history", "history must be a number >= 0 or 'all'")
        positions = [await self.position(name) for name in names]
        cursors = [
            _Cursor(n, topic_stream(n), epoch, seq) for n, (epoch, seq) in zip(names, positions, strict=True)
        ]
        opening: str | None = None
        if last_event_id is not None:
            self._resume(cursors, last_event_id)
        else:
            for cursor in cursors:
                back = cursor.seq if history is None else history
                if back:
                    cursor.seq = max(cursor.seq - back, 0)
                    cursor.quiet_reset = True
            opening = cursors[0].after if len(cursors) == 1 else _compound(cursors)
        return Subscription(self, cursors, opening)

    @staticmethod
    def _resume(cursors: list[_Cursor], last_event_id: str) -> None:
        if len(cursors) == 1:
            cursors[0].pending = last_event_id
            return
        names = [c.topic for c in cursors]
        decoded = decode_compound_id(last_event_id, names)
        if decoded is None:
            for cursor in cursors:
                cursor.pending = _UNKNOWN_CURSOR
            return
        check, seqs = decoded
        if check != _check(names, [c.epoch for c in cursors]):
            for cursor in cursors:
                cursor.pending = _FOREIGN_EPOCH_CURSOR
            return
        for cursor, seq in zip(cursors, seqs, strict=True):
            cursor.seq = seq  # beyond the end: the log answers reset future_id


def _compound(cursors: Sequence[_Cursor]) -> str:
    return encode_compound_id(
        [c.topic for c in cursors], [c.epoch for c in cursors], [c.seq for c in cursors]
    )


class Subscription:
    """The bytes of one subscriber's event stream: :meth:`chunks`, one chunk per wake-up."""

    def __init__(self, topics: Topics, cursors: list[_Cursor], opening: str | None) -> None:
        self._topics = topics
        self._cursors = cursors
        self.opening_id = opening

    @property
    def topics(self) -> list[str]:
        return [c.topic for c in self._cursors]

    def chunks(self, *, keepalive: float) -> AsyncGenerator[bytes | Handoff, str | None]:
        """A generator that yields forever: the opening id, then every event after the cursors, or
        keep-alives.

        One topic: after each write it offers itself to the live fan-out (a :class:`Handoff`); the
        consumer sends back where the fan-out took it, or ``None``. (The generator is returned,
        not wrapped: a held subscription keeps one generator frame, not two.)
        """
        if len(self._cursors) == 1:
            return self._one(self._cursors[0], keepalive)
        return self._many(keepalive)

    async def _read(self, cursor: _Cursor, wait: float) -> ReadResult:
        """The read at the cursor. With an outage policy, a log that is away is waited out as
        generation viewers wait: each failed read is retried after a back-off (an empty result
        when ``wait`` is set, so the caller sends a keep-alive meanwhile), for at most the policy's
        viewer limit; then the LogError ends the stream and the client resumes. When the log is
        back, the read resumes exactly (a log that kept the stream), or says ``reset
        epoch_changed`` (a log that came back empty: the stream is made again)."""
        policy = self._topics.outage
        while True:
            try:
                result = await self._read_once(cursor, wait)
            except LogError:
                if policy is None:
                    raise
                now = time.monotonic()
                if cursor.failing_since is None:
                    cursor.failing_since = now
                elif now - cursor.failing_since > policy.viewer_limit:
                    raise
                await asyncio.sleep(policy.backoff(cursor.retries))
                cursor.retries += 1
                if wait:
                    return ReadResult([])
                continue
            cursor.failing_since, cursor.retries = None, 0
            return result

    async def _read_once(self, cursor: _Cursor, wait: float) -> ReadResult:
        try:
            return await self._topics.log.read(cursor.stream, cursor.after, wait=wait)
        except StreamNotFound:
            # The topic expired (nothing published for its max age) or Redis lost it: make it
            # again; the old position then reads as reset epoch_changed, never as a silent gap.
            await self._topics.ensure_stream(cursor.stream)
            return await self._topics.log.read(cursor.stream, cursor.after, wait=0)

    async def _steps(self, cursor: _Cursor, result: ReadResult) -> list[_Step]:
        """What ``result`` means for ``cursor``, in order; each step says where the cursor is after it."""
        steps: list[_Step] = []
        pending, cursor.pending = cursor.pending, None
        if result.reset:
            if result.entries:
                parsed = parse_id(result.entries[0].id)
                assert parsed is not None
                epoch, seq = parsed[0], parsed[1] - 1
            else:
                epoch, seq = await self._topics.position(cursor.topic)
            steps.append(_Step(epoch, seq, None if cursor.quiet_reset else result.reset, None))
        elif pending is not None:
            parsed = parse_id(pending)
            if parsed is not None:  # resumed exactly: the cursor is where the client said
                cursor.epoch, cursor.seq = parsed
        cursor.quiet_reset = False
        for entry in result.entries:
            epoch = entry.id.partition(":")[0]
            steps.append(_Step(epoch, entry.seq, None, None if entry.event == MARKER_EVENT else entry))
        if result.entries:
            self._topics.remember_position(cursor.stream, result.entries[-1].id)
        return steps

    async def _one(self, cursor: _Cursor, keepalive: float) -> AsyncGenerator[bytes | Handoff, str | None]:
        # One topic: the log's own ids, so the entries' shared bytes go out as they are.
        if self.opening_id is not None:
            yield _id_only(self.opening_id)
        wait = 0.0
        while True:
            if wait and cursor.pending is None and cursor.failing_since is None:
                resumed = yield Handoff(cursor.stream, cursor.after)
                if resumed is not None:
                    parsed = parse_id(resumed)
                    assert parsed is not None
                    cursor.epoch, cursor.seq = parsed
                    self._topics.remember_position(cursor.stream, resumed)
            result = await self._read(cursor, wait)
            parts: list[bytes] = []
            for step in await self._steps(cursor, result):
                cursor.epoch, cursor.seq = step.epoch, step.seq
                if step.entry is not None:
                    parts.append(step.entry.wire)
                elif step.reset is not None:
                    parts.append(_reset(step.reset, cursor.topic, format_id(step.epoch, step.seq)))
            if parts:
                yield b"".join(parts)
            elif wait and not result.entries:
                yield KEEPALIVE
            wait = keepalive

    async def _many(self, keepalive: float) -> AsyncGenerator[bytes, str | None]:
        # Several topics: one read waits per topic; whatever has arrived is sent in one write, each
        # event with an id naming every topic's position on this connection after it.
        if self.opening_id is not None:
            yield _id_only(self.opening_id)
        reads: dict[asyncio.Task[ReadResult], _Cursor] = {}
        names = self.topics
        check_for: tuple[str, ...] = ()
        check = ""

        def start(cursor: _Cursor, wait: float) -> None:
            reads[asyncio.create_task(self._read(cursor, wait))] = cursor

        def compound() -> bytes:
            nonlocal check_for, check
            epochs = tuple(c.epoch for c in self._cursors)
            if epochs != check_for:
                check_for, check = epochs, _check(names, epochs)
            return ("m" + check + "." + ".".join(_b64_int(c.seq) for c in self._cursors)).encode()

        for cursor in self._cursors:
            start(cursor, 0.0)
        read_wait = min(_MAX_WAIT, max(keepalive, 1.0))
        loop = asyncio.get_running_loop()
        last_write = loop.time()
        try:
            while True:
                timeout = max(0.0, last_write + keepalive - loop.time())
                done, _ = await asyncio.wait(reads, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                parts: list[bytes] = []
                finished = {reads.pop(task).topic: task for task in done}
                for cursor in self._cursors:
                    task = finished.get(cursor.topic)
                    if task is None:
                        continue
                    for step in await self._steps(cursor, task.result()):
                        cursor.epoch, cursor.seq = step.epoch, step.seq
                        if step.entry is not None:
                            parts.append(b"id: " + compound() + b"\n" + _without_id(step.entry))
                        elif step.reset is not None:
                            parts.append(_reset(step.reset, cursor.topic, compound().decode()))
                    start(cursor, read_wait)
                if not parts and loop.time() - last_write >= keepalive:
                    parts.append(KEEPALIVE)
                if parts:
                    last_write = loop.time()
                    yield b"".join(parts)
        finally:
            for task in reads:
                task.cancel()
            await asyncio.gather(*reads, return_exceptions=True)
