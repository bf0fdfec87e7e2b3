"""``/metrics`` with ``prometheus_client``: the Prometheus text format, process and Python runtime
metrics, and the labels users slice by (provider, model, route, status, finish reason).

Cardinality stays bounded: a model is a label only when it is configured or known (a provider's
default model, ``SSEGATE_MODEL``, ``SSEGATE_METRICS_MODELS``), any other is ``other``; a route is
its template (``/v1/streams/{stream_id}``), never the path; finish reasons outside the known ones
are ``other``; no ids or principals are labels.

The per-write hot path only adds to plain ints on :class:`Metrics` (one process, one event loop:
no lock), once per write to a connection, never per event. :meth:`Metrics.sync` moves them into
``prometheus_client``'s values: when ``/metrics`` is scraped, and every second in multiprocess
mode. Per-generation and per-request counts go to ``prometheus_client`` directly (a few µs each).

Multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set; ``ssegate serve --workers N`` sets it to a
directory of its own): every worker writes its values to files there and any worker's ``/metrics``
answers for all of them. The workers' process metrics (memory, CPU, open files) and garbage
collector metrics are mirrored into those files too, one series per live worker (label ``pid``);
a worker that is gone is marked dead (``mark_process_dead``) so its gauges stop counting.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge as PromGauge
from prometheus_client import Histogram as PromHistogram
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from ssegate.providers.base import (
    Deliver,
    GenerationRequest,
    Provider,
    ProviderEvent,
    PushingProvider,
    TextDelta,
    ThinkingDelta,
    ToolCallStart,
    UpstreamError,
    Usage,
    check_request,
    pull_into,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TTFT_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
TOKENS_PER_SECOND_BUCKETS = (5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# How often a worker moves its hot-path ints into the shared files (multiprocess mode): another
# worker's /metrics lags a worker's own writes by at most this much.
SYNC_INTERVAL = 1.0
OTHER = "other"
# Finish reasons as the providers normalise them (providers.base.Finished) and as the gateway ends
# generations itself; any other provider word is "other".
FINISH_REASONS = frozenset({"stop", "length", "tool_use", "content_filter", "cancelled", "error"})
# Upstream error codes are ssegate's own (providers/_errors.py), a closed set; a code outside this
# shape (it never should be) is "other".
_CODE = re.compile(r"^[a-z_]{1,40}$")
# Why a limit refused a request (server/limits.py), a closed set.
REJECT_REASONS = ("draining", "streams_per_principal", "streams_total", "start_rate")
UNMATCHED_ROUTE = "unmatched"


def multiprocess_dir() -> str | None:
    path = os.environ.get(MULTIPROC_ENV)
    return path if path and os.path.isdir(path) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process has that pid now: not our worker
        return False
    return True


def mark_dead_workers(path: str) -> list[int]:
    """Mark every worker that wrote to ``path`` and is gone as dead (its live gauges stop
    counting; its counters stay, as Prometheus expects of a counter). Returns their pids."""
    dead = set()
    for name in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        digits = os.path.basename(name).rsplit("_", 1)[1].removesuffix(".db")
        if digits.isdigit() and not _alive(int(digits)):
            dead.add(int(digits))
    for pid in dead:
        mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
    return sorted(dead)


class _Mirror:
    """In multiprocess mode, this worker's process and GC metrics written as live gauges with a
    ``pid`` label: prometheus_client's own collectors only see the process that is scraped."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        scratch = CollectorRegistry()  # the collectors register themselves; they are only read here
        self._sources = (ProcessCollector(registry=scratch), GCCollector(registry=scratch))
        self._gauges: dict[str, PromGauge] = {}
        self._pid = str(os.getpid())

    def sync(self) -> None:
        for source in self._sources:
            for family in source.collect():
                for sample in family.samples:
                    if sample.name.endswith("_created"):
                        continue
                    labels = {**sample.labels}
                    gauge = self._gauges.get(sample.name)
                    if gauge is None:
                        gauge = self._gauges[sample.name] = PromGauge(
                            sample.name,
                            family.documentation,
                            [*labels, "pid"],
                            registry=self._registry,
                            multiprocess_mode="liveall",
                        )
                    gauge.labels(*labels.values(), self._pid).set(sample.value)


