"""Live fan-out: one reader per stream writes each new batch's shared bytes to every caught-up viewer.

A viewer reads the log with its own cursor (:func:`ssegate.server.streaming.follow_log`) until it
has caught up. Then it hands itself to its stream's :class:`_Group`, whose single reader writes
each new batch, framed once, straight to every member's socket: per event and viewer that is one
``transport.write``, with no task switch, no log read and no ASGI call chain. Anything out of the
ordinary sends members back to their own cursors: a socket backing up (a slow client keeps
lagging only itself, with the server's normal backpressure), a ``reset``, the end of the stream,
or a log error. Those paths are the tested per-viewer ones; the group only ever does the common case.

Writes are coalesced where it pays: after a write, the next waits twice as long as that write
took, at most ``coalesce`` seconds. A stream with a thousand viewers (a write of milliseconds)
then costs one write per budget per viewer however many events it carries; a stream with a few
viewers writes each event at the end of the loop turn it was appended in, together with every
other stream's (one burst of writes per turn); a quiet stream's next event always goes out in the
turn it arrived. A batch
for more than ``WRITE_SLICE`` viewers is written that many sockets per turn of the event loop,
so the requests that arrive meanwhile (publishes, new viewers) are served between slices instead
of after the whole batch.

Over either log the group has no task at all (both are a :class:`~ssegate.log.base.LiveFeed`): the
log calls it back with each new entry and it flushes from a loop callback (one keep-alive timer
per group). Over Redis the entries come from this process's own appends as Redis answers them, or
from the process's one XREAD; when the log's memory cannot serve the group, its members go back to
reading Redis on their own. A log that is no LiveFeed gets one reader task per group.

A front door's viewers (``Handoff.view``: a dialect) share a group per stream and dialect, which
writes each entry as the dialect encodes it: encoded once per event and dialect (the view's
cache), written to every caught-up viewer of that dialect as a generation's viewers are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable

from starlette.types import Send

from ssegate import _fast
from ssegate._fast.live_socket import Transport, socket_under
from ssegate.codec.encoder import KEEPALIVE
from ssegate.errors import GapError, SSEGateError
from ssegate.log.base import EventLog, Handoff, LiveFeed, LogEntry, WireView
from ssegate.server.metrics import Metrics
from ssegate.topics import MARKER_EVENT

logger = logging.getLogger(__name__)

# Scope keys: the server's own ``send`` (under every middleware), and the bytes the fan-out wrote
# past the middleware (for the access log).
SERVER_SEND = "ssegate.server_send"
LIVE_BYTES = "ssegate.live_bytes"
# Bytes waiting in a socket's buffer beyond which its viewer leaves the group (a slow client).
SLOW_SOCKET_BYTES = 64 * 1024
# Sockets a group writes per turn of the event loop. A batch for a larger group is written over
# several turns, so requests that arrive meanwhile (publishes) wait for one slice of syscalls, not
# for a thousand. A publish over Redis waits about four turns for its id: at 128 a slice, W2 over
# Redis (one worker) held 500/s (700/s: 6-10 % back-pressure); at 32, 1000/s (0.8 %), with the
# embedded log's W2 (1000/s) and W1 p99 (27.7-28.7 ms) unchanged (12-07, by hand).
WRITE_SLICE = 32


class ChunkedSocket:
    """The socket under an HTTP/1.1 chunked response, written to without awaiting.

    Found under uvicorn's httptools protocol only, and only where the ``live_socket`` shortcut is
    on (see :mod:`ssegate._fast.live_socket`); anything else answers ``None`` and its viewers keep
    reading on their own.
    """

    __slots__ = ("_transport", "wake")

    def __init__(self, transport: Transport, wake: Callable[[], None] | None = None) -> None:
        self._transport = transport
        # Makes the response's wait for the client's next message return (a wake-up, not a message).
        self.wake = wake or _nothing

    @classmethod
    def under(cls, server_send: Send | None) -> ChunkedSocket | None:
        if not _fast.enabled(_fast.LIVE_SOCKET):
            return None
        found = socket_under(server_send)
        return None if found is None else cls(*found)

    @property
    def closing(self) -> bool:
        return self._transport.is_closing()

    def write(self, framed: bytes) -> bool:
        """Write one framed chunk; ``False``: stop writing here (closed, or its buffer is backing up)."""
        transport = self._transport
        if transport.is_closing():
            return False
        transport.write(framed)
        return transport.get_write_buffer_size() <= SLOW_SOCKET_BYTES


def _nothing() -> None:
    pass


def frame(chunk: bytes) -> bytes:
    """``chunk`` as one HTTP/1.1 chunk (what uvicorn writes for a body message)."""
    return b"%x\r\n%b\r\n" % (len(chunk), chunk)


class Member:
    """One viewer in a group, held by its response while it waits for the client to hang up.

    The group sends it back with :meth:`detach`: ``resumed`` is then the id it has everything up to,
    and its response is woken (``socket.wake``) if it is ``waiting``.
    """

    __slots__ = ("bytes_at_join", "group", "resumed", "slow", "socket", "waiting")

    def __init__(self, group: _Group, socket: ChunkedSocket, waiting: bool) -> None:
        self.group = group
        self.socket = socket
        self.waiting = waiting
        self.slow = False  # sent back because its socket was backing up (not for a reset or the end)
        self.resumed: str | None = None
        self.bytes_at_join = group.bytes_written

    def detach(self, after: str) -> None:
        if self.resumed is not None:
            return
        self.resumed = after
        if self.waiting:
            self.waiting = False
            self.socket.wake()

    @property
    def bytes_sent(self) -> int:
        """Bytes the group wrote to this viewer (approximately: for the access log)."""
        return self.group.bytes_written - self.bytes_at_join


class FanOut:
    """This process's groups, one per stream with caught-up viewers."""

    def __init__(self, log: EventLog, *, keepalive: float, coalesce: float, metrics: Metrics) -> None:
        self._log = log
        # Asked once: isinstance() against a runtime-checkable Protocol is slow (per stream, it was
        # a few per cent of a generation's start under bench W4).
        self._live_log = log if isinstance(log, LiveFeed) else None
        self._keepalive = keepalive
        self._coalesce = coalesce
        self._metrics = metrics
        self._groups: dict[str, _Group] = {}
        # Groups owed a write this loop turn (see _Group._changed), paid by one loop callback.
        self._owing: list[_Group] = []
        self._owing_handle: asyncio.Handle | None = None

    def join(self, handoff: Handoff, socket: ChunkedSocket, *, waiting: bool = False) -> Member | None:
        """Add a caught-up viewer (``waiting``: a response waits on it, to wake through its socket
        when it is sent back); ``None`` if the stream's group is elsewhere in the log (the viewer
        then reads on its own and offers itself again later)."""
        view = handoff.view
        key = handoff.stream if view is None else f"{handoff.stream}\x00{view.key}"
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(self, handoff.stream, handoff.after, view, key)
        elif group.after != handoff.after:
            return None
        else:
            # The viewer read the owed entries from the log itself: out to the others first.
            group.pay()
        member = Member(group, socket, waiting)
        group.members.add(member)
        self._metrics.live_viewers += 1
        return member

    def leave(self, member: Member) -> None:
        """The viewer is gone (or the server ends its stream): no more writes to it."""
        group = member.group
        group.members.discard(member)
        group.write_pending_to(member)  # before it resumes after this batch on its own
        self._metrics.live_viewers -= 1
        member.waiting = False  # leaving by itself: nothing to wake
        member.detach(group.after)
        if not group.members:
            group.stop()

    def owe(self, group: _Group) -> None:
        """``group`` has entries to write this turn: pay it with every other such group, together."""
        self._owing.append(group)
        if self._owing_handle is None:
            self._owing_handle = asyncio.get_running_loop().call_soon(self._pay_owed)

    def _pay_owed(self) -> None:
        self._owing_handle = None
        groups, self._owing = self._owing, []
        for group in groups:
            try:
                group.pay_timed()
            except Exception:  # one group's failure is not the others'
                logger.exception("live fan-out of %s failed; its viewers read on their own", group.stream)
                group.stop_members()

    async def aclose(self) -> None:
        groups = list(self._groups.values())
        for group in groups:
            group.stop_members()
            group.stop()
        await asyncio.gather(*(g.task for g in groups if g.task is not None), return_exceptions=True)


