"""LLM generations: provider -> event log, and the lifecycle around it. No HTTP here.

A generation is a stream in the event log plus one producer task in the process that started it.
The producer maps provider events onto the wire vocabulary and appends them; viewers (anywhere)
only read the log. Lifecycle, one model for every case::

    pending -> streaming -> done | error | cancelled

- a viewer leaving changes nothing: a reload resumes from the log;
- nobody watching, in any process, for ``abandon_grace`` s (``first_viewer_grace`` s from the
  start if nobody has watched yet): the upstream call is closed and the stream ends
  ``done {finish_reason: "cancelled", reason: "abandoned"}`` (unless ``keep_running``);
- ``cancel`` appends that terminal event itself (from any process); the producer stops on its next
  append (``StreamClosed``) or its next lease tick, whichever comes first, and at once when local;
- a producer renews a lease; if its process dies, whoever watches or describes the stream ends it
  with ``error {code: "upstream_lost"}`` once the lease has expired;
- the log unreachable for a while: the producer's events wait in memory and land in order once it
  is back (:mod:`ssegate.log.appender`); nobody judges leases or abandonment until the log has
  been back for a lease's length; past ``OutagePolicy.limit`` the generation ends
  ``error {code: "log_unavailable"}``, recorded once the log is back.

Exactly one terminal event lands because the log refuses appends after the first (``StreamClosed``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import json
import logging
import os
import re
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from ssegate.errors import LogError, LogUnavailable, StreamClosed, StreamNotFound
from ssegate.log.appender import DurableAppender, OutagePolicy
from ssegate.log.base import EventLog, ListenableLog, LogEntry, Retention
from ssegate.providers.base import (
    Finished,
    GenerationRequest,
    ModelInfo,
    Provider,
    ProviderEvent,
    RedactedThinking,
    TextDelta,
    ThinkingDelta,
    ThinkingSignature,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    UpstreamError,
    Usage,
    WireEvent,
    check_request,
)
from ssegate.text import dumps_scrubbed

logger = logging.getLogger("ssegate.gateway")

TERMINAL_STATES = frozenset({"done", "error", "cancelled"})
VIEWER = "viewer"
PRODUCER = "producer"

# Ids: 8 hex digits of the creation time (so an expired id can be told from an unknown one:
# 410 vs 404) followed by 128 random bits (unguessable).
_ID_RE = re.compile(r"^[0-9a-f]{8}[A-Za-z0-9_-]{22}$")
# Loop turns a new generation's producer gets before ``start`` returns (see there).
_PRODUCER_TURNS = 2


def new_generation_id(now: float | None = None) -> str:
    created = int(time.time() if now is None else now)
    return f"{created:08x}{secrets.token_urlsafe(16)}"


def is_generation_id(value: str) -> bool:
    return _ID_RE.match(value) is not None


def id_created_at(generation_id: str) -> float:
    return float(int(generation_id[:8], 16))


def stream_key(generation_id: str) -> str:
    return f"gen:{generation_id}"


def process_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def _json(value: dict[str, Any]) -> str:
    # orjson: compact, UTF-8 as is; about a third of json's cost on the per-token path. It refuses
    # lone surrogates (which an SDK's json.loads lets through): then they become U+FFFD.
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return dumps_scrubbed(value)


@dataclass(slots=True)
class _Local:
    """What this process knows about a generation it runs or serves."""

    viewers: int = 0
    unwatched_since: float = field(default_factory=time.monotonic)
    # Until a first viewer arrives the longer first_viewer_grace applies: the POST's answer still
    # has to reach the client and its GET come back, on whatever network the user is on.
    watched: bool = False
    producer: asyncio.Task[None] | None = None
    keep_running: bool = False
    mapper: _WireMapper | None = None  # the producer's, while it runs here
    # Resolved at the upstream's first event (None) or its failure before one (the error data).
    started: asyncio.Future[dict[str, Any] | None] | None = None
    answering: int = 0  # POSTs waiting for it to start: it is not abandoned meanwhile
    # This process's viewer membership in the log is written under this lock, each write saying
    # what ``viewers`` is when it runs (see Gateway._sync_viewer): a leave's withdrawal can then
    # never land after the next viewer's heartbeat and leave an open stream uncounted.
    membership: asyncio.Lock = field(default_factory=asyncio.Lock)


ProviderFactory = Callable[[str], Provider]


# -- for an app's own producers (ssegate.producers) ----------------------------------------------


@dataclass(frozen=True, slots=True)
class GenerationInfo:
    """The generation a producer runs for: set in its task's context by :meth:`Gateway.start`."""

    id: str
    provider: str
    model: str
    owner: str
    metadata: Mapping[str, Any]


