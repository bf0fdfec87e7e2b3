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
from aiohttp.client_proto import ResponseHandler

from ssegate.providers._lane import LaneHandler
from ssegate.providers.base import Deliver, GenerationRequest, ProviderEvent, UpstreamError, pull_into

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


def timeout_error(idle_timeout: float) -> UpstreamError:
    return UpstreamError(
        "upstream_timeout", f"the upstream sent nothing for {idle_timeout:g} s", retryable=True
    )


def disconnected_error(detail: str) -> UpstreamError:
    return UpstreamError(
        "upstream_disconnected",
        f"the upstream closed the stream before it finished: {detail}",
        retryable=True,
    )


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

    With the SDKs' aiohttp transport it reads aiohttp's own buffer: the four async generators the
    SDK's httpx adapter stacks on top cost about a tenth of the CPU per streamed token (py-spy,
    bench W4). Any other transport (a custom ``http_client``), or a compressed body (httpx decodes
    it; the transport is told not to), is read through httpx.
    """
    body = _aiohttp_body(http_response)
    if body is not None:
        return body.content.readany
    chunks = http_response.aiter_bytes()

    async def next_chunk() -> bytes:
        chunk: bytes = await anext(chunks, b"")
        return chunk

    return next_chunk


class _AiohttpBody:
    """The body of a response read through the SDKs' aiohttp transport, as aiohttp holds it."""

    __slots__ = ("connected", "content", "identity", "protocol")

    def __init__(
        self,
        content: aiohttp.StreamReader,
        connected: bool,
        protocol: ResponseHandler | None,
        identity: bool,
    ) -> None:
        self.content = content
        self.connected = connected  # False: aiohttp had the whole body and let the connection go
        self.protocol = protocol
        self.identity = identity  # the body is sent as is (aiohttp decodes nothing)


def _aiohttp_body(http_response: Any) -> _AiohttpBody | None:
    """aiohttp's side of an identity-encoded SDK response, or of an answer sent directly (see
    _direct; aiohttp decodes that one), else ``None`` (another transport, a custom
    ``http_client``, or a compressed body, which httpx decodes: the transport is told not to).
    Our idle timer times the body, so aiohttp's own read timer, re-armed (a new timer handle) for
    every chunk that arrives, is turned off."""
    if isinstance(http_response, aiohttp.ClientResponse):
        # Sent directly (see _direct), with aiohttp decoding what it was sent compressed.
        aiohttp_response: Any = http_response
        content: Any = http_response.content
        encoding = http_response.headers.get("content-encoding", "identity").strip().lower()
    else:
        stream = getattr(http_response, "stream", None)
        stream = getattr(stream, "_stream", stream)  # httpx's client wraps the transport's stream once
        aiohttp_response = getattr(stream, "_aiohttp_response", None)
        content = getattr(aiohttp_response, "content", None)
        encoding = http_response.headers.get("content-encoding", "identity").strip().lower()
        if not isinstance(content, aiohttp.StreamReader) or encoding != "identity":
            return None
    connection = getattr(aiohttp_response, "connection", None)
    protocol = getattr(connection, "protocol", None)
    if not isinstance(protocol, ResponseHandler):
        protocol = None
    else:
        protocol.read_timeout = None
    return _AiohttpBody(content, connection is not None, protocol, encoding == "identity")


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


ChunkHandler = Callable[[bytes], None]
EndHandler = Callable[[], None]


