"""Counters for ``/metrics``, rendered in the Prometheus text exposition format (version 0.0.4).

The hot path only adds to plain ints on one object (one process, one event loop: no locks
needed), once per write to a connection, never per event; everything else happens when
``/metrics`` is scraped. Every number is this process's own: Prometheus sums across processes.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

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


class Histogram:
    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * len(self.buckets)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.total += value
        self.count += 1
        for index, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[index] += 1
                break

    def render(self, name: str) -> list[str]:
        lines = []
        cumulative = 0
        for bound, count in zip(self.buckets, self.counts, strict=True):
            cumulative += count
            lines.append(f'{name}_bucket{{le="{bound:g}"}} {cumulative}')
        lines.append(f'{name}_bucket{{le="+Inf"}} {self.count}')
        lines.append(f"{name}_sum {self.total:.6f}")
        lines.append(f"{name}_count {self.count}")
        return lines


class Metrics:
    """This process's counters. Gauges go up and down; ``*_total`` only up."""

    def __init__(self) -> None:
        self.streams_open = 0
        self.streams_total = 0
        self.events_sent = 0
        self.bytes_sent = 0
        self.lagging_viewers = 0
        self.live_viewers = 0
        self.generations_started = 0
        self.generations_running = 0
        self.generations_finished: Counter[str] = Counter()
        self.upstream_errors: Counter[str] = Counter()
        self.output_tokens = 0
        self.rejected: Counter[str] = Counter()
        self.requests: Counter[int] = Counter()
        self.door_requests: Counter[str] = Counter()  # by dialect (see ssegate.server.doors)
        self.ttft = Histogram(TTFT_BUCKETS)
        self.tokens_per_second = Histogram(TOKENS_PER_SECOND_BUCKETS)

    def on_terminal(self, generation_id: str, state: str, data: dict[str, Any]) -> None:
        """The gateway's terminal hook: one count per generation ended by this process."""
        self.generations_finished[state] += 1

    def render(self) -> bytes:
        out: list[str] = []

        def metric(name: str, kind: str, help_text: str, lines: list[str]) -> None:
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")
            out.extend(lines)

        metric(
            "ssegate_streams_open",
            "gauge",
            "Event streams open now.",
            [f"ssegate_streams_open {self.streams_open}"],
        )
        metric(
            "ssegate_streams_total",
            "counter",
            "Event streams opened.",
            [f"ssegate_streams_total {self.streams_total}"],
        )
        metric(
            "ssegate_events_sent_total",
            "counter",
            "Events written to viewers.",
            [f"ssegate_events_sent_total {self.events_sent}"],
        )
        metric(
            "ssegate_bytes_sent_total",
            "counter",
            "Bytes written on event streams.",
            [f"ssegate_bytes_sent_total {self.bytes_sent}"],
        )
        metric(
            "ssegate_lagging_viewers",
            "gauge",
            "Viewers whose last wake-up had a large backlog to catch up.",
            [f"ssegate_lagging_viewers {self.lagging_viewers}"],
        )
        metric(
            "ssegate_live_viewers",
            "gauge",
            "Caught-up viewers served by their stream's shared fan-out writer.",
            [f"ssegate_live_viewers {self.live_viewers}"],
        )
        metric(
            "ssegate_generations_started_total",
            "counter",
            "Generations started by this process.",
            [f"ssegate_generations_started_total {self.generations_started}"],
        )
        metric(
            "ssegate_generations_running",
            "gauge",
            "Generations whose upstream call this process is running.",
            [f"ssegate_generations_running {self.generations_running}"],
        )
        metric(
            "ssegate_generations_finished_total",
            "counter",
            "Generations ended, by final state.",
            [
                f'ssegate_generations_finished_total{{state="{state}"}} {self.generations_finished[state]}'
                for state in sorted({"done", "error", "cancelled", *self.generations_finished})
            ],
        )
        metric(
            "ssegate_upstream_errors_total",
            "counter",
            "Upstream (provider) failures, by code.",
            [
                f'ssegate_upstream_errors_total{{code="{code}"}} {n}'
                for code, n in sorted(self.upstream_errors.items())
            ],
        )
        metric(
            "ssegate_output_tokens_total",
            "counter",
            "Output tokens reported by providers.",
            [f"ssegate_output_tokens_total {self.output_tokens}"],
        )
        metric(
            "ssegate_time_to_first_token_seconds",
            "histogram",
            "From the upstream call to its first token.",
            self.ttft.render("ssegate_time_to_first_token_seconds"),
        )
        metric(
            "ssegate_generation_tokens_per_second",
            "histogram",
            "Output tokens per second of a generation, after its first token.",
            self.tokens_per_second.render("ssegate_generation_tokens_per_second"),
        )
        metric(
            "ssegate_rejected_total",
            "counter",
            "Requests refused by a limit, by reason.",
            [
                f'ssegate_rejected_total{{reason="{reason}"}} {n}'
                for reason, n in sorted(self.rejected.items())
            ],
        )
        metric(
            "ssegate_http_responses_total",
            "counter",
            "HTTP responses, by status code.",
            [
                f'ssegate_http_responses_total{{code="{code}"}} {n}'
                for code, n in sorted(self.requests.items())
            ],
        )
        metric(
            "ssegate_door_requests_total",
            "counter",
            "Requests to the front doors (OpenAI, Anthropic, AI SDK dialects), by dialect.",
            [
                f'ssegate_door_requests_total{{door="{door}"}} {n}'
                for door, n in sorted(self.door_requests.items())
            ],
        )
        return ("\n".join(out) + "\n").encode("utf-8")


