"""Limits with clear answers, and the server's hold on every open stream.

- streams per principal and in total: 429 with ``Retry-After``;
- generation starts per principal per minute (sliding window): 429 with ``Retry-After``;
- prompt size (characters of messages + system): 413 ``prompt_too_large``;
- a stream's lifetime: at its deadline (the stream token's expiry or ``max_stream_seconds``), or
  when the process drains, the server ends it itself with a last word (an ``error`` event without
  ``id`` for an expired token, a ``retry:`` line otherwise) so the client resumes with
  ``Last-Event-ID`` where it was.

The start rate and the stream counts are counted in the event log's store when it is shared
(Redis): N processes enforce the configured numbers, not N times them (stream slots are leased:
a crashed process's free themselves, see :mod:`ssegate.log.slots`). With the memory log they are
this process's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable

from ssegate.codec.encoder import encode_comment, encode_event, encode_retry
from ssegate.codec.events import Event
from ssegate.errors import RequestError
from ssegate.log.base import WindowCounter
from ssegate.request import GenerationRequest, prompt_chars
from ssegate.server.metrics import Metrics

logger = logging.getLogger("ssegate.server")


@runtime_checkable
class SharedSlots(Protocol):
    """Concurrent-stream slots counted for every process (:class:`ssegate.log.slots.RedisSlots`)."""

    async def take(self, limit_key: str, limit: int, process: str, ttl: float) -> bool: ...

    async def give_back(self, limit_key: str, process: str) -> None: ...

    async def renew(self, holding: Mapping[str, int], process: str, ttl: float) -> None: ...


@runtime_checkable
class SlotSource(Protocol):
    """An event log whose store counts stream slots for every process (the Redis log)."""

    def slots(self) -> SharedSlots: ...


# A slot frees when some stream ends, which cannot be predicted: ask for a short wait.
STREAM_LIMIT_RETRY_AFTER = 5
DRAINING_RETRY_AFTER = 1
# A wake-up that writes this much at once is a viewer catching up on a backlog.
LAGGING_CHUNK_BYTES = 64 * 1024
RATE_WINDOW = 60.0


def too_many(code: str, message: str, retry_after: int) -> RequestError:
    return RequestError(
        429, code, message, headers={"retry-after": str(retry_after)}, extra={"retry_after": retry_after}
    )


def check_prompt_size(request: GenerationRequest, limit: int) -> None:
    if limit <= 0:
        return
    size = prompt_chars(request)
    if size > limit:
        raise RequestError(
            413,
            "prompt_too_large",
            f"the prompt has {size} characters; the limit is {limit} (messages and system together)",
            extra={"limit": limit, "size": size},
        )


class LocalWindows:
    """:class:`~ssegate.log.base.WindowCounter` for one process (the in-memory log's deployments)."""

    def __init__(self) -> None:
        self._hits: dict[str, deque[float]] = {}

    async def admit(self, key: str, limit: int, window: float, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - window:
            hits.popleft()
        if len(hits) >= limit:
            return hits[0] + window - now
        hits.append(now)
        return 0.0


class StartRate:
    """At most ``per_minute`` generation starts per principal in any 60 s window, counted by
    ``counter``: over Redis, every process shares the count (two workers allow the rate, not twice it)."""

    def __init__(self, per_minute: int, metrics: Metrics, counter: WindowCounter | None = None) -> None:
        self.per_minute = per_minute
        self._counter: WindowCounter = LocalWindows() if counter is None else counter
        self._metrics = metrics

    async def check(self, principal: str) -> None:
        if self.per_minute <= 0:
            return
        wait = await self._counter.admit(f"starts:{principal}", self.per_minute, RATE_WINDOW)
        if wait > 0:
            self._metrics.rejected["start_rate"] += 1
            seconds = max(1, math.ceil(wait))
            raise too_many(
                "rate_limited",
                f"more than {self.per_minute} generations started in a minute; retry in {seconds} s",
                seconds,
            )


def token_expired_event() -> bytes:
    # No id: the client's Last-Event-ID stays at the last real event, so a resume with a fresh
    # token continues exactly there.
    data = {
        "code": "token_expired",
        "message": "the stream token expired; resume with a new one",
        "retryable": True,
    }
    return encode_event(Event(event="error", data=json.dumps(data, separators=(",", ":"))))


class StreamTicket:
    """One open stream's slot, deadline and the way the server ends it (see :class:`OpenStreams`)."""

    __slots__ = (
        "_deadline_final",
        "_lagging",
        "_metrics",
        "_owner",
        "_stop",
        "_timer",
        "deadline",
        "principal",
        "shared",
    )

    def __init__(
        self,
        owner: OpenStreams,
        principal: str,
        deadline: float | None,
        deadline_final: bytes,
        metrics: Metrics,
    ) -> None:
        self._owner = owner
        self.principal = principal
        self.deadline = deadline  # time.time() at which the server ends the stream, or None
        self._deadline_final = deadline_final
        self._metrics = metrics
        self._stop: Callable[[bytes], None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._lagging = False
        self.shared: tuple[str, ...] = ()  # the shared limits this stream holds a slot of

    @property
    def stall(self) -> float:
        """Seconds a write may wait for the client to accept bytes before it is dropped (0: ever)."""
        return self._owner.stall_seconds

    def attach(self, stop: Callable[[bytes], None]) -> None:
        """Called by the response once its stream is open: ``stop(last_bytes)`` ends it."""
        self._stop = stop
        self._owner.attached.add(self)
        if self.deadline is not None:
            delay = max(0.0, self.deadline - time.time())
            self._timer = asyncio.get_running_loop().call_later(delay, stop, self._deadline_final)
        if self._owner.draining and self._owner.ending_open:
            stop(self._owner.drain_final)

    def sent(self, chunk: bytes) -> None:
        """Count a write (hot path: a few int operations per wake-up, not per event)."""
        metrics = self._metrics
        metrics.bytes_sent += len(chunk)
        # Every event ends with a blank line and nothing else we write does (comments and
        # retry lines need none), so this counts events without parsing.
        metrics.events_sent += chunk.count(b"\n\n")
        lagging = len(chunk) >= LAGGING_CHUNK_BYTES
        if lagging is not self._lagging:
            self._lagging = lagging
            metrics.lagging_viewers += 1 if lagging else -1

    def close(self) -> None:
        """Release the slot (idempotent)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._lagging:
            self._lagging = False
            self._metrics.lagging_viewers -= 1
        self._owner.release(self)


class OpenStreams:
    """Every stream this process serves: the slot counts, and the drain that ends them all."""

    def __init__(
        self,
        *,
        per_principal: int,
        total: int,
        max_seconds: float,
        retry_ms: int,
        metrics: Metrics,
        stall_seconds: float = 0.0,
        shared: SharedSlots | None = None,
        process: str = "",
        lease_ttl: float = 6.0,
    ) -> None:
        self.per_principal = per_principal
        self.total = total
        self.max_seconds = max_seconds
        self.metrics = metrics
        self.stall_seconds = stall_seconds  # a viewer accepting nothing this long is dropped
        self.draining = False
        self.ending_open = False  # the drain ends open streams too (they resume elsewhere)
        self.attached: set[StreamTicket] = set()
        self._all_closed: asyncio.Event | None = None  # set when the last stream ends (drain)
        self._held: set[StreamTicket] = set()
        self._by_principal: dict[str, int] = {}
        # Over Redis: the slots of every process together are counted there (see SharedSlots);
        # ``holding`` is what this process holds of each shared limit, renewed every lease_ttl / 3.
        self.shared = shared
        self.process = process
        self.lease_ttl = lease_ttl
        self.holding: Counter[str] = Counter()
        self._giving_back: set[asyncio.Task[None]] = set()
        # Before closing, remind the client how soon to come back: EventSource reconnects by itself.
        self.lifetime_final = encode_comment("stream lifetime reached; reconnect") + encode_retry(retry_ms)
        self.drain_final = encode_comment("server draining; reconnect") + encode_retry(retry_ms)

    async def open(self, principal: str, token_expires_at: float | None = None) -> StreamTicket:
        """A slot for a new stream of ``principal``; raises 503 while draining, 429 when full
        (over Redis: when full counting every process's streams)."""
        ticket = self.open_here(principal, token_expires_at)
        if self.shared is not None:
            try:
                await self._take_shared(ticket)
            except BaseException:
                ticket.close()
                raise
        return ticket

    async def _take_shared(self, ticket: StreamTicket) -> None:
        assert self.shared is not None
        taken: list[str] = []
        for limit_key, limit, refused in (
            (f"streams:{ticket.principal}", self.per_principal, self._too_many_of_principal),
            ("streams", self.total, self._server_busy),
        ):
            if limit <= 0:
                continue
            try:
                ok = await self.shared.take(limit_key, limit, self.process, self.lease_ttl)
            except Exception as exc:  # Redis unreachable: count here; the next renewal tells it
                logger.warning("stream slots: counted in this process only (%r)", exc)
                ok = True
            if not ok:
                ticket.shared = tuple(taken)  # given back by close()
                raise refused(ticket.principal, limit)
            taken.append(limit_key)
            self.holding[limit_key] += 1
        ticket.shared = tuple(taken)

    def _too_many_of_principal(self, principal: str, limit: int) -> RequestError:
        self.metrics.rejected["streams_per_principal"] += 1
        return too_many(
            "too_many_streams",
            f"{principal!r} already has {limit} open streams (limit {limit})",
            STREAM_LIMIT_RETRY_AFTER,
        )

    def _server_busy(self, principal: str, limit: int) -> RequestError:
        self.metrics.rejected["streams_total"] += 1
        return too_many("server_busy", f"{limit} streams are open (the limit)", STREAM_LIMIT_RETRY_AFTER)

    def _give_back(self, keys: tuple[str, ...]) -> None:
        for limit_key in keys:
            self.holding[limit_key] -= 1
            if self.holding[limit_key] <= 0:
                del self.holding[limit_key]
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a close at exit): the lease runs out by itself
            return
        if self.shared is None:
            return
        task = loop.create_task(self._give_back_shared(keys))
        self._giving_back.add(task)  # a reference until done: the loop keeps only a weak one
        task.add_done_callback(self._giving_back.discard)

    async def _give_back_shared(self, keys: tuple[str, ...]) -> None:
        assert self.shared is not None
        for limit_key in keys:
            try:
                await self.shared.give_back(limit_key, self.process)
            except Exception as exc:  # the next renewal sets the count right
                logger.warning("stream slots: a release failed (%r)", exc)

    async def renew_forever(self) -> None:
        """Keep this process's shared slots leased, their counts set to what it holds (which
        also repairs a count a lost reply or an outage left wrong)."""
        assert self.shared is not None
        renewed: set[str] = set()
        while True:
            await asyncio.sleep(self.lease_ttl / 3)
            # Limits held until now and no longer get 0: their count here is dropped there too.
            holding = {key: self.holding.get(key, 0) for key in renewed | set(self.holding)}
            try:
                await self.shared.renew(holding, self.process, self.lease_ttl)
            except Exception as exc:
                logger.warning("stream slots: renewal failed (%r)", exc)
                continue
            renewed = set(self.holding)

    async def aclose(self) -> None:
        """This process stops: its shared slots are given back at once (not at lease expiry)."""
        await asyncio.gather(*self._giving_back, return_exceptions=True)
        if self.shared is not None and self.holding:
            with contextlib.suppress(Exception):
                await self.shared.renew(dict.fromkeys(self.holding, 0), self.process, self.lease_ttl)

    def open_here(self, principal: str, token_expires_at: float | None = None) -> StreamTicket:
        """:meth:`open` counting this process's streams only."""
        if self.draining:
            self.metrics.rejected["draining"] += 1
            raise RequestError(
                503,
                "draining",
                "this server is shutting down; retry (another server will answer)",
                headers={"retry-after": str(DRAINING_RETRY_AFTER)},
            )
        held = self._by_principal.get(principal, 0)
        if self.per_principal > 0 and held >= self.per_principal:
            self.metrics.rejected["streams_per_principal"] += 1
            raise too_many(
                "too_many_streams",
                f"{principal!r} already has {held} open streams (limit {self.per_principal})",
                STREAM_LIMIT_RETRY_AFTER,
            )
        if self.total > 0 and len(self._held) >= self.total:
            self.metrics.rejected["streams_total"] += 1
            raise too_many(
                "server_busy",
                f"this server has {len(self._held)} open streams (its limit)",
                STREAM_LIMIT_RETRY_AFTER,
            )
        deadline, final = None, b""
        if self.max_seconds > 0:
            deadline, final = time.time() + self.max_seconds, self.lifetime_final
        if token_expires_at is not None and (deadline is None or token_expires_at < deadline):
            deadline, final = token_expires_at, token_expired_event()
        ticket = StreamTicket(self, principal, deadline, final, self.metrics)
        self._held.add(ticket)
        self._by_principal[principal] = held + 1
        self.metrics.streams_open += 1
        self.metrics.streams_total += 1
        return ticket

    def release(self, ticket: StreamTicket) -> None:
        if ticket.shared:
            keys, ticket.shared = ticket.shared, ()
            self._give_back(keys)
        self.attached.discard(ticket)
        if not self.attached and self._all_closed is not None:
            self._all_closed.set()
        if ticket not in self._held:
            return
        self._held.remove(ticket)
        left = self._by_principal[ticket.principal] - 1
        if left:
            self._by_principal[ticket.principal] = left
        else:
            del self._by_principal[ticket.principal]
        self.metrics.streams_open -= 1

    async def until_closed(self, within: float) -> None:
        """Wait (up to ``within`` s) until every open stream has ended (the drain's last step)."""
        if not self.attached:
            return
        self._all_closed = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self._all_closed.wait()
        self._all_closed = None

    def drain(self, *, end_open: bool = True) -> None:
        """Refuse new streams; with ``end_open``, end every open one cleanly (clients resume
        elsewhere). Without, open streams go on to their end (no other process has their events)."""
        self.draining = True
        self.ending_open = end_open
        if not end_open:
            return
        for ticket in list(self.attached):
            if ticket._stop is not None:
                ticket._stop(self.drain_final)