class BodyPush:
    """Hands each body chunk to a callback from the socket's own callback: no task wakes per chunk.

    The pull path (:func:`body_reader`) wakes the consuming task for every chunk; without that
    wake a relayed token costs about a tenth less CPU (144 -> 131 us, bench W4 N=100). Here a thin
    protocol sits in front of aiohttp's for the length of the body: every callback goes to aiohttp
    as before, then what aiohttp put in the body's buffer is taken out and handed on at once.
    aiohttp's protocol is back in place before anything else can use the connection again (its
    release happens inside the callback that completes the body).

    :meth:`run` returns when a handler calls :meth:`finish`, raises what a handler raised or how
    the body failed (``upstream_disconnected``, ``upstream_timeout``), and on any exit,
    cancellation included, restores aiohttp's protocol. ``at_end`` is called when the body ends
    before :meth:`finish`: it finishes (an answer complete without its last marker) or raises.
    """

    def __init__(
        self,
        content: aiohttp.StreamReader,
        protocol: ResponseHandler | None,
        idle_timeout: float,
        *,
        framed_here: bool = False,
    ) -> None:
        self._content = content
        self._aiohttp = protocol
        # The connection's protocol frames the body itself: chunks come straight to _take.
        self._lane = protocol if framed_here and isinstance(protocol, LaneHandler) else None
        self._idle = idle_timeout
        self._loop = asyncio.get_running_loop()
        self._done: asyncio.Future[None] = self._loop.create_future()
        self._handle: ChunkHandler | None = None
        self._at_end: EndHandler | None = None
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.BaseTransport | None = None

    async def run(self, handle: ChunkHandler, at_end: EndHandler) -> None:
        self._handle = handle
        self._at_end = at_end
        self._deadline = self._loop.time() + self._idle
        self._timer = self._loop.call_at(self._deadline, self._check_idle)
        # No protocol: aiohttp had the whole body before we looked and let the connection go.
        protocol = self._aiohttp
        if self._lane is not None and self._lane.in_body:
            self._lane.attach(self._take, self._drain)
        elif protocol is not None and protocol.transport is not None:
            self._lane = None
            self._transport = protocol.transport
            protocol.transport.set_protocol(_Forwarding(protocol, self._drain))
        try:
            self._drain()  # what arrived with the response head
            await self._done
        finally:
            self._restore()

    def finish(self) -> None:
        """The handler saw the end of the answer: :meth:`run` returns."""
        self._settle(None)

    def _take(self, chunk: bytes) -> None:
        """A whole chunk's data, from the connection's own framing (see _lane)."""
        if self._done.done():
            return
        self._deadline = self._loop.time() + self._idle
        try:
            assert self._handle is not None
            self._handle(chunk)
        except BaseException as exc:  # the handler's errors end the call, not the loop
            self._settle(exc)

    def _drain(self) -> None:
        if self._done.done():
            return
        self._deadline = self._loop.time() + self._idle
        content = self._content
        try:
            error = content.exception()
            if error is not None:
                raise disconnected_error(f"{type(error).__name__}: {error}") from error
            chunk = content.read_nowait()
            if chunk:
                assert self._handle is not None
                self._handle(chunk)
            if content.at_eof() and not self._done.done():
                assert self._at_end is not None
                self._at_end()
                if not self._done.done():
                    raise disconnected_error("the body ended early")
        except BaseException as exc:  # the handler's errors too: they end the call, not the loop
            self._settle(exc)

    def _settle(self, error: BaseException | None) -> None:
        if self._done.done():
            return
        if error is None:
            self._done.set_result(None)
        else:
            self._done.set_exception(error)
        self._restore()

    def _check_idle(self) -> None:
        now = self._loop.time()
        if now >= self._deadline:
            self._timer = None
            self._settle(timeout_error(self._idle))
            return
        self._timer = self._loop.call_at(self._deadline, self._check_idle)

    def _restore(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._lane is not None:
            self._lane.detach()
        transport, self._transport = self._transport, None
        if transport is not None and self._aiohttp is not None and not transport.is_closing():
            transport.set_protocol(self._aiohttp)


class _Forwarding(asyncio.Protocol):
    """aiohttp's protocol with a drain after every callback that can add to or end the body."""

    __slots__ = ("_aiohttp", "_drain")

    def __init__(self, protocol: ResponseHandler, drain: Callable[[], None]) -> None:
        self._aiohttp = protocol
        self._drain = drain

    def data_received(self, data: bytes) -> None:
        self._aiohttp.data_received(data)
        self._drain()

    def eof_received(self) -> None:
        self._aiohttp.eof_received()
        self._drain()

    def connection_lost(self, exc: Exception | None) -> None:
        self._aiohttp.connection_lost(exc)
        self._drain()

    def pause_writing(self) -> None:
        self._aiohttp.pause_writing()

    def resume_writing(self) -> None:
        self._aiohttp.resume_writing()


def body_push(http_response: Any, idle_timeout: float) -> BodyPush | None:
    """A :class:`BodyPush` for a response read through the SDKs' aiohttp transport, else ``None``
    (any other transport, or a compressed body: read those with :func:`body_reader`)."""
    body = _aiohttp_body(http_response)
    if body is None or (body.connected and body.protocol is None):
        return None  # a connection whose protocol is not aiohttp's response handler: pull it
    return BodyPush(body.content, body.protocol, idle_timeout, framed_here=body.identity)


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
            push = body_push(response.http_response, self._idle_timeout)
            if push is None:  # a custom HTTP client, or a compressed body
                await pull_into(self._pull(response), deliver)
                return
            await push.run(*self._push_handlers(push, deliver))
        finally:
            await context.__aexit__(None, None, None)
