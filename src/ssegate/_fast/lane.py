"""Shortcut ``upstream_lane``: an upstream answer's chunked body, framed ahead of aiohttp's parser.

Relies on: aiohttp's response protocol (``aiohttp.client_proto.ResponseHandler``: its
``set_response_params``, ``data_received``, ``_payload``, ``exception()``) and the connector's
private protocol factory (``_factory``), replaced only where it is aiohttp's own.

aiohttp parses a streamed answer chunk by chunk into its body buffer, and the push path takes each
chunk out of that buffer again: about a dozen Python calls per relayed token (aiohttp's
``data_received``, the buffer's chunk bookkeeping, ``read_nowait``, flow control), a fifth of a
token's CPU under bench W4. A connection whose protocol is a :class:`LaneHandler` frames the body
itself: each whole chunk goes either to a sink that the push path attaches (aiohttp never sees it)
or, when none is attached, on to aiohttp unchanged.

So aiohttp's parser always stands at a chunk boundary, and it still sees the response head and the
last chunk with its trailers: it parses the head, ends the message and releases the connection
for keep-alive exactly as before. Anything this does not expect (a body that is not chunked, a
chunk extension, a malformed size line, a 1xx or bodiless answer) hands the rest of the response
to aiohttp as it arrives, so its parser and its errors decide as they always did; one thing is
added: when aiohttp closes the connection on a malformed chunk, the body's buffer fails too (aiohttp
alone would leave its reader waiting for the idle timeout).
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Callable
from typing import Any

from aiohttp import ClientPayloadError
from aiohttp.client_proto import ResponseHandler

# A chunk-size line with no extension (Anthropic and OpenAI send none). Hex digits only: int()
# would also take "0x1f", "+1f" or "1_f", which aiohttp refuses.
_SIZE_LINE = re.compile(rb"([0-9A-Fa-f]{1,8})\r\n")
_SIZE_LINE_MAX = 8 + 2  # the longest line that pattern matches
# A chunk bigger than this is not held until it is whole: it goes to aiohttp as it arrives.
MAX_HELD_CHUNK = 64 * 1024
# A response head bigger than this goes to aiohttp, which applies its own limits.
_MAX_HEAD = 64 * 1024
_BODYLESS_STATUS = (b"1", b"204", b"304")

_OFF, _HEAD, _BODY = 0, 1, 2

Sink = Callable[[bytes], None]


class LaneHandler(ResponseHandler):
    """aiohttp's response protocol, with the body's chunks taken by :meth:`attach`'s sink."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self._lane = _OFF
        self._held = b""  # bytes of a head or a chunk not yet whole
        self._passing = 0  # bytes of a big chunk still to hand to aiohttp as they come
        self._sink: Sink | None = None
        self._after_aiohttp: Callable[[], None] | None = None

    # -- the push path ---------------------------------------------------------------------------

    @property
    def in_body(self) -> bool:
        """Whether the body's chunks are being framed here (a sink can be attached)."""
        return self._lane == _BODY

    def attach(self, sink: Sink, after_aiohttp: Callable[[], None]) -> None:
        """From now on each whole chunk's data goes to ``sink``; ``after_aiohttp`` is called whenever
        something reached aiohttp instead (the last chunk, an error, the connection's end)."""
        self._sink = sink
        self._after_aiohttp = after_aiohttp

    def detach(self) -> None:
        """Chunks go to aiohttp again (its parser is at a chunk boundary)."""
        self._sink = None
        self._after_aiohttp = None

    # -- aiohttp's side ----------------------------------------------------------------------------

    def set_response_params(self, **params: Any) -> None:
        # A new request on this connection: its answer starts with a head. Set before aiohttp's own
        # set-up, which hands on bytes that arrived early.
        self._lane = _OFF if params.get("skip_payload") else _HEAD
        self._held = b""
        self._passing = 0
        self.detach()
        super().set_response_params(**params)

    def data_received(self, data: bytes) -> None:
        lane = self._lane
        if lane == _OFF:
            super().data_received(data)
            return
        if self._held:
            data = self._held + data
            self._held = b""
        if lane == _HEAD:
            data = self._head(data)
            if not data:
                return
        self._chunks(data)

    def eof_received(self) -> None:
        self._give_up(b"")
        super().eof_received()
        self._tell_push()

    def connection_lost(self, exc: BaseException | None) -> None:
        body = self._payload
        self._give_up(b"")
        super().connection_lost(exc)
        if body is not None and not body.is_eof() and body.exception() is None:
            # aiohttp refused a malformed chunk and closed the connection, but that error never
            # reaches the body's buffer: its reader would wait for the idle timeout, then call a
            # broken body a silent one
            body.set_exception(ClientPayloadError(f"Response payload is not completed: {self.exception()!r}"))
        self._tell_push()

    # -- framing ----------------------------------------------------------------------------------

    def _head(self, data: bytes) -> bytes:
        """Hand aiohttp the head once it is whole; what follows it, if the body is framed here."""
        end = data.find(b"\r\n\r\n")
        if end < 0:
            if len(data) > _MAX_HEAD:
                self._give_up(data)
            else:
                self._held = data
            return b""
        head, body = data[: end + 4], data[end + 4 :]
        status = head[9:12]
        if status.startswith(_BODYLESS_STATUS) or not _is_chunked(head):
            self._give_up(data)
            return b""
        super().data_received(head)
        if self.exception() is not None:
            # aiohttp refused the head and closed the connection; given in one piece, it would
            # never have parsed what follows (nor replaced its error with a later one)
            self._lane = _OFF
            return b""
        self._lane = _BODY
        return body

    def _chunks(self, data: bytes) -> None:
        pos = 0
        size_of = len(data)
        while pos < size_of:
            if self._passing:
                end = min(pos + self._passing, size_of)
                self._passing -= end - pos
                self._to_aiohttp(data[pos:end])
                pos = end
                continue
            match = _SIZE_LINE.match(data, pos)
            if match is None:
                if data.find(b"\r\n", pos, pos + _SIZE_LINE_MAX) >= 0 or size_of - pos > _SIZE_LINE_MAX:
                    self._give_up(data[pos:])  # an extension or a malformed line: aiohttp's call
                else:
                    self._held = data[pos:]  # the size line is not whole yet
                return
            size = int(match[1], 16)
            start = match.end()
            end = start + size
            if size == 0:
                self._give_up(data[pos:])  # the last chunk and trailers: aiohttp ends the message
                return
            if end + 2 > size_of:
                if size > MAX_HELD_CHUNK:
                    self._passing = end + 2 - size_of
                    self._to_aiohttp(data[pos:])
                else:
                    self._held = data[pos:]
                return
            if data[end : end + 2] != b"\r\n":
                self._give_up(data[pos:])
                return
            sink = self._sink
            if sink is None:
                self._to_aiohttp(data[pos : end + 2])
            else:
                sink(data[start:end])
            pos = end + 2

    def _give_up(self, data: bytes) -> None:
        """The rest of this response goes to aiohttp as it arrives, after what was held back."""
        self._lane = _OFF
        held, self._held = self._held, b""
        if held or data:
            self._to_aiohttp(held + data)

    def _to_aiohttp(self, data: bytes) -> None:
        super().data_received(data)
        self._tell_push()

    def _tell_push(self) -> None:
        after = self._after_aiohttp
        if after is not None:
            after()


def _is_chunked(head: bytes) -> bool:
    for line in head.lower().split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip() == b"transfer-encoding":
            return value.strip() == b"chunked"
    return False


def use_lane(connector: Any) -> None:
    """Make ``connector`` (aiohttp's pool) open its connections with :class:`LaneHandler`, where its
    protocol factory is aiohttp's own, as aiohttp 3.x builds it (else nothing changes)."""
    factory = getattr(connector, "_factory", None)
    if isinstance(factory, functools.partial) and factory.func is ResponseHandler:
        connector._factory = functools.partial(LaneHandler, *factory.args, **factory.keywords)
