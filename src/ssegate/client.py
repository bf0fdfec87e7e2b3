"""A Python client for event streams: read one as an async iterator that reconnects by itself.

::

    async with EventSource("http://127.0.0.1:8000/v1/topics/news/events") as source:
        async for event in source:
            print(event.event, event.data)

The reconnection rules follow the WHATWG ``EventSource`` model, with what a program needs on top:

- after a drop (network error, the body ends, or no byte for ``idle_timeout`` seconds) the client
  asks again with ``Last-Event-ID`` and the server's ``retry:`` as the base of a capped exponential
  backoff with full jitter; a connection that delivered an event resets the backoff;
- ``204 No Content`` ends the iteration cleanly (the server's way to say "the stream is over");
- 429/502/503/504 are retried (``Retry-After`` honoured); any other non-2xx answer raises
  :class:`~ssegate.errors.HTTPStatusError`, a 2xx that is not ``text/event-stream`` raises
  :class:`~ssegate.errors.NotAnEventStream`. A request that starts something (a POST) is not sent
  again after a 502 or 504: a proxy answers those even when the server behind it already started
  the generation, and a second POST would start (and pay for) another;
- ``stop_on`` names event types after which the stream is over (ssegate's ``done`` and ``error``);
- a POST stream (e.g. starting an LLM generation) resumes with GET at the URL named by a response
  header (``Location`` by default), so a reconnect never starts a second generation.

:class:`GatewayClient` is a thin layer over the ssegate server's HTTP API (generations and topics).

This is the only module of the client side that imports httpx: its errors are translated here.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx

from ssegate.codec.events import Comment, Event, Retry
from ssegate.codec.parser import EventStreamParser
from ssegate.errors import ClientError, HTTPStatusError, NotAnEventStream

__all__ = [
    "DEFAULT_MAX_DELAY",
    "DEFAULT_RETRY_MS",
    "GATEWAY_TERMINAL_EVENTS",
    "RETRYABLE_STATUSES",
    "EventSource",
    "GatewayClient",
    "GatewayEvent",
    "backoff_delay",
    "parse_retry_after",
    "stream_events",
]

# WHATWG leaves the initial reconnection time to the user agent ("a few seconds"); browsers use 3-5 s.
DEFAULT_RETRY_MS = 3000
# However often a stream fails, never wait longer than this between attempts (unless the server's own
# ``retry:`` or ``Retry-After`` asks for more): a watcher should notice a recovered server within a minute.
DEFAULT_MAX_DELAY = 30.0
# Overload and gateway failures are transient by definition; every other non-2xx status means the
# request itself is wrong (or the server is broken) and asking again would only repeat the answer.
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
# The terminal events of ssegate's own wire vocabulary.
GATEWAY_TERMINAL_EVENTS = frozenset({"done", "error"})
# An error body is for a human to read; do not let an endless one fill memory.
_MAX_ERROR_BODY = 64 * 1024
_CONNECT_TIMEOUT = 10.0


def backoff_delay(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Seconds to wait before reconnection attempt ``attempt`` (0 = the first after a good stream).

    Full jitter: uniform in ``[0, min(cap, base * 2**attempt)]``, so a crowd of clients that lost the
    same server spreads out instead of returning in lockstep. A server ``retry:`` above ``cap`` wins.
    """
    ceiling = min(max(cap, base), base * 2.0 ** min(attempt, 62))
    return rng.uniform(0.0, ceiling)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds asked for by a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