class Metrics:
    """This process's metrics. The plain ints below are the hot path's (see :meth:`sync`);
    gauges go up and down, the others only up."""

    def __init__(self, *, models: Iterable[str] = ()) -> None:
        self.streams_open = 0
        self.streams_total = 0
        self.events_sent = 0
        self.bytes_sent = 0
        self.lagging_viewers = 0
        self.live_viewers = 0
        self.generations_running = 0
        self.rejected: Counter[str] = Counter()
        self.door_requests: Counter[str] = Counter()  # by dialect (see ssegate.server.doors)
        self.models: set[str] = {model for model in models if model}
        self._synced: dict[str, int] = {}
        self._synced_by: dict[tuple[str, str], int] = {}
        self.multiprocess_dir = multiprocess_dir()
        # Metric objects live in their own registry (several apps in one process, or ssegate
        # mounted in an app with its own metrics, never collide); what /metrics exports is this
        # registry, or in multiprocess mode every worker's files.
        own = self._own = CollectorRegistry()

        def counter(name: str, doc: str, labels: Iterable[str] = ()) -> PromCounter:
            return PromCounter(name, doc, list(labels), registry=own)

        def gauge(name: str, doc: str) -> PromGauge:
            # livesum: the workers' values added up, a dead worker's left out.
            return PromGauge(name, doc, registry=own, multiprocess_mode="livesum")

        self._streams_open = gauge("ssegate_streams_open", "Event streams open now.")
        self._streams_total = counter("ssegate_streams", "Event streams opened.")
        self._events_sent = counter("ssegate_events_sent", "Events written to viewers.")
        self._bytes_sent = counter("ssegate_bytes_sent", "Bytes written on event streams.")
        self._lagging = gauge(
            "ssegate_lagging_viewers", "Viewers whose last wake-up had a large backlog to catch up."
        )
        self._live = gauge(
            "ssegate_live_viewers", "Caught-up viewers served by their stream's shared fan-out writer."
        )
        self._running = gauge(
            "ssegate_generations_running", "Generations whose upstream call this process is running."
        )
        self._rejected = counter("ssegate_rejected", "Requests refused by a limit, by reason.", ["reason"])
        for reason in REJECT_REASONS:  # present at 0, so rate() sees the first one
            self._rejected.labels(reason)
        self._doors = counter(
            "ssegate_door_requests",
            "Requests to the front doors (OpenAI, Anthropic, AI SDK dialects), by dialect.",
            ["door"],
        )
        per_model = ("provider", "model")
        self.started = counter(
            "ssegate_generations_started", "Generations started, by provider and model.", per_model
        )
        self.finished = counter(
            "ssegate_generations_finished",
            "Generations ended, by final state and finish reason.",
            ["state", "finish_reason"],
        )
        for state, reason in (("done", "stop"), ("error", "error"), ("cancelled", "cancelled")):
            self.finished.labels(state, reason)  # present at 0, so rate() sees the first one
        self.upstream_errors = counter(
            "ssegate_upstream_errors",
            "Upstream (provider) failures, by provider and code.",
            ["provider", "code"],
        )
        self.output_tokens = counter(
            "ssegate_output_tokens", "Output tokens reported by providers, by provider and model.", per_model
        )
        self.ttft = PromHistogram(
            "ssegate_time_to_first_token_seconds",
            "From the upstream call to its first token.",
            per_model,
            buckets=TTFT_BUCKETS,
            registry=own,
        )
        self.tokens_per_second = PromHistogram(
            "ssegate_generation_tokens_per_second",
            "Output tokens per second of a generation, after its first token.",
            per_model,
            buckets=TOKENS_PER_SECOND_BUCKETS,
            registry=own,
        )
        self.responses = counter(
            "ssegate_http_responses",
            "HTTP responses, by route template, method and status code.",
            ["route", "method", "code"],
        )
        self._responses: dict[tuple[str, str, int], Any] = {}
        self._mirror: _Mirror | None = None
        if self.multiprocess_dir is None:
            ProcessCollector(registry=own)
            PlatformCollector(registry=own)
            GCCollector(registry=own)
            self._export = own
        else:
            self._mirror = _Mirror(own)
            self._export = CollectorRegistry()
            MultiProcessCollector(self._export, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
            PlatformCollector(registry=self._export)  # the same in every worker

    # -- labels, bounded ---------------------------------------------------------------------

    def model_label(self, model: str | None) -> str:
        return model if model in self.models else OTHER

    @staticmethod
    def finish_label(reason: object) -> str:
        return reason if isinstance(reason, str) and reason in FINISH_REASONS else OTHER

    @staticmethod
    def code_label(code: str) -> str:
        return code if _CODE.match(code) else OTHER

    # -- recording -----------------------------------------------------------------------------

    def on_terminal(self, generation_id: str, state: str, data: dict[str, Any]) -> None:
        """The gateway's terminal hook: one count per generation ended by this process."""
        reason = data.get("finish_reason") if state == "done" else state
        if state == "cancelled":
            reason = "cancelled"
        self.finished.labels(self.code_label(state), self.finish_label(reason)).inc()

    def response(self, route: str, method: str, status: int) -> None:
        """One HTTP response (``route``: the route's template, or ``unmatched``)."""
        key = (route, method if method in _METHODS else OTHER, status)
        child = self._responses.get(key)
        if child is None:  # made once per key (a bounded set): labels() takes a lock and builds it
            child = self._responses[key] = self.responses.labels(key[0], key[1], str(status))
        child.inc()

    def sync(self) -> None:
        """Move the hot path's ints into prometheus_client's values (deltas for counters)."""
        self._streams_open.set(self.streams_open)
        self._lagging.set(self.lagging_viewers)
        self._live.set(self.live_viewers)
        self._running.set(self.generations_running)
        for name, value, counter in (
            ("streams", self.streams_total, self._streams_total),
            ("events", self.events_sent, self._events_sent),
            ("bytes", self.bytes_sent, self._bytes_sent),
        ):
            delta = value - self._synced.get(name, 0)
            if delta:
                counter.inc(delta)
                self._synced[name] = value
        for kind, counts, labelled in (
            ("rejected", self.rejected, self._rejected),
            ("door", self.door_requests, self._doors),
        ):
            for label, value in list(counts.items()):
                delta = value - self._synced_by.get((kind, label), 0)
                if delta:
                    labelled.labels(label).inc(delta)
                    self._synced_by[kind, label] = value
        if self._mirror is not None:
            self._mirror.sync()

    def render(self) -> bytes:
        self.sync()
        if self.multiprocess_dir is not None:
            mark_dead_workers(self.multiprocess_dir)
        return generate_latest(self._export)

    async def sync_forever(self) -> None:
        """Multiprocess mode: keep this worker's values in the shared files at most
        :data:`SYNC_INTERVAL` old (a scrape answered by another worker reads them there)."""
        while True:
            self.sync()
            await asyncio.sleep(SYNC_INTERVAL)

    def close(self) -> None:
        """This worker is stopping: its live gauges stop counting now."""
        if self.multiprocess_dir is not None:
            self.sync()
            with contextlib.suppress(OSError):
                mark_process_dead(os.getpid(), self.multiprocess_dir)  # type: ignore[no-untyped-call]


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Events that count as "the first token" for time to first token.
_FIRST_TOKEN = (TextDelta, ThinkingDelta, ToolCallStart)


class _Pace:
    """One generation's timings: time to first token, output tokens, tokens per second."""

    __slots__ = ("first", "labels", "metrics", "provider", "started", "tokens")

    def __init__(self, metrics: Metrics, provider: str, model: str | None) -> None:
        self.metrics = metrics
        self.provider = provider
        self.labels = (provider, metrics.model_label(model))
        self.started = time.monotonic()
        self.first: float | None = None
        self.tokens = 0
        metrics.started.labels(*self.labels).inc()
        metrics.generations_running += 1

    def observe(self, event: ProviderEvent) -> None:
        if self.first is None and isinstance(event, _FIRST_TOKEN):
            self.first = time.monotonic()
            self.metrics.ttft.labels(*self.labels).observe(self.first - self.started)
        elif isinstance(event, Usage) and event.output_tokens is not None:
            more = event.output_tokens - self.tokens
            if more > 0:
                self.metrics.output_tokens.labels(*self.labels).inc(more)
            self.tokens = event.output_tokens

    def failed(self, error: UpstreamError) -> None:
        self.metrics.upstream_errors.labels(self.provider, Metrics.code_label(error.code)).inc()

    def end(self) -> None:
        self.metrics.generations_running -= 1
        if self.first is not None and self.tokens:
            elapsed = time.monotonic() - self.first
            if elapsed > 0:
                self.metrics.tokens_per_second.labels(*self.labels).observe(self.tokens / elapsed)


class MeasuredProvider:
    """A provider wrapped to time its first token, its pace and its failures."""

    def __init__(self, inner: Provider, metrics: Metrics) -> None:
        self.info = inner.info
        self._inner = inner
        self._metrics = metrics
        # Asked once: isinstance() against a runtime-checkable Protocol walks its members.
        self._push = inner if isinstance(inner, PushingProvider) else None

    def _pace(self, request: GenerationRequest) -> _Pace:
        return _Pace(self._metrics, self.info.name, request.model or self.info.default_model)

    def check(self, request: GenerationRequest) -> None:
        check_request(self._inner, request)

    def stream(self, request: GenerationRequest) -> AsyncIterator[ProviderEvent]:
        return self._measure(self._inner.stream(request), request)

    async def stream_into(self, request: GenerationRequest, deliver: Deliver) -> None:
        """The inner provider's push path, measured; a provider without one is pulled (and
        measured) by :meth:`stream`."""
        if self._push is None:
            await pull_into(self.stream(request), deliver)
            return
        pace = self._pace(request)

        def measured(event: ProviderEvent) -> None:
            if pace.first is None or type(event) is not TextDelta:  # past the first, text tells nothing
                pace.observe(event)
            deliver(event)

        try:
            await self._push.stream_into(request, measured)
        except UpstreamError as exc:
            pace.failed(exc)
            raise
        finally:
            pace.end()

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def _measure(
        self, events: AsyncIterator[ProviderEvent], request: GenerationRequest
    ) -> AsyncIterator[ProviderEvent]:
        pace = self._pace(request)  # here, not in stream(): counted once iterated
        try:
            async for event in events:
                pace.observe(event)
                yield event
        except UpstreamError as exc:
            pace.failed(exc)
            raise
        finally:
            pace.end()
            with contextlib.suppress(Exception):
                await events.aclose()  # type: ignore[attr-defined]