# Events that count as "the first token" for time to first token.
_FIRST_TOKEN = (TextDelta, ThinkingDelta, ToolCallStart)


class _Pace:
    """One generation's timings: time to first token, output tokens, tokens per second."""

    __slots__ = ("first", "metrics", "started", "tokens")

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.started = time.monotonic()
        self.first: float | None = None
        self.tokens = 0
        metrics.generations_started += 1
        metrics.generations_running += 1

    def observe(self, event: ProviderEvent) -> None:
        if self.first is None and isinstance(event, _FIRST_TOKEN):
            self.first = time.monotonic()
            self.metrics.ttft.observe(self.first - self.started)
        elif isinstance(event, Usage) and event.output_tokens is not None:
            self.metrics.output_tokens += max(event.output_tokens - self.tokens, 0)
            self.tokens = event.output_tokens

    def failed(self, error: UpstreamError) -> None:
        self.metrics.upstream_errors[error.code] += 1

    def end(self) -> None:
        self.metrics.generations_running -= 1
        if self.first is not None and self.tokens:
            elapsed = time.monotonic() - self.first
            if elapsed > 0:
                self.metrics.tokens_per_second.observe(self.tokens / elapsed)


class MeasuredProvider:
    """A provider wrapped to time its first token, its pace and its failures."""

    def __init__(self, inner: Provider, metrics: Metrics) -> None:
        self.info = inner.info
        self._inner = inner
        self._metrics = metrics
        # Asked once: isinstance() against a runtime-checkable Protocol walks its members.
        self._push = inner if isinstance(inner, PushingProvider) else None

    def check(self, request: GenerationRequest) -> None:
        check_request(self._inner, request)

    def stream(self, request: GenerationRequest) -> AsyncIterator[ProviderEvent]:
        return self._measure(self._inner.stream(request))

    async def stream_into(self, request: GenerationRequest, deliver: Deliver) -> None:
        """The inner provider's push path, measured; a provider without one is pulled (and
        measured) by :meth:`stream`."""
        if self._push is None:
            await pull_into(self.stream(request), deliver)
            return
        pace = _Pace(self._metrics)

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

    async def _measure(self, events: AsyncIterator[ProviderEvent]) -> AsyncIterator[ProviderEvent]:
        pace = _Pace(self._metrics)
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