class _Reconnect(Exception):
    """Internal: this connection is over; try again after ``delay`` (None = the usual backoff)."""

    def __init__(self, reason: str, *, delay: float | None = None, error: Exception | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay
        self.error = error


class EventSource:
    """An event stream read as an async iterator of :class:`~ssegate.codec.events.Event`, reconnecting.

    ``url``, ``method``, ``json`` and ``headers`` describe the first request. ``last_event_id`` resumes
    a stream read before. ``retry`` is the reconnection time in milliseconds until the server sends
    its own; ``max_delay`` caps the backoff (seconds). ``max_retries`` bounds reconnection attempts in
    a row that deliver no event (None = forever); when exceeded, the last error is raised.
    ``idle_timeout`` (seconds, None = wait forever) treats a connection that sends no byte at all for
    that long (not even a keep-alive comment) as dead. ``stop_on`` names event types after which the
    stream is over. ``resume_url_from_header`` names the response header that gives, after a non-GET
    request, the URL to resume from with GET (resolved against the request URL); without it, the same
    request is repeated. ``client`` is an ``httpx.AsyncClient`` to use (and not close); ``rng`` makes
    the jitter reproducible.

    Attributes a reader may inspect: ``last_event_id`` (the id of the last event delivered), ``retry``
    (the reconnection time in force, ms), ``reconnects`` (how many times a connection was made again),
    ``url`` and ``method`` (what the next connection will ask for).
    """

    def __init__(
        self,
        url: str,
        *,
        method: str = "GET",
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        last_event_id: str | None = None,
        retry: int = DEFAULT_RETRY_MS,
        max_delay: float = DEFAULT_MAX_DELAY,
        max_retries: int | None = None,
        idle_timeout: float | None = None,
        stop_on: Collection[str] = (),
        resume_url_from_header: str | None = "Location",
        client: httpx.AsyncClient | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.url = url
        self.method = method.upper()
        self.last_event_id = last_event_id or ""
        self.retry = retry
        self.reconnects = 0
        self._json = json
        self._headers = dict(headers or {})
        self._max_delay = max_delay
        self._max_retries = max_retries
        self._idle_timeout = idle_timeout
        self._stop_on = frozenset(stop_on)
        self._resume_header = resume_url_from_header
        self._client = client
        self._owns_client = client is None
        self._rng = rng or random.Random()
        self._events: AsyncGenerator[Event, None] | None = None

    async def __aenter__(self) -> EventSource:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncIterator[Event]:
        if self._events is None:
            self._events = self._run()
        return self._events

    async def aclose(self) -> None:
        """Close the open connection (if any) and the HTTP client this source created."""
        try:
            if self._events is not None:
                await self._events.aclose()
        finally:
            if self._owns_client and self._client is not None:
                await self._client.aclose()
                self._client = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=True)
        return self._client

    async def _run(self) -> AsyncGenerator[Event, None]:
        failures = 0  # reconnection attempts in a row that delivered nothing
        while True:
            try:
                async with contextlib.aclosing(self._connect()) as events:
                    async for event in events:
                        failures = 0
                        yield event
                        if event.event in self._stop_on:
                            return
                return  # 204: the server says the stream is over
            except _Reconnect as reconnect:
                if self._max_retries is not None and failures >= self._max_retries:
                    if isinstance(reconnect.error, ClientError):
                        raise reconnect.error from None
                    raise ClientError(
                        f"{self.url}: gave up after {failures} reconnection attempts: {reconnect.reason}"
                    ) from reconnect.error
                delay = reconnect.delay
                if delay is None:
                    delay = backoff_delay(
                        failures, base=self.retry / 1000, cap=self._max_delay, rng=self._rng
                    )
                failures += 1
                await asyncio.sleep(delay)
                self.reconnects += 1

    def _request_headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache", **self._headers}
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        return headers

    def _timeout(self) -> httpx.Timeout:
        # httpx's read timeout bounds each wait for bytes from the socket: exactly "idle".
        return httpx.Timeout(_CONNECT_TIMEOUT, read=self._idle_timeout)

    async def _connect(self) -> AsyncGenerator[Event, None]:
        """One connection: yield its events; return on 204; raise _Reconnect when it should be retried."""
        request = self._http().build_request(
            self.method,
            self.url,
            json=self._json,
            headers=self._request_headers(),
            timeout=self._timeout(),
        )
        try:
            response = await self._http().send(request, stream=True)
        except httpx.TransportError as exc:
            raise _Reconnect(_describe(exc), error=exc) from exc
        try:
            if await self._accept(response):
                async with contextlib.aclosing(self._read(response)) as events:
                    async for event in events:
                        yield event
        finally:
            await response.aclose()

    async def _accept(self, response: httpx.Response) -> bool:
        """Check the answer: True to read it as a stream, False for 204; raise for anything else."""
        url = str(response.request.url)
        if response.status_code == 204:
            return False
        if not response.is_success:
            body = await _read_error_body(response)
            error = HTTPStatusError(response.status_code, body, url)
            if response.status_code in RETRYABLE_STATUSES and not self._may_have_started(response):
                raise _Reconnect(
                    f"HTTP {response.status_code}",
                    delay=parse_retry_after(response.headers.get("Retry-After")),
                    error=error,
                )
            raise error
        content_type = response.headers.get("Content-Type", "")
        if content_type.split(";", 1)[0].strip().lower() != "text/event-stream":
            raise NotAnEventStream(content_type, url)
        self._follow_resume_header(response)
        return True

    def _may_have_started(self, response: httpx.Response) -> bool:
        """Whether a failed answer leaves open that the request started something anyway."""
        return self.method != "GET" and response.status_code in (502, 504)

    def _follow_resume_header(self, response: httpx.Response) -> None:
        # A POST that started something must not be repeated: resume from where the server says.
        if self.method == "GET" or self._resume_header is None:
            return
        location = response.headers.get(self._resume_header)
        if location:
            self.url = str(response.request.url.join(location))
            self.method = "GET"
            self._json = None

    async def _read(self, response: httpx.Response) -> AsyncGenerator[Event, None]:
        # The last event ID survives reconnection, as in a browser's EventSource.
        parser = EventStreamParser(last_event_id=self.last_event_id)
        try:
            async for chunk in response.aiter_raw():
                for item in parser.feed(chunk):
                    if isinstance(item, Event):
                        self.last_event_id = item.id or ""
                        yield item
                    elif isinstance(item, Retry):
                        self.retry = item.milliseconds
                    else:
                        assert isinstance(item, Comment)  # keep-alives: the bytes themselves were the point
                # An id with no data still moves the last event ID (WHATWG dispatch, step 1).
                self.last_event_id = parser.last_event_id
        except httpx.TransportError as exc:
            raise _Reconnect(_describe(exc), error=exc) from exc
        for item in parser.end():
            if isinstance(item, Event):
                self.last_event_id = item.id or ""
                yield item
        raise _Reconnect("the server closed the stream")


def _describe(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.ReadTimeout):
        return "no data within the idle timeout"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def _read_error_body(response: httpx.Response) -> str:
    body = bytearray()
    try:
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) >= _MAX_ERROR_BODY:
                break
    except httpx.HTTPError:
        pass  # a body cut short still says something; the status is the real news
    return body[:_MAX_ERROR_BODY].decode("utf-8", errors="replace")


