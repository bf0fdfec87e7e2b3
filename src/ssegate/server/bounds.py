"""Every request is bounded: its header size and count, and how long its headers and body take.

uvicorn reads a request's headers whole, however large, and waits for them and for the body for
ever: one request with a 100 MB header is 100 MB of server memory, and a few hundred connections
that send their headers a byte at a time hold their sockets indefinitely (slowloris). This module
puts a :class:`BoundedProtocol` between the transport and whichever HTTP protocol uvicorn runs
(ssegate's fast one or uvicorn's own: both paths get the same bounds). It only watches: every byte
goes on to the protocol unchanged, parsed a second time by its own ``httptools`` parser, until a
bound is crossed:

* headers larger than ``max_header_bytes`` (request line included) or more than ``max_headers``
  of them: 431 ``headers_too_large`` and the connection closes, before the rest is read;
* headers not complete ``header_timeout`` seconds after the connection opened (or after the
  request's first byte, for a later request on a kept-alive connection): 408 ``header_timeout``;
* a body not complete ``body_timeout`` (plus a second's grace) after its headers: the connection
  closes. The app's own read of the body (:func:`ssegate.server.http.read_json_body`) answers 408
  ``body_timeout`` first; this catches the bodies nobody reads.

The 431 and 408 are written as JSON only on a connection's first request: on a later one an earlier
response may still be on its way (a held stream), so the connection just closes. A connection that
holds a stream keeps only this object's few slots: the parser goes once each request is read.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httptools

# The body timer's grace over the app's own: the app answers 408 first when it is the one reading.
_BODY_GRACE_S = 1.0


@dataclass(frozen=True, slots=True)
class RequestBounds:
    """The limits (``SSEGATE_MAX_HEADER_BYTES`` … ``SSEGATE_BODY_TIMEOUT``; see config.py)."""

    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    body_timeout: float = 30.0


class BoundedHttp:
    """uvicorn's ``http`` option: each connection's protocol (made by ``inner``, with uvicorn's
    arguments) behind a :class:`BoundedProtocol`. A plain picklable object: ``--workers`` hands the
    configuration to its processes."""

    def __init__(self, inner: Callable[..., asyncio.Protocol], bounds: RequestBounds) -> None:
        self.inner = inner
        self.bounds = bounds

    def __call__(self, *args: Any, **kwargs: Any) -> BoundedProtocol:
        return BoundedProtocol(self.inner(*args, **kwargs), self.bounds)


class BoundedProtocol(asyncio.Protocol):
    """Watches one connection's requests and forwards everything to ``inner`` (see the module)."""

    __slots__ = (
        "_body",
        "_bounds",
        "_closed",
        "_has_body",
        "_head_size",
        "_header_bytes",
        "_headers",
        "_in_headers",
        "_inner",
        "_parser",
        "_passthrough",
        "_requests",
        "_timer",
        "_too_large",
        "_transport",
    )

    def __init__(self, inner: asyncio.Protocol, bounds: RequestBounds) -> None:
        self._inner = inner
        self._bounds = bounds
        self._transport: asyncio.Transport | None = None
        self._parser: httptools.HttpRequestParser | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._passthrough = False  # an upgrade or a parse error: the inner protocol's alone
        self._in_headers = False  # between a request's first byte and the end of its headers
        self._body = False  # between the end of a request's headers and the end of its body
        self._has_body = False
        self._header_bytes = 0  # bytes received while the headers were incomplete
        self._head_size = 0  # the request line and headers, as parsed
        self._headers = 0
        self._too_large = False
        self._requests = 0  # requests begun on this connection

    # -- asyncio.Protocol: every call goes on to the inner protocol ----------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self._transport = transport  # type: ignore[assignment]
        self._inner.connection_made(transport)
        # The first request's headers must be complete this long after connecting.
        self._in_headers = True
        self._arm(self._bounds.header_timeout, self._header_timed_out)

    def data_received(self, data: bytes) -> None:
        if self._passthrough:
            self._inner.data_received(data)
            return
        if self._closed:
            return
        parser = self._parser
        if parser is None:
            parser = self._parser = httptools.HttpRequestParser(self)
        was_in_headers = self._in_headers
        if was_in_headers:
            self._header_bytes += len(data)
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._stop_watching()  # the inner protocol decides what an upgrade gets
        except httptools.HttpParserError:
            self._stop_watching()  # the inner protocol answers 400 for it
        if self._in_headers and not was_in_headers:  # a later request began in this chunk
            self._header_bytes += len(data)
        if self._too_large or (
            self._in_headers
            and (
                self._header_bytes > self._bounds.max_header_bytes or self._headers > self._bounds.max_headers
            )
        ):
            self._refuse(431, "headers_too_large", self._too_large_message())
            return
        if not self._in_headers and not self._body and self._parser is not None:
            self._parser = None  # between requests: a held stream keeps no parser
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._disarm()
        self._parser = None
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    # -- httptools callbacks (this object is also the parser's protocol) -----------------------

    def on_message_begin(self) -> None:
        self._requests += 1
        self._headers = self._head_size = 0
        self._has_body = False
        if not self._in_headers:  # a later request: its headers get their own time from now
            self._in_headers = True
            self._header_bytes = 0
            self._arm(self._bounds.header_timeout, self._header_timed_out)

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers += 1
        self._head_size += len(name) + len(value) + 4  # ": " and CRLF
        name = name.lower()
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() not in (b"0", b"")):
            self._has_body = True

    def on_headers_complete(self) -> None:
        bounds = self._bounds
        if self._head_size > bounds.max_header_bytes or self._headers > bounds.max_headers:
            self._too_large = True  # it came whole in one read: refused all the same
        self._in_headers = False
        self._header_bytes = 0
        self._disarm()
        if self._has_body:
            self._body = True
            self._arm(self._bounds.body_timeout + _BODY_GRACE_S, self._body_timed_out)

    def on_message_complete(self) -> None:
        if self._body:
            self._body = False
            self._disarm()

    # -- bounds ---------------------------------------------------------------------------------

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        self._disarm()
        if delay > 0:
            self._timer = asyncio.get_running_loop().call_later(delay, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _stop_watching(self) -> None:
        """Something the parser cannot follow: leave the connection to the inner protocol."""
        self._passthrough = True
        self._in_headers = self._body = False
        self._disarm()
        self._parser = None

    def _header_timed_out(self) -> None:
        self._timer = None
        self._refuse(
            408,
            "header_timeout",
            f"the request's headers did not arrive within {self._bounds.header_timeout:g} s",
        )

    def _body_timed_out(self) -> None:
        self._timer = None
        self._close()

    def _too_large_message(self) -> str:
        bounds = self._bounds
        return (
            f"the request's headers are larger than {bounds.max_header_bytes} bytes "
            f"or more than {bounds.max_headers}"
        )

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer (on a connection's first request only, see the module) and close."""
        transport = self._transport
        if transport is not None and self._requests <= 1 and not transport.is_closing():
            transport.write(_response(status, code, message))
        self._close()

    def _close(self) -> None:
        self._closed = True
        self._disarm()
        self._parser = None
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()


_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


def _response(status: int, code: str, message: str) -> bytes:
    body = json.dumps({"error": {"code": code, "message": message}}, separators=(",", ":")).encode()
    head = (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
    )
    return head % (status, _REASONS[status], len(body)) + body
