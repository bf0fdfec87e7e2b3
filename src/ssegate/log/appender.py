"""A producer's appends that outlive an event-log outage.

The shared log (Redis) can be unreachable for seconds: a restart, a fail-over, a network blip. A
generation's upstream cannot be paused for free (its tokens are paid for and keep coming), so the
producer hands each event to a :class:`DurableAppender`, which

- appends it at once while the log answers (the normal path: one await, as without it);
- on a failure keeps it, and every later event, in memory in order (at most ``buffer`` events;
  beyond that :meth:`~DurableAppender.append` waits, so the upstream is read no further), and
  retries with back-off;
- when the log answers again, first reads the stream after the last id it knows to find out
  whether the append in flight at the failure landed (so nothing lands twice, and a log that lost
  its newest entries is noticed), then appends the rest in order: viewers resume exactly;
- finds a stream that is gone (the log came back empty: no persistence) and creates it again with
  its metadata and the whole generation so far. The new stream has a new epoch, so viewers'
  cursors get ``reset {reason: "epoch_changed"}`` and then the generation from its start, which
  clients rebuild from;
- gives up after ``limit`` seconds of failure without progress: every later call raises
  :class:`~ssegate.errors.LogUnavailable`. :meth:`~DurableAppender.rearm` tries again (to record
  how the generation ended once the log is back).

Over a log that queues appends (Redis, a :class:`~ssegate.log.base.QueueingLog`) nothing waits for
an append to land: :meth:`~DurableAppender.push` hands it over from the upstream socket's callback,
:meth:`~DurableAppender.append` too (it waits only while ``buffer`` events are in flight), and the
replies come back in order. So a producer no longer waits a round trip per event (W4 over Redis),
and what it learns late it acts on at its next call: a stream ended elsewhere raises there, and a
failed append puts it, and every later one, in the outage queue above, in order.
:meth:`~DurableAppender.set_meta` and :meth:`~DurableAppender.drain` wait for what is in flight, so
the metadata never runs ahead of the events it describes.

One writer per stream (a generation's producer): its own entries are what tell a landed append
from a lost one. A terminal event appended by someone else (a cancel from another process) ends
it with :class:`~ssegate.errors.StreamClosed`, as a direct append would.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from ssegate.errors import LogError, LogUnavailable, StreamClosed, StreamExists, StreamNotFound
from ssegate.log.base import EventLog, LogEntry, QueueingLog, Retention, make_entry

__all__ = ["DurableAppender", "OutagePolicy"]

logger = logging.getLogger("ssegate.log.appender")


@dataclass(frozen=True, slots=True)
class OutagePolicy:
    """How long producers and viewers wait out an unreachable log, and how much they hold meanwhile."""

    limit: float = 30.0  # seconds of failure without progress before a generation ends
    buffer: int = 10_000  # events one producer holds in memory meanwhile
    first_retry: float = 0.05  # back-off: the first retry's delay (s), doubled up to max_retry
    max_retry: float = 1.0

    def backoff(self, attempt: int) -> float:
        """Delay before retry ``attempt`` (0-based): exponential, capped, with jitter so that many
        producers do not hammer a log that just came back in the same millisecond."""
        delay: float = min(self.max_retry, self.first_retry * 2.0 ** min(attempt, 30))
        return delay * random.uniform(0.5, 1.0)

    @property
    def viewer_limit(self) -> float:
        """A viewer waits a little longer than a producer, so that the producer, which decides how
        the generation ends, usually decides first."""
        return self.limit + 2 * self.max_retry


# A queued operation: an event (event, data, terminal) or a metadata update.
_Event = tuple[str, str, bool]
_Op = _Event | dict[str, str]
# A metadata update's place in their order: the end of the one before (if any), and its own end.
_MetaTurn = tuple["asyncio.Future[None] | None", "asyncio.Future[None]"]


class DurableAppender:
    """Appends one stream's events, in order, through outages of the log of up to ``policy.limit`` s."""

    def __init__(
        self,
        log: EventLog,
        stream: str,
        retention: Retention,
        *,
        policy: OutagePolicy,
        meta: dict[str, str],
        keep_history: bool = True,
        on_trouble: Callable[[LogError], None] | None = None,
    ) -> None:
        self._log = log
        self._stream = stream
        self._retention = retention
        self._policy = policy
        self._limit = policy.limit
        self._max_retry = policy.max_retry
        # Every metadata field set so far: what a stream created again starts with.
        self._meta = dict(meta)
        # The events that landed (for a stream created again); None for a log that cannot lose
        # them (memory). About 150 bytes an event; bounded by what the stream would retain.
        self._history: collections.deque[tuple[str, str]] | None = (
            collections.deque(maxlen=retention.max_events) if keep_history else None
        )
        self._pending: collections.deque[_Op] = collections.deque()
        self._last_id: str | None = None  # our newest event known to be in the log
        self._verify = False  # read the stream before the next write: did the failed one land?
        self._lost = False  # the stream is gone: create it again before anything else
        self._failing_since: float | None = None
        self._failure: LogError | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._progress = asyncio.Event()  # set when the queue shrinks or the flusher stops
        self._on_trouble = on_trouble
        self.outages = 0  # how many times the log failed under this appender (for tests, metrics)
        # A log that queues appends: the events handed to it whose replies have not come yet.
        self._queueing = log if isinstance(log, QueueingLog) else None
        self._sent: collections.deque[_Event] = collections.deque()
        self._replied = self._on_reply  # bound once: handed over with every append
        self._meta_tasks: set[asyncio.Task[None]] = set()  # push_meta's, awaited by drain
        self._meta_last: asyncio.Future[None] | None = None  # the latest metadata update's end

    @property
    def buffered(self) -> int:
        """Operations waiting for the log."""
        return len(self._pending)

    @property
    def queueing(self) -> bool:
        """Whether :meth:`push` can be used (the log takes appends without waiting)."""
        return self._queueing is not None

    # -- what the producer calls --------------------------------------------------------------

    def push(self, event: str, data: str, *, terminal: bool = False) -> None:
        """Hand an event over without waiting, on a log that queues appends (from the upstream
        socket's callback). Raises what is known by now: the stream ended elsewhere
        (:class:`StreamClosed`), or the log stayed away too long or the outage queue is full
        (:class:`LogUnavailable`: a callback cannot wait for room)."""
        self._check()
        assert self._queueing is not None, "push() needs a log that queues appends"
        if self._pending:  # an outage is under way: behind it, in order
            make_entry("check", 1, event, data)  # unencodable: fail here, as a direct append would
            if len(self._pending) >= self._policy.buffer:
                raise LogUnavailable(
                    f"the event log is away and {self._policy.buffer} events are waiting for it"
                )
            self._queue((event, data, terminal))
            return
        self._queueing.append_soon(self._stream, event, data, terminal=terminal, landed=self._replied)
        self._sent.append((event, data, terminal))

    def push_meta(self, fields: dict[str, str]) -> None:
        """:meth:`set_meta` without waiting (from a socket callback, or so as not to hold up the
        upstream request); :meth:`drain` waits for it. Metadata lands in the order it is set."""
        turn = self._meta_turn()
        task = asyncio.get_running_loop().create_task(self._meta_soon(turn, fields))
        self._meta_tasks.add(task)
        task.add_done_callback(self._meta_tasks.discard)

    async def _meta_soon(self, turn: _MetaTurn, fields: dict[str, str]) -> None:
        with contextlib.suppress(StreamClosed, LogUnavailable):  # the next push or drain raises it
            await self._set_meta_in_turn(turn, fields)

    async def append(self, event: str, data: str, *, terminal: bool = False) -> None:
        """Append now, or queue behind an outage. Raises only before queuing: the stream ended
        elsewhere (:class:`StreamClosed`) or the log stayed away too long (:class:`LogUnavailable`).
        On a log that queues appends it does not wait for this one to land (see :meth:`push`), only
        while ``buffer`` events are in flight."""
        if self._queueing is not None:
            self.push(event, data, terminal=terminal)
            while len(self._sent) + len(self._pending) > self._policy.buffer and self._failure is None:
                await self._wait_progress()
            return
        self._check()
        if not self._pending:
            try:
                entry = await self._log.append(self._stream, event, data, terminal=terminal)
            except StreamClosed:
                raise
            except LogError as exc:
                self._trouble(exc, may_have_landed=not isinstance(exc, StreamNotFound))
                self._queue((event, data, terminal))
                return
            self._landed(event, data, entry.id)
            return
        make_entry("check", 1, event, data)  # unencodable: fail here, as a direct append would
        self._queue((event, data, terminal))
        while len(self._pending) > self._policy.buffer and self._failure is None:
            await self._wait_progress()

    async def set_meta(self, fields: dict[str, str]) -> None:
        """Merge metadata now, or queue it behind an outage (in order with the events)."""
        await self._set_meta_in_turn(self._meta_turn(), fields)

    def _meta_turn(self) -> _MetaTurn:
        """A place in the order of metadata updates: (the one before, this one's end)."""
        previous, self._meta_last = self._meta_last, asyncio.get_running_loop().create_future()
        return previous, self._meta_last

    async def _set_meta_in_turn(self, turn: _MetaTurn, fields: dict[str, str]) -> None:
        previous, done = turn
        try:
            self._meta.update(fields)
            if previous is not None and not previous.done():
                await asyncio.wait((previous,))  # (wait: a cancelled caller leaves it be)
            await self._settled()
            self._check()
            if not self._pending:
                try:
                    await self._log.set_meta(self._stream, fields)
                    return
                except LogError as exc:
                    self._trouble(exc, may_have_landed=False)  # idempotent: sent again as it is
            self._queue(dict(fields))
        finally:
            if not done.done():
                done.set_result(None)

    async def drain(self) -> None:
        """Wait until everything handed over is in the log; raises what stopped that."""
        while (self._pending or self._sent or self._meta_tasks) and self._failure is None:
            if self._meta_tasks and not self._pending and not self._sent:
                await asyncio.wait(set(self._meta_tasks))
            else:
                await self._wait_progress()
        self._check()

    async def _settled(self) -> None:
        """Wait for the replies to the appends in flight (see :meth:`push`)."""
        while self._sent and self._failure is None:
            await self._wait_progress()

    def _on_reply(self, reply: LogEntry | Exception) -> None:
        """An in-flight append's outcome (in the order they were handed over)."""
        event, data, terminal = self._sent.popleft()
        if isinstance(reply, LogEntry):
            self._landed(event, data, reply.id)
        elif isinstance(reply, StreamClosed):
            if self._failure is None:
                self._failure = reply  # the next push, set_meta or drain raises it
        elif isinstance(reply, LogError):
            # It and every later event go to the outage queue, in order (the log sends none of
            # this stream's that were queued behind it: see QueueingLog).
            self._trouble(reply, may_have_landed=not isinstance(reply, StreamNotFound))
            self._queue((event, data, terminal))
        else:  # not the log's: a bug; the generation must end, not hang
            logger.error("appending to %s failed: %r", self._stream, reply)
            if self._failure is None:
                self._failure = LogUnavailable(f"appending failed: {reply!r}")
        self._progress.set()  # for set_meta, drain and a full buffer (cheap when already set)

    def rearm(self, limit: float, max_retry: float = 2.0) -> None:
        """After :class:`LogUnavailable`: keep trying for up to ``limit`` s more, retrying at most
        every ``max_retry`` s (to record how the generation ended once the log is back)."""
        if isinstance(self._failure, LogUnavailable):
            self._failure = None
            self._limit = limit
            self._max_retry = max_retry
            self._failing_since = time.monotonic()
            if self._pending:
                self._start_flusher()

    async def aclose(self) -> None:
        """Stop retrying (what is still queued is dropped)."""
        flusher, self._flusher = self._flusher, None
        if flusher is not None and not flusher.done():
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher

    # -- the outage path -----------------------------------------------------------------------

    def _check(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _landed(self, event: str, data: str, entry_id: str) -> None:
        self._last_id = entry_id
        if self._history is not None:
            self._history.append((event, data))

    def _queue(self, op: _Op) -> None:
        self._pending.append(op)
        if self._flusher is None or self._flusher.done():
            self._start_flusher()

    def _start_flusher(self) -> None:
        self._flusher = asyncio.get_running_loop().create_task(
            self._flush(), name=f"ssegate-appender-{self._stream}"
        )

    def _trouble(self, exc: LogError, *, may_have_landed: bool) -> None:
        if isinstance(exc, StreamNotFound):
            self._lost = True
        elif may_have_landed:
            self._verify = True
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            self.outages += 1
            logger.warning("event log failed under %s; buffering its events: %s", self._stream, exc)
        if self._on_trouble is not None:
            self._on_trouble(exc)

    async def _wait_progress(self) -> None:
        self._progress.clear()
        await self._progress.wait()

    async def _flush(self) -> None:
        attempt = 0
        try:
            while self._pending and self._failure is None:
                try:
                    await self._step()
                except StreamClosed as exc:
                    self._failure = exc
                except LogError as exc:
                    # Anything the step sent may have landed, except where the log said it has
                    # no such stream (then nothing did).
                    self._trouble(exc, may_have_landed=True)
                    assert self._failing_since is not None
                    if time.monotonic() - self._failing_since > self._limit:
                        logger.warning("event log unreachable for %s: giving up", self._stream)
                        self._failure = LogUnavailable(
                            f"the event log was unreachable for more than {self._limit:g} s"
                        )
                        break
                    delay = min(self._max_retry, self._policy.backoff(attempt))
                    attempt += 1
                    await asyncio.sleep(delay)
                except Exception as exc:  # a bug must not strand the producer waiting for ever
                    logger.exception("appending to %s failed", self._stream)
                    self._failure = LogUnavailable(f"appending failed: {exc!r}")
                else:
                    attempt = 0
                    self._failing_since = None
        finally:
            self._progress.set()

    async def _step(self) -> None:
        """One operation towards an up-to-date stream: create it again, verify, or send the head."""
        if self._lost:
            await self._recreate()
        elif self._verify:
            await self._reconcile()
        else:
            op = self._pending[0]
            if isinstance(op, dict):
                await self._log.set_meta(self._stream, op)
                self._pending.popleft()
            else:
                event, data, terminal = op
                try:
                    entry = await self._log.append(self._stream, event, data, terminal=terminal)
                except StreamNotFound:
                    self._lost = True
                    raise
                self._pending.popleft()
                self._landed(event, data, entry.id)
        self._progress.set()

    async def _reconcile(self) -> None:
        """Read what follows our last landed event: the failed append, if it landed, and nothing
        else but someone else's terminal event."""
        result = await self._log.read(self._stream, self._last_id)
        if result.reset is not None:
            # The log lost entries we had appended (e.g. an AOF replay missing its last second):
            # appending on would reuse ids viewers already have. Start a new life of the stream.
            logger.warning("event log lost part of %s (%s): writing it again", self._stream, result.reset)
            await self._log.expire(self._stream, 0)
            self._lost = True
            return
        # Several may have been in flight (a log that queues appends): the ones that landed are
        # the first of the queue, in order.
        entries = result.entries
        while entries and self._pending:
            head = self._pending[0]
            if not isinstance(head, tuple) or (entries[0].event, entries[0].data) != head[:2]:
                break
            self._pending.popleft()
            self._landed(head[0], head[1], entries[0].id)
            entries = entries[1:]
        if entries:
            raise StreamClosed(f"stream {self._stream!r} was ended elsewhere")
        if result.entries and self._pending and not result.closed:
            return  # a full batch matched: read on from there at the next step (still verifying)
        self._verify = False

    async def _recreate(self) -> None:
        """The stream is gone: create it (a new epoch) and queue its metadata and history first."""
        with contextlib.suppress(StreamExists):  # an earlier attempt of ours got that far
            await self._log.create(self._stream, self._retention)
        replay: list[_Op] = [dict(self._meta)]
        if self._history is not None:
            replay += [(event, data, False) for event, data in self._history]
            self._history.clear()
        self._pending.extendleft(reversed(replay))
        self._last_id = None
        self._lost = False
        self._verify = False
        logger.warning(
            "event log lost %s: created it again, replaying %d events", self._stream, len(replay) - 1
        )