CURRENT_GENERATION: contextvars.ContextVar[GenerationInfo | None] = contextvars.ContextVar(
    "ssegate_generation", default=None
)


class Gateway:
    """Starts, cancels and describes generations; tracks viewers for abandonment and leases."""

    def __init__(
        self,
        log: EventLog,
        providers: ProviderFactory,
        *,
        retention: Retention,
        abandon_grace: float = 10.0,
        first_viewer_grace: float = 10.0,
        lease_ttl: float = 6.0,
        process_id: str | None = None,
        outage: OutagePolicy | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self.log = log
        # A log in this process takes appends without a coroutine: producers then append from the
        # upstream socket's callback (see _produce_pushed). Asked once: isinstance() against a
        # runtime-checkable Protocol walks its members.
        self._live_log = log if isinstance(log, ListenableLog) else None
        self._providers = providers
        self._retention = retention
        self._abandon_grace = abandon_grace
        self._first_viewer_grace = max(first_viewer_grace, abandon_grace)
        self._lease_ttl = lease_ttl
        self._process = process_id or process_identity()
        self._local: dict[str, _Local] = {}
        self._ticker: asyncio.Task[None] | None = None
        self.on_terminal: Callable[[str, str, dict[str, Any]], None] | None = None
        self.outage = outage or OutagePolicy()
        self._start_timeout = start_timeout
        # When this process last saw the log fail: leases and viewer heartbeats ran out during an
        # outage through nobody's fault, so nobody is judged lost until they could renew again.
        self._log_trouble_at = -float("inf")
        # Producers that gave up on the log and wait to record how their generation ended.
        self._recorders: set[asyncio.Task[None]] = set()

    # -- lifecycle of the gateway itself -------------------------------------------------------

    async def __aenter__(self) -> Gateway:
        self._ticker = asyncio.create_task(self._tick_forever(), name="ssegate-gateway-ticker")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self, *, drain_timeout: float = 0.0) -> None:
        """Stop: wait up to ``drain_timeout`` for running generations, then end the rest."""
        await self.settle(drain_timeout)
        for recorder in list(self._recorders):
            recorder.cancel()
        await asyncio.gather(*self._recorders, return_exceptions=True)
        if self._ticker:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker

    async def settle(self, within: float) -> None:
        """Let running generations finish for up to ``within`` s, then end the rest with
        ``done {finish_reason: "cancelled", reason: "shutdown"}`` (the drain)."""
        producers = [local.producer for local in self._local.values() if local.producer]
        if producers and within > 0:
            await asyncio.wait(producers, timeout=within)
        for generation_id, local in list(self._local.items()):
            # Held here: the producer may finish (and be forgotten) while its end is written.
            producer = local.producer
            if producer and not producer.done():
                try:
                    await self._end(
                        generation_id, "cancelled", {"finish_reason": "cancelled", "reason": "shutdown"}
                    )
                except LogError as exc:  # its viewers' own outage limit ends their streams
                    logger.warning("generation %s: could not record its shutdown: %s", generation_id, exc)
                producer.cancel()
        if producers:
            await asyncio.gather(*producers, return_exceptions=True)

    # -- the operations --------------------------------------------------------------------------

    async def start(
        self,
        request: GenerationRequest,
        *,
        provider_name: str,
        keep_running: bool = False,
        owner: str = "",
        provider: Provider | None = None,
    ) -> dict[str, str]:
        """Create the generation's stream and start its producer. Returns its metadata, once the
        producer has sent its upstream request (or met its first wait before that).

        ``provider``: run this one rather than the one named (an app's own producer, see
        :mod:`ssegate.producers`).

        Raises :class:`ssegate.providers.base.ConfigurationError` (unknown provider, no key), or a
        400 for what the provider cannot honour, before anything is created.
        """
        provider = provider or self._providers(provider_name)
        check_request(provider, request)
        generation_id = new_generation_id()
        key = stream_key(generation_id)
        model = request.model or provider.info.default_model
        meta = {
            "id": generation_id,
            "state": "pending",
            "provider": provider.info.name,
            "model": model,
            "owner": owner,
            "keep_running": "1" if keep_running else "0",
            "created_at": f"{time.time():.3f}",
        }
        if request.metadata is not None:
            meta["metadata"] = _json(dict(request.metadata))
        await self.log.create(key, self._retention)
        # One round trip for both (a start's time to first token counts every one).
        await asyncio.gather(
            self.log.set_meta(key, meta), self.log.heartbeat(key, PRODUCER, self._process, self._lease_ttl)
        )
        local = self._local[generation_id] = _Local(keep_running=keep_running)
        local.started = asyncio.get_running_loop().create_future()
        # The producer's task knows its generation (ssegate.producers.current_generation).
        context = contextvars.copy_context()
        info = GenerationInfo(generation_id, provider.info.name, model, owner, dict(request.metadata or {}))
        context.run(CURRENT_GENERATION.set, info)
        local.producer = asyncio.create_task(
            self._produce(generation_id, provider, request, model, meta),
            name=f"ssegate-generation-{generation_id}",
            context=context,
        )
        # The producer goes first: its upstream request is on the way to the first token, the
        # caller's answer to its own client (a response head) is not. Two turns of the loop: the
        # producer's first step, then the task in which aiohttp writes the request (its own task
        # on Python < 3.12). One generation at a time its first token comes ~1 ms sooner
        # (docs/benchmarks/history.md, W5).
        for _ in range(_PRODUCER_TURNS):
            await asyncio.sleep(0)
        return meta

    async def cancel(self, generation_id: str, reason: str = "cancelled") -> bool:
        """End the generation now. Idempotent: ``False`` if it had already ended."""
        ended = await self._end(generation_id, "cancelled", {"finish_reason": "cancelled", "reason": reason})
        local = self._local.get(generation_id)
        if local and local.producer and not local.producer.done():
            local.producer.cancel()
        return ended

    async def describe(self, generation_id: str) -> dict[str, Any] | None:
        """The generation's state as JSON-ready values, or ``None`` if the log does not know it.

        A running generation whose producer (in another process) stopped renewing its lease is
        ended ``upstream_lost`` first, as its viewers would: asking for its state is enough to learn
        it is gone, watched or not.
        """
        key = stream_key(generation_id)
        meta = await self.log.get_meta(key)
        if not self._produces(generation_id) and await self._end_if_producer_lost(generation_id, meta):
            meta = await self.log.get_meta(key)
        if not meta:
            return None
        viewers = await self.log.live_members(key, VIEWER)
        usage = json.loads(meta["usage"]) if meta.get("usage") else None
        return {
            "id": generation_id,
            "state": meta.get("state", "pending"),
            "provider": meta.get("provider"),
            "model": meta.get("model"),
            "finish_reason": meta.get("finish_reason") or None,
            "error": json.loads(meta["error"]) if meta.get("error") else None,
            "usage": usage,
            "viewers": viewers,
            "keep_running": meta.get("keep_running") == "1",
            "created_at": float(meta["created_at"]) if meta.get("created_at") else None,
            "finished_at": float(meta["finished_at"]) if meta.get("finished_at") else None,
            "owner": meta.get("owner", ""),
            "metadata": json.loads(meta["metadata"]) if meta.get("metadata") else None,
        }

    async def until_started(self, generation_id: str) -> dict[str, Any] | None:
        """Wait until a generation started here has its upstream's first event (``None``) or has
        failed before it (the ``error`` data: the caller can still answer with a status). Bounded
        by the start deadline; ``None`` at once for a generation not started here."""
        local = self._local.get(generation_id)
        if local is None or local.started is None:
            return None
        local.answering += 1
        try:
            return await asyncio.shield(local.started)
        finally:
            local.answering -= 1
            # The first viewer's grace runs from the answer, which its client still has to get.
            local.unwatched_since = time.monotonic()

    def _produces(self, generation_id: str) -> bool:
        """Whether this process runs the generation's producer."""
        local = self._local.get(generation_id)
        return local is not None and local.producer is not None

    @contextlib.asynccontextmanager
    async def viewing(self, generation_id: str) -> AsyncIterator[None]:
        """Count a viewer for as long as the block runs (abandonment is judged from these counts)."""
        key = stream_key(generation_id)
        local = self._local.setdefault(generation_id, _Local())
        local.viewers += 1
        local.watched = True
        try:
            if local.viewers == 1:
                await self._sync_viewer(key, local)
            yield
        finally:
            local.viewers -= 1
            if local.viewers == 0:
                local.unwatched_since = time.monotonic()
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._last_viewer_left(generation_id, key, local))

    async def _last_viewer_left(self, generation_id: str, key: str, local: _Local) -> None:
        try:
            await self._sync_viewer(key, local)
        finally:
            # Forgotten only once its withdrawal is written: a viewer arriving meanwhile joins this
            # entry (and its lock), not a fresh one whose heartbeat could race the withdrawal.
            if local.viewers == 0 and local.producer is None and self._local.get(generation_id) is local:
                del self._local[generation_id]

    async def _sync_viewer(self, key: str, local: _Local) -> None:
        """Write this process's viewer membership of ``key`` as ``local.viewers`` says it is now:
        a heartbeat while anyone watches here, else its withdrawal. Serialised per generation, so
        the last write always matches the last join or leave."""
        async with local.membership:
            if local.viewers:
                await self.log.heartbeat(key, VIEWER, self._process, self._lease_ttl)
            else:
                await self.log.drop_member(key, VIEWER, self._process)

    # -- producing -----------------------------------------------------------------------------

    async def _produce(
        self,
        generation_id: str,
        provider: Provider,
        request: GenerationRequest,
        model: str,
        meta: dict[str, str],
    ) -> None:
        key = stream_key(generation_id)
        mapper = _WireMapper(generation_id, provider.info.name, model, request.metadata)
        first: asyncio.Future[dict[str, Any] | None] | None = None
        if (local := self._local.get(generation_id)) is not None:
            local.mapper = mapper
            first = local.started
        out = self._appender(key, meta)
        stream: AsyncIterator[ProviderEvent] | None = None
        outcome: tuple[str, dict[str, Any]] | None = None
        starting: asyncio.Timeout | None = None
        try:
            try:
                await out.append("start", _json(mapper.start()))
                if out.queueing:  # the upstream request need not wait two round trips to Redis
                    out.push_meta({"state": "streaming"})
                else:
                    await out.set_meta({"state": "streaming"})
                stream_into = getattr(provider, "stream_into", None)
                # One deadline for the upstream's first event, every retry of the start included
                # (without it: attempts x the SDK's timeout); the first event lifts it.
                async with asyncio.timeout(self._start_timeout) as starting:

                    def on_first_event() -> None:
                        starting.reschedule(None)
                        if first is not None and not first.done():
                            first.set_result(None)

                    if stream_into is not None and (self._live_log is not None or out.queueing):
                        done = await self._produce_pushed(
                            stream_into, request, mapper, *self._pushing(key, out), on_first_event
                        )
                    else:
                        stream = provider.stream(request)
                        done = await self._produce_pulled(out, stream, mapper, on_first_event)
                # The provider ended without saying why: count it as a drop, never as success.
                outcome = ("done", done) if done is not None else ("error", _UPSTREAM_ENDED_EARLY)
            except StreamClosed:
                pass  # someone else ended it (cancel from another process, upstream_lost)
            except TimeoutError:
                if starting is None or not starting.expired():
                    raise
                outcome = ("error", _start_timeout(self._start_timeout))
            except LogUnavailable:
                outcome = ("error", _LOG_UNAVAILABLE)
            except UpstreamError as exc:
                outcome = ("error", {"code": exc.code, "message": exc.message, "retryable": exc.retryable})
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("generation %s failed", generation_id)
                outcome = ("error", {"code": "internal", "message": "internal error", "retryable": False})
            if stream is not None:
                # Closing the provider's iterator closes the upstream HTTP request: no more tokens
                # paid, and none while the end waits for the log.
                with contextlib.suppress(Exception):
                    await asyncio.shield(stream.aclose())  # type: ignore[attr-defined]
                stream = None
            if first is not None and not first.done():  # failed before the first event
                first.set_result(outcome[1] if outcome is not None and outcome[0] == "error" else None)
            if outcome is not None:
                await self._finish(generation_id, out, *outcome)
        finally:
            if first is not None and not first.done():
                first.set_result(None)
            # (A pushing provider has closed its upstream call already: it ends with stream_into.)
            if stream is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(stream.aclose())  # type: ignore[attr-defined]
            local = self._local.get(generation_id)
            if local is not None:
                local.producer = None
                local.mapper = None
                # (A last viewer still writing its withdrawal forgets the entry itself, after.)
                if local.viewers == 0 and not local.membership.locked():
                    self._local.pop(generation_id, None)
            with contextlib.suppress(Exception):
                await asyncio.shield(self.log.drop_member(key, PRODUCER, self._process))

    def _appender(self, key: str, meta: dict[str, str]) -> DurableAppender:
        """The producer's way into the log: through outages (see :mod:`ssegate.log.appender`)."""
        return DurableAppender(
            self.log,
            key,
            self._retention,
            policy=self.outage,
            meta=meta,
            keep_history=self._live_log is None,  # the embedded log cannot lose a stream
            on_trouble=self._note_log_trouble,
        )

    def _note_log_trouble(self, exc: LogError) -> None:
        self._log_trouble_at = time.monotonic()

    def _judging_allowed(self) -> bool:
        """Whether leases and viewer heartbeats may be trusted: the log has not failed here for at
        least a lease's length (everybody had a chance to renew after an outage)."""
        return time.monotonic() - self._log_trouble_at > self._lease_ttl + 1.0

    async def _finish(
        self, generation_id: str, out: DurableAppender, state: str, data: dict[str, Any]
    ) -> None:
        """The producer's own end: its terminal event and state, through the appender. A log still
        away past the outage limit: recorded later, by :meth:`_record_when_back`."""
        event = "error" if state == "error" else "done"
        fields = _final_fields(state, data)
        queued = False
        try:
            await out.append(event, _json(data), terminal=True)
            queued = True
            await out.set_meta(fields)
            await out.drain()
        except StreamClosed:
            return
        except LogUnavailable:
            if not queued:  # the outage ended the generation before its own end was known
                event, data = "error", _LOG_UNAVAILABLE
                fields = _final_fields("error", data)
            recorder = asyncio.create_task(
                self._record_when_back(generation_id, out, (event, data, fields), queued),
                name=f"ssegate-record-{generation_id}",
            )
            self._recorders.add(recorder)
            recorder.add_done_callback(self._recorders.discard)
            return
        if self.on_terminal is not None:
            self.on_terminal(generation_id, state, data)

    async def _record_when_back(
        self,
        generation_id: str,
        out: DurableAppender,
        end: tuple[str, dict[str, Any], dict[str, str]],
        queued: bool,
    ) -> None:
        """Append what the upstream sent and the end once the log is back, for as long as the
        generation could have been kept (its retention's max age)."""
        event, data, fields = end
        out.rearm(self._retention.max_age)
        try:
            if not queued:
                await out.append(event, _json(data), terminal=True)
            await out.set_meta(fields)
            await out.drain()
        except (StreamClosed, LogUnavailable):
            return
        except Exception:
            logger.exception("recording the end of generation %s failed", generation_id)
            return
        finally:
            await out.aclose()
        logger.info("generation %s: its end (%s) is recorded now that the log is back", generation_id, event)
        if self.on_terminal is not None:
            self.on_terminal(generation_id, fields["state"], data)

    async def _produce_pulled(
        self,
        out: DurableAppender,
        stream: AsyncIterator[ProviderEvent],
        mapper: _WireMapper,
        on_first_event: Callable[[], None],
    ) -> dict[str, Any] | None:
        """Log the provider's events as this task reads them; the ``done`` data, or ``None`` if the
        provider ended without one. ``on_first_event`` lifts the start deadline."""
        events = aiter(stream)
        started = False
        while True:
            try:
                provider_event = await anext(events)
            except StopAsyncIteration:
                return None
            except _GARBAGE as exc:  # raised by the provider's parsing: the upstream's bytes
                raise _invalid_upstream(exc) from exc
            if not started:
                started = True
                on_first_event()
            for event, data in mapper.map(provider_event):
                if event == "done":
                    return data
                await out.append(event, _json(data))
                if event == "usage":
                    await out.set_meta({"usage": _json(data)})

    def _pushing(
        self, key: str, out: DurableAppender
    ) -> tuple[Callable[[str, str], object], Callable[[dict[str, str]], None]]:
        """How a pushing producer appends an event and sets metadata without a coroutine: straight
        into the embedded log, or queued to Redis through the appender (no round trip waited per
        token: the appender hears how each went, in order)."""
        if self._live_log is not None:
            return functools.partial(self._live_log.append_now, key), functools.partial(
                self._live_log.set_meta_now, key
            )
        return out.push, out.push_meta

    async def _produce_pushed(
        self,
        stream_into: Callable[[GenerationRequest, Callable[[ProviderEvent], None]], Awaitable[None]],
        request: GenerationRequest,
        mapper: _WireMapper,
        append: Callable[[str, str], object],
        set_meta: Callable[[dict[str, str]], None],
        on_first_event: Callable[[], None],
    ) -> dict[str, Any] | None:
        """:meth:`_produce_pulled` with each event logged as the provider hands it over, from the
        upstream socket's callback: no task switch per token (about a tenth of a relayed token's
        CPU, bench W4). What the log raises there (the stream ended elsewhere) ends the call."""
        finished: list[dict[str, Any]] = []
        ours: list[BaseException] = []  # what deliver raised: our failure, not the upstream's
        started: list[bool] = []  # the first event came: the start deadline is lifted

        def deliver(provider_event: ProviderEvent) -> None:
            if finished:
                return
            if not started:
                started.append(True)
                on_first_event()
            try:
                if type(provider_event) is TextDelta:  # nearly every event: no mapping list
                    if provider_event.text:
                        mapper.streamed += 1
                        append("text", _json(_text_data(provider_event.text)))
                    return
                for event, data in mapper.map(provider_event):
                    if event == "done":
                        finished.append(data)
                        return
                    append(event, _json(data))
                    if event == "usage":
                        set_meta({"usage": _json(data)})
            except BaseException as exc:
                ours.append(exc)
                raise

        try:
            await stream_into(request, deliver)
        except _GARBAGE as exc:
            if ours:  # deliver's own failure (say, an event SSE cannot carry)
                raise
            raise _invalid_upstream(exc) from exc
        return finished[0] if finished else None

    async def _end(self, generation_id: str, state: str, data: dict[str, Any]) -> bool:
        """Append the one terminal event (``done`` or ``error``) and record the final state."""
        key = stream_key(generation_id)
        event = "error" if state == "error" else "done"
        counted: tuple[int, str | None] | None = None  # deltas counted in the log, up to this id
        if event == "done" and "usage" not in data:
            local = self._local.get(generation_id)
            if local is not None and local.mapper is not None:  # the producer runs here: it knows
                data = {**data, "usage": local.mapper.usage_so_far()}
            else:
                # The producer runs in another process: the deltas it streamed are in the log.
                meta = await self.log.get_meta(key)
                reported = json.loads(meta["usage"]) if meta.get("usage") else None
                counted = await self._count_deltas(key, None)
                data = {**data, "usage": _with_streamed(reported, counted[0])}
        try:
            await self.log.append(key, event, _json(data), terminal=True)
        except StreamClosed:
            return False
        except StreamNotFound:
            return False
        if counted is not None:
            # Deltas the producer appended between the count and the end: the state counts them too.
            more, _ = await self._count_deltas(key, counted[1])
            if more:
                data = {**data, "usage": _with_streamed(data["usage"], counted[0] + more)}
        await self.log.set_meta(key, _final_fields(state, data))
        if self.on_terminal is not None:
            self.on_terminal(generation_id, state, data)
        return True

    async def _count_deltas(self, key: str, after: str | None) -> tuple[int, str | None]:
        """The content deltas (about a token each, as :class:`_WireMapper` counts them) the stream
        holds after ``after``, and the id of the last event read."""
        count = 0
        while True:
            result = await self.log.read(key, after)
            for entry in result.entries:
                if entry.event in _DELTA_EVENTS and _is_delta(entry.event, json.loads(entry.data)):
                    count += 1
            after = result.last_id or after
            if result.closed or not result.entries:
                return count, after

    # -- the ticker: leases, abandonment, lost producers -------------------------------------------

    async def _tick_forever(self) -> None:
        interval = min(1.0, self._lease_ttl / 3, max(self._abandon_grace / 4, 0.05))
        while True:
            await asyncio.sleep(interval)
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except LogError as exc:
                self._note_log_trouble(exc)
                logger.warning("gateway tick: the event log failed: %s", exc)
            except Exception:
                logger.exception("gateway tick failed")

    async def _tick(self) -> None:
        now = time.monotonic()
        for generation_id, local in list(self._local.items()):
            key = stream_key(generation_id)
            if local.viewers:
                await self._sync_viewer(key, local)
            if local.producer is not None:
                await self.log.heartbeat(key, PRODUCER, self._process, self._lease_ttl)
                await self._check_abandoned(generation_id, local, now)
                await self._check_ended_elsewhere(generation_id, local)
            elif local.viewers:
                await self._end_if_producer_lost(generation_id, await self.log.get_meta(key))

    async def _check_abandoned(self, generation_id: str, local: _Local, now: float) -> None:
        unwatched_for = now - local.unwatched_since
        if local.keep_running or local.viewers or local.answering or unwatched_for < self._abandon_grace:
            return
        if not self._judging_allowed():
            return
        if await self.log.live_members(stream_key(generation_id), VIEWER):
            local.unwatched_since = now  # watched in another process
            local.watched = True
            return
        if not local.watched and unwatched_for < self._first_viewer_grace:
            return
        logger.info("generation %s abandoned: nobody watched for %.1f s", generation_id, unwatched_for)
        await self.cancel(generation_id, reason="abandoned")

    async def _check_ended_elsewhere(self, generation_id: str, local: _Local) -> None:
        # A cancel in another process appended the terminal event; a stalled upstream would never
        # reach its next append, so look at the state once a tick.
        meta = await self.log.get_meta(stream_key(generation_id))
        if meta.get("state") in TERMINAL_STATES and local.producer and not local.producer.done():
            local.producer.cancel()

    async def _end_if_producer_lost(self, generation_id: str, meta: dict[str, str]) -> bool:
        """End a running generation (``meta``: its metadata) whose producer's lease has expired;
        whether it did."""
        key = stream_key(generation_id)
        if not meta or meta.get("state") in TERMINAL_STATES or not self._judging_allowed():
            return False
        if await self.log.live_members(key, PRODUCER):
            return False
        logger.warning("generation %s lost its producer (lease expired)", generation_id)
        return await self._end(
            generation_id,
            "error",
            {
                "code": "upstream_lost",
                "message": "the server process running this generation stopped",
                "retryable": True,
            },
        )


