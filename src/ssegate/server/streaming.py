"""Viewers: a cursor into the event log turned into SSE bytes, and the response that sends them.

A viewer is nothing but ``(stream, last id)``. Each wake-up reads *everything* after the cursor and
sends it in one write (the entries' bytes were encoded once, at append time, for every viewer), so a
slow viewer catches up in big writes and lags only itself. Keep-alive comments come from the log
read timing out, not from a timer task per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, Callable, Sequence

from starlette.types import Message, Receive, Scope, Send

from ssegate.codec.encoder import KEEPALIVE, encode_comment, encode_event, encode_retry
from ssegate.codec.events import Event
from ssegate.errors import LogError
from ssegate.log.appender import OutagePolicy
from ssegate.log.base import EventLog, Handoff, ReadResult
from ssegate.server.fanout import LIVE_BYTES, SERVER_SEND, ChunkedSocket, FanOut
from ssegate.server.limits import StreamTicket

logger = logging.getLogger("ssegate.server")

# What every event stream answers with. no-transform stops proxies (and compression middleware
# that honours it) from rewriting; X-Accel-Buffering: no stops nginx from buffering.
STREAM_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache, no-store, no-transform"),
    (b"x-accel-buffering", b"no"),
    (b"connection", b"keep-alive"),
    # A stream's URL may hold a ?token=: never hand it on as a Referer.
    (b"referrer-policy", b"no-referrer"),
]


# A viewer's reads failed for longer than the outage limit. No id: a reconnect resumes after the
# last real event (and finds the end the producer records once the log is back).
LOG_UNAVAILABLE_EVENT = encode_event(
    Event(
        event="error",
        data='{"code":"log_unavailable","message":"the event log is unreachable","retryable":true}',
    )
)


class _Stalled(Exception):
    """The client accepted no byte for the stall time: its connection was cut."""


def reset_event(reason: str) -> bytes:
    # An empty id resets the browser's lastEventId: a reconnect before the next real event
    # starts from the beginning again instead of re-sending the unusable id.
    return encode_event(Event(event="reset", data=f'{{"reason":"{reason}"}}', id=""))


async def follow_log(
    log: EventLog,
    stream: str,
    after: str | None,
    first: ReadResult,
    *,
    keepalive: float,
    outage: OutagePolicy | None = None,
) -> AsyncGenerator[bytes | Handoff, str | None]:
    """Yield one chunk of bytes per wake-up: every event after the cursor, or a keep-alive comment.

    ``first`` is the result of the read at ``after`` that the caller already made (to answer 204 or
    404 before the stream opens). After each write it offers itself to the live fan-out (yields a
    :class:`Handoff`); the response sends back the id the fan-out took it to, or ``None``. With an
    ``outage`` policy, reads that fail are retried (keep-alives meanwhile) for up to its viewer
    limit; then the stream ends with ``error {code: "log_unavailable"}`` (see :func:`read_patiently`).
    """
    result = first
    cursor = after
    failing_since: float | None = None  # when the log's reads began to fail
    retries = 0
    while True:
        chunk = b"".join(entry.wire for entry in result.entries)
        if result.reset:
            chunk = reset_event(result.reset) + chunk
            cursor = None
        if chunk:
            yield chunk
        if result.entries:
            cursor = result.entries[-1].id
        if result.closed:
            return
        if cursor is not None and failing_since is None:
            resumed = yield Handoff(stream, cursor)
            if resumed is not None:
                cursor = resumed
        try:
            result = await log.read(stream, cursor, wait=keepalive)
            failing_since, retries = None, 0
        except LogError:
            if outage is None:
                raise
            # The log is away (or came back without this stream, not yet written again by its
            # producer): keep the connection, with keep-alives, and read again after a back-off.
            now = time.monotonic()
            failing_since = now if failing_since is None else failing_since
            if now - failing_since > outage.viewer_limit:
                yield LOG_UNAVAILABLE_EVENT
                return
            await asyncio.sleep(min(outage.backoff(retries), keepalive))
            retries += 1
            result = ReadResult([])
        if not (result.entries or result.closed or result.reset):
            yield KEEPALIVE


class EventStreamResponse:
    """An ASGI response that streams ``chunks`` as ``text/event-stream``.

    Headers, an opening comment and ``retry:`` are flushed at once so proxies and browsers see
    the stream open before the first event. When the source offers a :class:`Handoff` and the
    socket allows it, the viewer joins the stream's live ``fanout`` group until the group sends
    it back (see :mod:`ssegate.server.fanout`). A client disconnect stops the chunk source at once
    (its ``finally`` blocks run: viewer counts drop, nothing is left running). With a ``ticket``
    (see :mod:`ssegate.server.limits`) the server may end the stream itself: at the ticket's
    deadline or on drain the chunk source is stopped the same way and the ticket's last words are
    sent before a clean end, so the client resumes with ``Last-Event-ID``.

    The parts signal each other with futures and events, never by cancelling the response's own
    task: while the source is read (in a task of its own, ``relay``), the response waits for the
    first of that task's end, the hang-up watcher's, and :attr:`ended` (the ticket's stop);
    while the viewer rides the fan-out, the response itself waits for the client's next message,
    and the group (or the ticket) wakes it through the socket's request event.
    """

    # Slots, and the per-call state on the response instead of in closures: a held connection
    # keeps this object for hours, and each closure (function plus cells) was ~0.2 KiB of it.
    __slots__ = ("chunks", "disconnected", "ended", "fanout", "final", "head", "last_words", "ticket", "wake")

    def __init__(
        self,
        chunks: AsyncGenerator[bytes | Handoff, str | None],
        *,
        retry_ms: int,
        headers: Sequence[tuple[str, str]] = (),
        ticket: StreamTicket | None = None,
        fanout: FanOut | None = None,
        opening: bytes | None = None,
        final: bytes | None = None,
    ) -> None:
        self.chunks = chunks
        self.ticket = ticket
        self.fanout = fanout
        # The response start and the opening bytes (by default a comment and ``retry:``), dropped
        # once sent.
        self.head: tuple[list[tuple[bytes, bytes]], bytes] | None = (
            STREAM_HEADERS + [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
            encode_comment("ssegate") + encode_retry(retry_ms) if opening is None else opening,
        )
        # What to send instead of the ticket's last words when the server ends the stream (a
        # dialect's own error event: a vendor SDK reads neither ``retry:`` nor ssegate's events).
        self.final = final
        # A plain flag, not an asyncio.Event: nothing awaits it, and an idle connection is mostly
        # its small objects (an Event's deque alone is ~0.6 KiB).
        self.disconnected = False
        # Set when the server itself ends the stream (deadline, drain): the last bytes to send.
        self.last_words: list[bytes] = []
        # How a stop reaches the response: resolved while the source is read; the socket's wake-up
        # while the viewer rides the fan-out.
        self.ended: asyncio.Future[None] | None = None
        self.wake: Callable[[], None] | None = None

    def _stop(self, final: bytes) -> None:
        """The ticket ends the stream (deadline, drain): the response sends ``final`` and ends."""
        if self.last_words or self.disconnected:
            return
        self.last_words.append(final if self.final is None else self.final)
        if self.ended is not None and not self.ended.done():
            self.ended.set_result(None)
        if self.wake is not None:
            self.wake()

    async def _hang_up(self, receive: Receive) -> None:
        """Returns when the client hangs up."""
        while (await receive())["type"] != "http.disconnect":
            pass
        self.disconnected = True

    async def _relay(self, reply: str | None, scope: Scope, send: Send, live: bool) -> Handoff | None:
        """Send the source's bytes until it offers a hand-off to the fan-out (``live``: the socket
        can take one), returned; at the source's end, the end of the body (in the same turn as
        its last bytes), and ``None``."""
        ticket = self.ticket
        while True:
            try:
                item = await self.chunks.asend(reply)
            except StopAsyncIteration:
                self.last_words[:] = [b""]  # nothing may stop the stream any more
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return None
            reply = None
            if isinstance(item, Handoff):
                if live:
                    return item
                continue
            await self._send_within(scope, send, item)
            if ticket is not None:
                ticket.sent(item)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.head is not None, "an EventStreamResponse is sent once"
        ticket = self.ticket
        headers, opening = self.head
        self.head = None
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": opening, "more_body": True})
        del headers, opening
        fanout = self.fanout
        socket = ChunkedSocket.under(scope.get(SERVER_SEND)) if fanout is not None else None
        loop = asyncio.get_running_loop()
        watcher: asyncio.Task[None] | None = loop.create_task(self._hang_up(receive))
        relay: asyncio.Task[Handoff | None] | None = None
        finished = False  # the source ended: nothing may stop the stream any more
        try:
            if ticket is not None:
                ticket.attach(self._stop)
            reply: str | None = None
            while not (self.disconnected or self.last_words):
                relay = loop.create_task(self._relay(reply, scope, send, socket is not None))
                self.ended = loop.create_future()
                if watcher is None:
                    watcher = loop.create_task(self._hang_up(receive))
                await asyncio.wait((relay, watcher, self.ended), return_when=asyncio.FIRST_COMPLETED)
                self.ended = None  # held by nothing else: an idle subscriber keeps no future for it
                if not relay.done():
                    # the client left (or its connection failed), or the ticket ended the stream
                    self.disconnected = self.disconnected or watcher.done()
                    break
                handoff = relay.result()  # raises what sending raised
                relay = None
                if handoff is None:
                    finished = True
                    break
                assert fanout is not None
                assert socket is not None
                # Live: ride the stream's fan-out group until it sends this viewer back.
                # Meanwhile this task itself waits on ``receive`` for the hang-up (no watcher task,
                # ~1 KiB, per idle subscriber); the group, or the ticket, wakes it by setting the
                # socket's request event (``socket.wake``). Sent back for a slow socket, the viewer
                # waits for it to drain and rejoins if the group is still where it left it;
                # otherwise (a reset, the end, a group that moved on) the chunk source takes over
                # from ``reply``. Inline rather than a method: one coroutine frame (~0.3 KiB) less
                # on every idle subscriber.
                watcher.cancel()
                watcher = None  # a finished task still holds its memory
                self.wake = socket.wake
                reply = None
                while not self.last_words and (member := fanout.join(handoff, socket, waiting=True)):
                    try:
                        while member.resumed is None and not (self.disconnected or self.last_words):
                            self.disconnected = (await receive())["type"] == "http.disconnect"
                    finally:
                        fanout.leave(member)
                        scope[LIVE_BYTES] = scope.get(LIVE_BYTES, 0) + member.bytes_sent
                    reply = member.resumed
                    if self.disconnected or not member.slow:
                        break
                    # An empty body message writes nothing but waits for flow control.
                    await self._send_within(scope, send, b"")
                    assert reply is not None
                    handoff = dataclasses.replace(handoff, after=reply)  # its view too
                self.wake = None
            if not (finished or self.disconnected) and self.last_words:
                await self._end_with(send, self.last_words[0])
        except OSError:
            pass  # the socket died under us; same as a disconnect
        except _Stalled:
            self.disconnected = True  # cut: the client resumes with Last-Event-ID
        finally:
            self.wake = None
            # The tasks this response started end with it (a cancel of one's own child, awaited).
            children = [task for task in (relay, watcher) if task is not None and not task.done()]
            for task in children:
                task.cancel()
            if children:
                await asyncio.wait(children)
            if ticket is not None:
                ticket.close()
            with contextlib.suppress(Exception):
                await self.chunks.aclose()

    async def _send_within(self, scope: Scope, send: Send, body: bytes) -> None:
        """Send ``body``, unless the client accepts nothing for the ticket's stall time: then its
        connection is cut and :class:`_Stalled` raised (a frozen tab, a dead phone: without it
        the stream would hold its slot and its buffers for ever)."""
        message: Message = {"type": "http.response.body", "body": body, "more_body": True}
        stall = self.ticket.stall if self.ticket is not None else 0.0
        if stall <= 0:
            await send(message)
            return
        try:
            async with asyncio.timeout(stall):
                await send(message)
        except TimeoutError:
            logger.info("dropped a viewer that accepted nothing for %g s", stall)
            cycle = getattr(scope.get(SERVER_SEND, send), "__self__", None)
            transport = getattr(cycle, "transport", None)
            if transport is not None:
                transport.abort()  # buffered bytes go with it
            raise _Stalled from None

    @staticmethod
    async def _end_with(send: Send, final: bytes) -> None:
        """The server ends the stream: its last words, then a clean end of the body."""
        with contextlib.suppress(OSError):
            await send({"type": "http.response.body", "body": final, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