class _Group:
    """The caught-up viewers of one stream and the one reader that writes to them.

    Over a :class:`~ssegate.log.base.LiveFeed` (both logs) there is no reader task: the log calls
    :meth:`_changed` on each new entry and the group flushes from a loop callback, which per event
    saves a task switch, a wait future and its timer. Any other log gets a reader task.
    """

    __slots__ = (
        "after",
        "budget",
        "bytes_written",
        "fanout",
        "flush_handle",
        "keepalive_bytes",
        "keepalive_handle",
        "key",
        "last_write",
        "live_log",
        "loop",
        "members",
        "next_seq",
        "owed",
        "pending",
        "pending_handle",
        "stream",
        "task",
        "unlisten",
        "view",
        "writing_time",
    )

    def __init__(
        self, fanout: FanOut, stream: str, after: str, view: WireView | None = None, key: str | None = None
    ) -> None:
        self.fanout = fanout
        self.stream = stream
        self.view = view  # None: the entries' stored bytes; else a dialect's
        self.key = stream if key is None else key  # in FanOut._groups
        self.keepalive_bytes = KEEPALIVE if view is None else view.keepalive
        self.after = after  # every member has been sent everything up to here
        # The sequence number of the entry right after ``after``, once a read has told (-1 before):
        # an appended entry that has it can be written as it is appended (see _changed).
        self.next_seq = -1
        self.members: set[Member] = set()
        self.bytes_written = 0
        self.loop = asyncio.get_running_loop()
        self.last_write = self.loop.time()  # members join caught up: no keep-alive due yet
        self.budget = 0.0  # how long after a write the next one waits to batch (see _timed_write)
        self.task: asyncio.Task[None] | None = None
        self.flush_handle: asyncio.Handle | None = None
        self.keepalive_handle: asyncio.TimerHandle | None = None
        self.unlisten: Callable[[], None] | None = None
        # A batch being written in slices: its framed bytes and the members still to write it to.
        self.pending: tuple[bytes, list[Member]] | None = None
        self.pending_handle: asyncio.Handle | None = None
        # Entries appended this turn, written at its end (see _changed); ``after`` includes them.
        self.owed: list[bytes] | None = None
        self.writing_time = 0.0  # spent on the batch in progress's slices so far
        self.live_log = fanout._live_log
        if self.live_log is None:
            self.task = asyncio.create_task(self._run(), name=f"ssegate-fanout-{stream}")
            return
        # A stream gone already: the first flush finds out and sends the members back to meet it.
        with contextlib.suppress(SSEGateError):
            self.unlisten = self.live_log.listen(stream, self._changed, after)
        # Entries may have landed between the viewer's last read and its joining: look at once.
        self.flush_handle = self.loop.call_soon(self._flush)
        self.keepalive_handle = self.loop.call_at(self.loop.time() + fanout._keepalive, self._keepalive)

    def stop(self) -> None:
        self._finish_pending()
        self._unregister()
        if self.task is not None:
            self.task.cancel()
        if self.unlisten is not None:
            self.unlisten()
            self.unlisten = None
        if self.flush_handle is not None:
            self.flush_handle.cancel()
            self.flush_handle = None
        if self.keepalive_handle is not None:
            self.keepalive_handle.cancel()
            self.keepalive_handle = None

    def _unregister(self) -> None:
        if self.fanout._groups.get(self.key) is self:
            del self.fanout._groups[self.key]

    # -- push: the embedded log calls back -------------------------------------------------------

    def _changed(self, appended: LogEntry | None = None) -> None:
        """The log appended ``appended`` to the stream (or dropped it: ``None``): write it at the end
        of this loop turn, or flush when the write budget ends.

        The common case, the next entry of a stream whose group has written everything before it
        and may write again, is taken here, inside the append, without reading the log back
        (76k -> 69k instructions per relayed token, callgrind under bench W4). Its bytes are owed
        until the end of the turn, when :class:`FanOut` writes every group's together: the many
        streams' tokens that one poll of the sockets brings in go out back to back, and a reader
        woken by the first write is still awake for the next. Written inside each append instead,
        with the next upstream read between, each write woke a client that had gone back to
        sleep: 2.6x the kernel time per write (perf, bench W4 N=150). Anything else flushes from
        the loop as before. Never called once the group stopped: stopping removes the listener."""
        if self.flush_handle is not None or self.pending is not None:
            return  # a batch still being written calls back here when it is done
        due = self.last_write + self.budget
        if due <= self.loop.time():
            if (
                appended is not None
                and appended.seq == self.next_seq
                and not appended.terminal
                and 0 < len(self.members) <= WRITE_SLICE
            ):
                view = self.view
                if view is None:  # the common case stays an attribute read
                    wire = b"" if appended.event == MARKER_EVENT else appended.wire
                else:
                    try:
                        wire = view.wire(appended)
                    except GapError:  # the flush meets it too, and sends the members back
                        self.flush_handle = self.loop.call_soon(self._flush)
                        return
                self.after = appended.id
                self.next_seq += 1
                if wire:  # never an empty one: framed, that is the chunk ending every response
                    if self.owed is None:
                        self.owed = [wire]
                        self.fanout.owe(self)
                    else:
                        self.owed.append(wire)
                return
            self.flush_handle = self.loop.call_soon(self._flush)
        else:
            self.flush_handle = self.loop.call_at(due, self._flush)

    def _flush(self) -> None:
        self.flush_handle = None
        assert self.live_log is not None
        if not self.members:
            self.stop()  # its last members were sent back (slow sockets); they start a new one
            return
        try:
            result = self.live_log.read_now(self.stream, self.after)
        except SSEGateError:
            self.stop_members()  # members read on their own and meet the error there
            return
        if result.reset or (result.closed and not result.entries):
            self.stop_members()  # members read on their own: they handle resets and the end
            return
        if result.entries:
            try:
                chunk = self._wire(result.entries)
            except GapError:
                self.stop_members()  # members read on their own and meet it there
                return
            self.after = result.entries[-1].id
            self.next_seq = result.entries[-1].seq + 1
            if self._in_slices(chunk, result.closed):
                self._write_in_slices(chunk, len(result.entries))
            else:
                self._timed_write(chunk, len(result.entries))
        if result.closed:
            self.stop_members()

    def pay(self) -> None:
        """Write what this turn's appends owe the members, now (before anything written after)."""
        owed, self.owed = self.owed, None
        if owed is not None:
            self._write(b"".join(owed), len(owed))

    def pay_timed(self) -> None:
        """:meth:`pay` at the end of the turn, setting the write budget as any write does."""
        owed, self.owed = self.owed, None
        if owed is not None:
            self._timed_write(b"".join(owed), len(owed))

    def _keepalive(self) -> None:
        # One timer per group, moved forward lazily: writes only update last_write.
        now = self.loop.time()
        due = self.last_write + self.fanout._keepalive
        if due <= now:
            if self.pending is None:  # else a batch is being written: nothing is idle
                self._write(self.keepalive_bytes, 0)
                self.last_write = now
            due = now + self.fanout._keepalive
        self.keepalive_handle = self.loop.call_at(due, self._keepalive)

    def _in_slices(self, chunk: bytes, closed: bool) -> bool:
        """Whether a batch goes out a slice per loop turn: only a large group's, and never an empty
        one (framed, that is the chunk ending every response) or the last (members leave after it).
        """
        return bool(chunk) and not closed and len(self.members) > WRITE_SLICE

    def _write_in_slices(self, chunk: bytes, events: int) -> None:
        """Push mode: write ``chunk`` to the members, a slice per loop turn (see _begin_batch)."""
        self._begin_batch(chunk, events)
        self._next_slice()

    def _next_slice(self) -> None:
        self.pending_handle = None
        if self._write_slice():
            self.pending_handle = self.loop.call_soon(self._next_slice)
        else:
            self._changed()  # entries appended meanwhile

    def _begin_batch(self, chunk: bytes, events: int) -> None:
        """Start writing ``chunk`` (see :meth:`_in_slices`) to the members as they are now;
        :meth:`_write_slice` goes on.

        Until it is done no other write starts (the next flush and keep-alive wait for it), and
        a member that leaves or is sent back first gets its copy at once: every member still
        receives every batch once and in order, and leaves with everything up to ``after``.
        """
        self.pay()
        self._count_write(chunk, events, len(self.members))
        self.pending = (frame(chunk), list(self.members))
        self.writing_time = 0.0

    def _write_slice(self) -> bool:
        """Write the batch in progress to the next ``WRITE_SLICE`` members; ``False`` once every
        member has it (the write budget is then set as for one write of the whole batch)."""
        if self.pending is None:
            return False  # finished early: the group stopped or had to write something else
        framed, remaining = self.pending
        started = time.perf_counter()
        batch, remaining[:WRITE_SLICE] = remaining[:WRITE_SLICE], []
        self._write_framed(framed, batch)
        self.writing_time += time.perf_counter() - started
        if remaining:
            return True
        self.pending = None
        self._wrote(self.writing_time)
        return False

    def _finish_pending(self) -> None:
        """Write the batch in progress to everyone still waiting for it, then what is owed, now."""
        if self.pending is not None:
            framed, remaining = self.pending
            self.pending = None
            if self.pending_handle is not None:
                self.pending_handle.cancel()
                self.pending_handle = None
            self._write_framed(framed, remaining)
        self.pay()

    def write_pending_to(self, member: Member) -> None:
        """``member`` leaves: give it the batch in progress first if its slice is still to come, and
        what this turn's appends owe it."""
        if self.pending is not None and member in self.pending[1]:
            self.pending[1].remove(member)
            member.socket.write(self.pending[0])
        if self.owed is not None:
            member.socket.write(frame(b"".join(self.owed)))

    # -- pull: a reader task (the Redis log) ----------------------------------------------------

    async def _run(self) -> None:
        fanout = self.fanout
        log = fanout._log
        loop = self.loop
        try:
            while self.members:
                result = await log.read(self.stream, self.after, wait=fanout._keepalive)
                if result.reset or (result.closed and not result.entries):
                    return  # members read on their own: they handle resets and the end
                if not result.entries:
                    # Empty: the keep-alive time passed, or the log's shared reader woke us for
                    # entries this group had already taken from Redis itself (the read after the
                    # write budget can run ahead of it). Only the first calls for a keep-alive; the
                    # second, under steady load, was a comment written to every member per batch.
                    if loop.time() - self.last_write >= fanout._keepalive / 2:
                        self._write(self.keepalive_bytes, 0)
                        self.last_write = loop.time()
                    continue
                entries = result.entries
                closed = result.closed
                budget_left = self.last_write + self.budget - loop.time()
                if budget_left > 0 and not closed:
                    await asyncio.sleep(budget_left)
                    more = await log.read(self.stream, entries[-1].id)
                    if not more.reset:
                        entries = entries + more.entries
                        closed = more.closed
                chunk = self._wire(entries)  # GapError: an SSEGateError, handled below
                self.after = entries[-1].id
                if self._in_slices(chunk, closed):
                    self._begin_batch(chunk, len(entries))
                    slices_left = self._write_slice()
                    while slices_left:
                        await asyncio.sleep(0)  # what arrived meanwhile (publishes) goes first
                        slices_left = self._write_slice()
                else:
                    self._timed_write(chunk, len(entries))
                if closed:
                    return
        except (SSEGateError, OSError):
            return  # members read on their own and meet the error there
        finally:
            self.stop_members()

    # -- both ------------------------------------------------------------------------------------

    def _wire(self, entries: list[LogEntry]) -> bytes:
        """The entries' bytes for this group's viewers (a dialect's may raise GapError)."""
        return _wire(entries) if self.view is None else _view_wire(self.view, entries)

    def _timed_write(self, chunk: bytes, events: int) -> None:
        """Write, then set how long the next write waits to batch: twice what this one took, at
        most ``coalesce``. A large group's write is a syscall per member and takes milliseconds,
        so it batches and writing stays under about a third of the loop; a small group's write
        takes microseconds, so its next event (an LLM's first token) goes out at once."""
        started = time.perf_counter()  # not loop.time(): uvloop's is the loop iteration's start
        self._write(chunk, events)
        self._wrote(time.perf_counter() - started)

    def _wrote(self, writing_time: float) -> None:
        """A batch is out after ``writing_time`` s of writes: the next waits twice that, at most
        ``coalesce``."""
        self.budget = min(2 * writing_time, self.fanout._coalesce)
        self.last_write = self.loop.time()

    def _write(self, chunk: bytes, events: int) -> None:
        if self.pending is not None or self.owed is not None:
            self._finish_pending()
        if not chunk:
            return  # only hidden entries; an empty HTTP chunk would end the response
        self._count_write(chunk, events, len(self.members))
        self._write_framed(frame(chunk), self.members)

    def _count_write(self, chunk: bytes, events: int, members: int) -> None:
        self.bytes_written += len(chunk)
        metrics = self.fanout._metrics
        metrics.bytes_sent += len(chunk) * members
        metrics.events_sent += events * members

    def _write_framed(self, framed: bytes, members: Iterable[Member]) -> None:
        dropped: list[Member] = []
        for member in members:  # a plain loop: a comprehension is a call of its own, per write
            if not member.socket.write(framed):
                dropped.append(member)
        for member in dropped:  # it has this write's events: it resumes after them
            self.members.discard(member)
            member.slow = not member.socket.closing  # a closed one just leaves
            member.detach(self.after)

    def stop_members(self) -> None:
        self._finish_pending()
        if self.task is None:
            self.stop()  # push mode: no task whose end would do it
        else:
            self._unregister()
        members, self.members = self.members, set()
        for member in members:
            member.detach(self.after)


def _wire(entries: list[LogEntry]) -> bytes:
    return b"".join(e.wire for e in entries if e.event != MARKER_EVENT)


def _view_wire(view: WireView, entries: list[LogEntry]) -> bytes:
    return b"".join([view.wire(e) for e in entries])