async def stream_events(url: str, **options: Any) -> AsyncGenerator[Event, None]:
    """Yield the events of ``url``; the options are :class:`EventSource`'s."""
    async with EventSource(url, **options) as source:
        async for event in source:
            yield event


@dataclass(frozen=True, slots=True)
class GatewayEvent:
    """One event of ssegate's wire vocabulary: its type, its id and its JSON ``data`` decoded."""

    type: str
    id: str
    data: Any

    @classmethod
    def from_event(cls, event: Event) -> GatewayEvent:
        try:
            data: Any = json.loads(event.data)
        except ValueError:
            data = event.data  # not ours, or not JSON: hand it over as it came
        return cls(type=event.event, id=event.id or "", data=data)

    @property
    def terminal(self) -> bool:
        return self.type in GATEWAY_TERMINAL_EVENTS

    @property
    def failed(self) -> bool:
        """The generation ended in failure: ssegate's ``error`` event, ``data`` ``{code, message,
        retryable}``. Only the server's word on the generation is an event here; a lost connection
        never is (unlike a browser's EventSource, whose own ``error`` shares the name): this client
        reconnects by itself and raises :class:`~ssegate.errors.ClientError` once it gives up."""
        return self.type == "error"


class GatewayClient:
    """The ssegate server's HTTP API: start, follow, cancel and inspect generations; publish to topics.

    ``api_key`` is sent as ``Authorization: Bearer``. Non-2xx answers raise
    :class:`~ssegate.errors.HTTPStatusError`; an unreachable server raises
    :class:`~ssegate.errors.ClientError`.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        client: httpx.AsyncClient | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = client or httpx.AsyncClient(follow_redirects=True)
        self._owns_client = client is None
        self._timeout = timeout

    async def __aenter__(self) -> GatewayClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    def _url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    async def _request(self, method: str, path: str, json_body: Any = None) -> Any:
        url = self._url(path)
        try:
            response = await self._client.request(
                method, url, json=json_body, headers=self._headers, timeout=self._timeout
            )
        except httpx.TransportError as exc:
            raise ClientError(f"cannot reach {url}: {_describe(exc)}") from exc
        if not response.is_success:
            raise HTTPStatusError(response.status_code, response.text, url)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise ClientError(f"{url} answered with a body that is not JSON") from exc

    async def start_generation(
        self,
        messages: Sequence[Mapping[str, Any]] | None = None,
        *,
        prompt: str | None = None,
        system: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        max_tokens: int | None = None,
        keep_running: bool | None = None,
    ) -> dict[str, Any]:
        """Start a generation; returns ``{id, events_url, cancel_url}``. Give ``messages`` or ``prompt``."""
        if (messages is None) == (prompt is None):
            raise ValueError("give exactly one of messages and prompt")
        body: dict[str, Any] = {
            "messages": [dict(m) for m in messages]
            if messages is not None
            else [{"role": "user", "content": prompt}]
        }
        options = {
            "system": system,
            "provider": provider,
            "model": model,
            "max_tokens": max_tokens,
            "keep_running": keep_running,
        }
        body.update({key: value for key, value in options.items() if value is not None})
        started: dict[str, Any] = await self._request("POST", "/v1/generations", body)
        return started

    async def follow(
        self, generation_id: str, last_event_id: str | None = None, **options: Any
    ) -> AsyncGenerator[GatewayEvent, None]:
        """Yield a generation's events until its terminal ``done`` or ``error`` (resuming on drops)."""
        url = self._url(f"/v1/generations/{generation_id}/events")
        async for event in self._events(url, last_event_id, options):
            yield event

    async def cancel(self, generation_id: str) -> None:
        """Stop a generation now (the server answers 202 and ends the stream)."""
        await self._request("POST", f"/v1/generations/{generation_id}/cancel")

    async def state(self, generation_id: str) -> dict[str, Any]:
        """The generation's state as the server reports it."""
        state: dict[str, Any] = await self._request("GET", f"/v1/generations/{generation_id}")
        return state

    async def publish(self, topic: str, data: Any, *, event: str | None = None, id: str | None = None) -> str:
        """Append an event to a topic; returns the id the server gave it."""
        body: dict[str, Any] = {"data": data}
        if event is not None:
            body["event"] = event
        if id is not None:
            body["id"] = id
        answer = await self._request("POST", f"/v1/topics/{topic}/events", body)
        return str(answer["id"]) if isinstance(answer, dict) and "id" in answer else ""

    async def subscribe(
        self, topic: str, last_event_id: str | None = None, **options: Any
    ) -> AsyncGenerator[GatewayEvent, None]:
        """Yield a topic's events (after ``last_event_id``), reconnecting, until the server ends it."""
        options.setdefault("stop_on", ())
        async for event in self._events(self._url(f"/v1/topics/{topic}/events"), last_event_id, options):
            yield event

    async def _events(
        self, url: str, last_event_id: str | None, options: dict[str, Any]
    ) -> AsyncGenerator[GatewayEvent, None]:
        options.setdefault("stop_on", GATEWAY_TERMINAL_EVENTS)
        source = EventSource(
            url, headers=self._headers, last_event_id=last_event_id, client=self._client, **options
        )
        async with source:
            async for event in source:
                yield GatewayEvent.from_event(event)
