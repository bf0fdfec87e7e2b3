"""Shared plumbing of the HTTP adapters: status → error code, and reading raw SSE bytes with an idle timer.

The vendor SDKs make the request (auth, headers, retries, status errors); from the first body byte
on, the adapters read the raw bytes themselves, because the SDKs' per-event model parsing costs
many times more than ``json.loads`` on the data line.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import httpx2

from ssegate import _fast
from ssegate._fast.body import BodyPush, ChunkHandler, EndHandler, aiohttp_reader, body_push
from ssegate.providers._errors import disconnected_error, timeout_error
from ssegate.providers.base import Deliver, GenerationRequest, ProviderEvent, UpstreamError, pull_into

__all__ = [  # what the vendor adapters take from here (some of it made elsewhere)
    "BodyPush",
    "ChunkHandler",
    "ChunkReader",
    "EndHandler",
    "IdleReader",
    "SSEAdapter",
    "body_reader",
    "connection_limits",
    "disconnected_error",
    "error_body_summary",
    "error_for_status",
    "start_timeout_error",
    "timeout_error",
    "unavailable_error",
]

# Statuses whose meaning does not depend on the vendor (RFC 9110 plus Anthropic's 529).
_AUTH = frozenset({401, 403})
_BAD_REQUEST = frozenset({400, 404, 409, 413, 422})
OVERLOADED_STATUS = 529


def error_for_status(status: int, message: str) -> UpstreamError:
    """The :class:`UpstreamError` for an HTTP error status answered before the first byte."""
    if status in _AUTH:
        return UpstreamError("upstream_auth", message, retryable=False, status=status)
    if status == 429:
        return UpstreamError("rate_limited", message, retryable=True, status=status)
    if status == OVERLOADED_STATUS:
        return UpstreamError("upstream_overloaded", message, retryable=True, status=status)
    if status == 408:
        return UpstreamError("upstream_timeout", message, retryable=True, status=status)
    if status >= 500:
        return UpstreamError("upstream_unavailable", message, retryable=True, status=status)
    if status in _BAD_REQUEST or 400 <= status < 500:
        return UpstreamError("upstream_bad_request", message, retryable=False, status=status)
    return UpstreamError("upstream_error", message, retryable=False, status=status)


def start_timeout_error(exc: BaseException, idle_timeout: float) -> UpstreamError:
    """What an SDK's timeout while starting the call means: a timeout, or a refused connection.

    httpx-aiohttp (the SDKs' aiohttp transport) reports aiohttp's connect failures as
    ``ConnectTimeout``; the refusal is still there in the chain of causes.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return unavailable_error(str(exc.__cause__ or exc))
        seen = seen.__cause__ or seen.__context__
    return timeout_error(idle_timeout)


def unavailable_error(detail: str) -> UpstreamError:
    return UpstreamError("upstream_unavailable", f"cannot reach the upstream: {detail}", retryable=True)


def connection_limits(sdk_default: httpx2.Limits, max_connections: int) -> httpx2.Limits:
    """The SDK's connection limits with room for ``max_connections`` at once.

    A streaming call holds its connection until the answer ends, so the pool's size is how many
    generations can run at once; past the SDKs' 1000, the next one would wait for a free
    connection and end with ``upstream_timeout``.
    """
    return httpx2.Limits(
        max_connections=max_connections,
        max_keepalive_connections=sdk_default.max_keepalive_connections,
        keepalive_expiry=sdk_default.keepalive_expiry,
    )


ChunkReader = Callable[[], Awaitable[bytes]]


def body_reader(http_response: Any) -> ChunkReader:
    """A function that returns the next raw body chunk, ``b""`` at the end.

    With the SDKs' aiohttp transport (and the ``body_push`` shortcut on) it reads aiohttp's own
    buffer: the four async generators the SDK's httpx adapter stacks on top cost about a tenth of
    the CPU per streamed token (py-spy, bench W4). An answer sent directly (an aiohttp response)
    is read from aiohttp's buffer in any case. Anything else (a custom ``http_client``, a
    compressed body, the shortcut off) is read through httpx.
    """
    if _fast.enabled(_fast.BODY_PUSH):
        read = aiohttp_reader(http_response)
        if read is not None:
            return read
    if isinstance(http_response, aiohttp.ClientResponse):
        return http_response.content.readany
    chunks = http_response.aiter_bytes()

    async def next_chunk() -> bytes:
        chunk: bytes = await anext(chunks, b"")
        return chunk

    return next_chunk


class IdleReader:
    """Reads body chunks, failing with ``upstream_timeout`` when one takes longer than ``idle_timeout``.

    One timer per stream, re-armed lazily: reading a chunk only stores a deadline, and the timer
    callback moves itself forward when it finds the deadline moved. The timer only fires while the
    reader is waiting for bytes, never while the consumer holds a yielded event (cancelling then
    would hit the consumer's own work).
    """

    __slots__ = ("_deadline", "_fired", "_handle", "_idle", "_loop", "_read", "_task", "_waiting")

    def __init__(self, read: ChunkReader, idle_timeout: float) -> None:
        self._read = read
        self._idle = idle_timeout
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None, "IdleReader must be used inside a task"
        self._task = task
        self._deadline = self._loop.time() + idle_timeout
        self._waiting = False
        self._fired = False
        self._handle = self._loop.call_at(self._deadline, self._check)

    def _check(self) -> None:
        now = self._loop.time()
        if self._waiting and now >= self._deadline:
            self._fired = True
            self._task.cancel()
            return
        self._handle = self._loop.call_at(max(self._deadline, now + self._idle), self._check)

    async def next(self) -> bytes | None:
        """The next body chunk, or ``None`` at the end of the body."""
        self._deadline = self._loop.time() + self._idle
        self._waiting = True
        try:
            return await self._read() or None
        except asyncio.CancelledError:
            # Our own cancel becomes a timeout; anyone else's cancel goes on as a cancel.
            if self._fired and self._task.uncancel() == 0:
                raise timeout_error(self._idle) from None
            raise
        finally:
            self._waiting = False

    def close(self) -> None:
        self._handle.cancel()


def error_body_summary(body: object, fallback: str) -> tuple[str | None, str]:
    """``(type, "type: message")`` from a vendor's JSON error body, whole or already unwrapped.

    Anthropic answers ``{"type": "error", "error": {"type", "message"}}``; OpenAI answers
    ``{"error": {"message", "type", "code"}}`` and its SDK hands over the inner object.
    """
    if not isinstance(body, dict):
        return None, fallback
    inner = body.get("error")
    error: dict[str, object] = inner if isinstance(inner, dict) else body
    kind = error.get("type") or error.get("code")
    message = error.get("message")
    if not isinstance(message, str) or not message:
        return (str(kind) if kind else None), fallback
    return (str(kind) if kind else None), (f"{kind}: {message}" if kind else message)


class SSEAdapter:
    """How an SDK-backed adapter reads its answer, both ways: pulled (``stream``, its caller's task
    reads the body) and pushed (``stream_into``, from the socket's callback). A vendor's adapter
    says how to send the request (``_open``), how to read the body in a task (``_pull``) and how
    to handle chunks and the body's end when pushed (``_push_handlers``)."""

    _idle_timeout: float

    async def _open(self, request: GenerationRequest) -> tuple[Any, Any]:
        """Send the request; ``(context, response)`` once the answer's head is in."""
        raise NotImplementedError

    def _pull(self, response: Any) -> AsyncGenerator[ProviderEvent, None]:
        raise NotImplementedError

    def _push_handlers(self, push: BodyPush, deliver: Deliver) -> tuple[ChunkHandler, EndHandler]:
        raise NotImplementedError

    async def stream(self, request: GenerationRequest) -> AsyncIterator[ProviderEvent]:
        context, response = await self._open(request)
        # From here on, leaving for any reason (end, error, aclose, cancel) closes the connection.
        events = self._pull(response)
        try:
            async for event in events:
                yield event
        finally:
            await events.aclose()
            await context.__aexit__(None, None, None)

    async def stream_into(self, request: GenerationRequest, deliver: Deliver) -> None:
        context, response = await self._open(request)
        try:
            push = None
            if _fast.enabled(_fast.BODY_PUSH):
                push = body_push(response.http_response, self._idle_timeout)
            if push is None:  # the shortcut off, a custom HTTP client, or a compressed body
                await pull_into(self._pull(response), deliver)
                return
            await push.run(*self._push_handlers(push, deliver))
        finally:
            await context.__aexit__(None, None, None)