_UPSTREAM_ENDED_EARLY = {
    "code": "upstream_disconnected",
    "message": "the model's stream ended early",
    "retryable": True,
}
_LOG_UNAVAILABLE = {
    "code": "log_unavailable",
    "message": "the event log was unreachable for too long; the generation was stopped",
    "retryable": True,
}


# What a provider's parsing raises on bytes that are not its vendor's protocol (not JSON, or JSON
# of another shape). Out of the provider, that is the upstream's fault, and is named so.
_GARBAGE = (ValueError, LookupError, TypeError, AttributeError)


def _invalid_upstream(exc: BaseException) -> UpstreamError:
    logger.warning("the upstream sent what its protocol does not allow: %r", exc)
    return UpstreamError(
        "upstream_invalid",
        f"the upstream sent something its protocol does not allow ({type(exc).__name__})",
        retryable=True,
    )


def _start_timeout(seconds: float) -> dict[str, Any]:
    return {
        "code": "upstream_timeout",
        "message": f"the upstream did not start answering within {seconds:g} s (retries included)",
        "retryable": True,
    }


# The events that may carry a content delta (text, thinking, tool-call arguments): what
# _WireMapper.streamed counts, read back from the log.
_DELTA_EVENTS = frozenset({"text", "thinking", "tool_call"})


