"""Shortcut ``body_push``: an upstream answer's body taken from aiohttp's own buffer, and pushed.

Relies on: the SDKs' vendored httpx-aiohttp keeping aiohttp's response on its stream
(``stream._stream._aiohttp_response``), aiohttp's response protocol (``read_timeout``,
``transport``, its callbacks) and swapping a connection's protocol for the length of a body
(``transport.set_protocol``), aiohttp's own back in place before anything else can use the
connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp.client_proto import ResponseHandler

from ssegate._fast.lane import LaneHandler
from ssegate.providers._errors import disconnected_error, timeout_error

__all__ = ["BodyPush", "ChunkHandler", "EndHandler", "aiohttp_reader", "body_push"]


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


def aiohttp_reader(http_response: Any) -> Callable[[], Awaitable[bytes]] | None:
    """``readany`` of aiohttp's buffer under ``http_response``, or ``None`` (see :func:`_aiohttp_body`)."""
    body = _aiohttp_body(http_response)
    return None if body is None else body.content.readany


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