def _is_delta(event: str, data: Any) -> bool:
    if not isinstance(data, dict):
        return False
    if event == "tool_call":
        return data.get("phase") == "delta"
    return "delta" in data  # text, thinking (a signature or redacted block is not a delta)


def _with_streamed(usage: dict[str, Any] | None, streamed: int) -> dict[str, Any] | None:
    """``usage`` with ``streamed`` deltas as its output when the upstream's own count is behind."""
    if not streamed:
        return usage
    reported = (usage or {}).get("output_tokens")
    base = usage or {"input_tokens": None, "output_tokens": None}
    return {**base, "output_tokens": max(reported or 0, streamed)}


def _final_fields(state: str, data: dict[str, Any]) -> dict[str, str]:
    """The metadata a terminal event leaves: state, end time, and the error or finish reason."""
    fields = {"state": state, "finished_at": f"{time.time():.3f}"}
    if state == "error":
        fields["error"] = _json(data)
    else:
        fields["finish_reason"] = str(data.get("finish_reason", ""))
        if data.get("usage") is not None:  # what describe says agrees with the done event
            fields["usage"] = _json(data["usage"])
    return fields


def _text_data(text: str) -> dict[str, Any]:
    """A ``text`` event's data."""
    return {"delta": text}


class _WireMapper:
    """Provider events -> (wire event type, JSON-ready data). Keeps the running usage, and each
    open tool call's arguments so far: its ``end`` carries the whole call (name and parsed input),
    after the deltas a UI shows growing."""

    def __init__(
        self, generation_id: str, provider: str, model: str, metadata: Mapping[str, Any] | None = None
    ) -> None:
        self._generation_id = generation_id
        self._provider = provider
        self._model = model
        self._metadata = metadata
        self.usage: dict[str, int | None] = {"input_tokens": None, "output_tokens": None}
        self._calls: dict[str, tuple[str, list[str]]] = {}  # open tool call id -> (name, argument parts)
        # Content deltas streamed (text, thinking, tool arguments): about a token each. What a
        # generation ended early (cancelled, abandoned) counts as output when the upstream's own
        # count stops at its first report (Anthropic's message_start says output_tokens: 1).
        self.streamed = 0

    def usage_so_far(self) -> dict[str, int | None]:
        """The usage to record for a generation ended before the upstream's final count."""
        reported = self.usage["output_tokens"]
        if reported is None and not self.streamed:
            return dict(self.usage)
        return {**self.usage, "output_tokens": max(reported or 0, self.streamed)}

    def start(self) -> dict[str, Any]:
        start: dict[str, Any] = {"id": self._generation_id, "model": self._model, "provider": self._provider}
        if self._metadata is not None:
            start["metadata"] = self._metadata
        return start

    def map(self, event: ProviderEvent) -> list[tuple[str, dict[str, Any]]]:
        if isinstance(event, TextDelta):
            if not event.text:
                return []
            self.streamed += 1
            return [("text", _text_data(event.text))]
        if isinstance(event, ThinkingDelta):
            if not event.text:
                return []
            self.streamed += 1
            return [("thinking", {"delta": event.text})]
        if isinstance(event, ThinkingSignature):
            return [("thinking", {"signature": event.signature})]
        if isinstance(event, RedactedThinking):
            return [("thinking", {"redacted": event.data})]
        if isinstance(event, ToolCallStart):
            self._calls[event.id] = (event.name, [])
            return [
                ("tool_call", {"phase": "start", "id": event.id, "name": event.name, "index": event.index})
            ]
        if isinstance(event, ToolCallDelta):
            self.streamed += 1
            call = self._calls.get(event.id)
            if call is not None:
                call[1].append(event.partial_json)
            return [("tool_call", {"phase": "delta", "id": event.id, "delta": event.partial_json})]
        if isinstance(event, ToolCallEnd):
            return [("tool_call", self._whole_call(event.id))]
        if isinstance(event, Usage):
            if event.input_tokens is not None:
                self.usage["input_tokens"] = event.input_tokens
            if event.output_tokens is not None:
                self.usage["output_tokens"] = event.output_tokens
            return [("usage", dict(self.usage))]
        if isinstance(event, ModelInfo):
            self._model = event.model
            return [("status", {"stage": "model", "model": event.model})]
        if isinstance(event, Finished):
            return [("done", {"finish_reason": event.finish_reason, "usage": dict(self.usage)})]
        if isinstance(event, WireEvent):  # an app's own producer: status, data
            return [(event.event, event.data)]
        raise TypeError(f"unknown provider event {event!r}")

    def _whole_call(self, tool_id: str) -> dict[str, Any]:
        """A tool call's ``end``: its name and input as one JSON object. Arguments that are not a
        JSON object (a model's slip) come as ``input: null`` with the raw ``arguments``."""
        name, parts = self._calls.pop(tool_id, ("", []))
        arguments = "".join(parts)
        try:
            parsed = orjson.loads(arguments) if arguments.strip() else {}
        except orjson.JSONDecodeError:
            parsed = None
        end: dict[str, Any] = {"phase": "end", "id": tool_id, "name": name, "input": parsed}
        if not isinstance(parsed, dict):
            end["input"] = None
            end["arguments"] = arguments
        return end


def entry_is_terminal(entry: LogEntry) -> bool:
    return entry.terminal or entry.event in ("done", "error")
