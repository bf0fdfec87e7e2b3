"""The upstream body's chunked framing done ahead of aiohttp (providers._lane).

A LaneHandler sits on a real socket with aiohttp's real parser behind it; each test hands it bytes
split where the network might split them and checks two things a user would notice: every body
byte arrives once and in order (through the sink, or through aiohttp's buffer), and aiohttp still
ends the message (keep-alive) or reports the broken body as before.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp.client_proto import ResponseHandler
from aiohttp.http_exceptions import HttpProcessingError

from ssegate import _fast
from ssegate._fast.lane import MAX_HELD_CHUNK, LaneHandler
from ssegate.providers import ProviderConfig, build_provider
from ssegate.providers.anthropic import AnthropicProvider
from tests.fakes.fake_anthropic import AnthropicScript, FakeAnthropic
from tests.providers.helpers import ask, pushed, text_of

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
EVENTS = [b"event: ping\ndata: {}\n\n", b'event: delta\ndata: {"text":"h\xc3\xa9"}\n\n', b"data: 3\n\n"]
LAST = b"0\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


@dataclass
class Lane:
    """A LaneHandler on one end of a socket pair, with what reached its sink and aiohttp."""

    handler: LaneHandler
    peer: socket.socket
    sunk: list[bytes] = field(default_factory=list)
    told: int = 0  # calls of after_aiohttp
    payload: aiohttp.StreamReader | None = None

    def attach(self) -> None:
        self.handler.attach(self.sunk.append, self._tell)

    def _tell(self) -> None:
        self.told += 1

    async def head(self) -> aiohttp.StreamReader:
        """The body's buffer aiohttp made when it parsed the head."""
        if self.payload is None:
            _message, payload = await self.handler.read()
            self.payload = payload
        return self.payload

    def feed(self, *pieces: bytes) -> None:
        for piece in pieces:
            self.handler.data_received(piece)

    def from_aiohttp(self) -> bytes:
        assert self.payload is not None
        return self.payload.read_nowait()


@pytest.fixture
async def lane() -> AsyncIterator[Lane]:
    ours, peer = socket.socketpair()
    loop = asyncio.get_running_loop()
    transport, handler = await loop.create_connection(lambda: LaneHandler(loop), sock=ours)
    handler.set_response_params(read_until_eof=False, auto_decompress=False)
    yield Lane(handler, peer)
    transport.close()
    peer.close()


async def test_whole_chunks_go_to_the_sink_and_aiohttp_still_ends_the_message(lane: Lane) -> None:
    lane.feed(HEAD + chunk(EVENTS[0]))
    payload = await lane.head()
    assert lane.from_aiohttp() == EVENTS[0]  # before a sink is attached, aiohttp reads as ever
    lane.attach()
    lane.feed(chunk(EVENTS[1]) + chunk(EVENTS[2]))
    assert lane.sunk == [EVENTS[1], EVENTS[2]]
    assert payload.total_bytes == len(EVENTS[0])  # aiohttp never saw those two
    lane.feed(LAST)
    assert payload.is_eof()
    assert lane.told == 1  # the push path is told to look at aiohttp's side (the end)
    assert not lane.handler.should_close  # keep-alive: the connection can serve the next call


async def test_a_detached_lane_hands_chunks_to_aiohttp(lane: Lane) -> None:
    lane.feed(HEAD)
    payload = await lane.head()
    lane.attach()
    lane.feed(chunk(EVENTS[0]))
    lane.handler.detach()
    lane.feed(chunk(EVENTS[1]) + LAST)
    assert lane.sunk == [EVENTS[0]]
    assert lane.from_aiohttp() == EVENTS[1]
    assert payload.is_eof()


BODY = b"".join(map(chunk, EVENTS)) + chunk(EVENTS[1] * 3) + LAST


@pytest.mark.parametrize("split", range(1, len(BODY)))
async def test_every_split_of_the_body_delivers_each_byte_once_in_order(lane: Lane, split: int) -> None:
    lane.feed(HEAD)
    payload = await lane.head()
    lane.attach()
    lane.feed(BODY[:split], BODY[split:])
    assert b"".join(lane.sunk) + lane.from_aiohttp() == b"".join(EVENTS) + EVENTS[1] * 3
    assert payload.is_eof()


async def test_a_body_fed_byte_by_byte_is_delivered_whole(lane: Lane) -> None:
    stream = HEAD + BODY
    lane.feed(*(stream[i : i + 1] for i in range(len(stream))))
    payload = await lane.head()
    assert lane.from_aiohttp() == b"".join(EVENTS) + EVENTS[1] * 3
    assert payload.is_eof()


async def test_a_chunk_too_big_to_hold_goes_to_aiohttp_as_it_arrives(lane: Lane) -> None:
    big = b"x" * (MAX_HELD_CHUNK + 10)
    framed = chunk(big)
    size_line = framed.index(b"\r\n") + 2
    lane.feed(HEAD)
    payload = await lane.head()
    lane.attach()
    lane.feed(framed[:1000])
    assert lane.from_aiohttp() == framed[size_line:1000]  # at once, not held until whole
    assert lane.told == 1
    lane.feed(framed[1000:] + chunk(EVENTS[0]))
    assert lane.from_aiohttp() == big[1000 - size_line :]
    assert lane.sunk == [EVENTS[0]]  # past the big chunk the lane frames again
    lane.feed(LAST)
    assert payload.is_eof()


async def test_a_chunk_extension_is_left_to_aiohttp(lane: Lane) -> None:
    lane.feed(HEAD)
    payload = await lane.head()
    lane.attach()
    lane.feed(b"5;name=value\r\nhello\r\n" + chunk(EVENTS[0]) + LAST)
    assert lane.sunk == []
    assert lane.from_aiohttp() == b"hello" + EVENTS[0]
    assert payload.is_eof()


@pytest.mark.parametrize("bad", [b"zz\r\nhello\r\n", b"0x5\r\nhello\r\n", b"5\r\nhelloXX"])
async def test_a_malformed_chunk_fails_as_aiohttp_fails_it(lane: Lane, bad: bytes) -> None:
    lane.feed(HEAD)
    payload = await lane.head()
    lane.attach()
    lane.feed(bad + LAST)
    assert lane.sunk == []
    # What aiohttp does with it on its own: its parse error, the connection closed, the body
    # never complete (so it never goes back to the pool)
    assert isinstance(lane.handler.exception(), HttpProcessingError)
    assert lane.handler.transport is None or lane.handler.transport.is_closing()
    assert not payload.is_eof()
    assert lane.told >= 1
    # and once the connection is gone, the body's reader learns that it broke (aiohttp alone
    # leaves it waiting)
    closed = lane.handler.closed
    if closed is not None:
        await closed
    assert isinstance(payload.exception(), aiohttp.ClientPayloadError)


async def test_a_connection_lost_mid_chunk_is_a_truncated_body(lane: Lane) -> None:
    lane.feed(HEAD)
    payload = await lane.head()
    lane.attach()
    lane.feed(chunk(EVENTS[0]) + chunk(EVENTS[1])[:7])
    lane.handler.connection_lost(None)
    assert lane.sunk == [EVENTS[0]]
    assert isinstance(payload.exception(), aiohttp.ClientPayloadError)
    assert lane.told == 2  # the held bytes reached aiohttp, then the end did


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nbad header\r\n\r\n",
    ],
)
async def test_a_head_aiohttp_refuses_fails_with_aiohttps_own_error(lane: Lane, head: bytes) -> None:
    loop = asyncio.get_running_loop()
    ours, peer = socket.socketpair()
    transport, plain = await loop.create_connection(lambda: ResponseHandler(loop), sock=ours)
    try:
        plain.set_response_params(read_until_eof=False, auto_decompress=False)
        answer = head + chunk(EVENTS[0]) + LAST
        plain.data_received(answer)  # what aiohttp alone says of this answer
        lane.feed(answer)
        expected = plain.exception()
        assert isinstance(expected, HttpProcessingError)
        assert str(lane.handler.exception()) == str(expected)
        assert not lane.handler.in_body
    finally:
        transport.close()
        peer.close()


async def test_a_body_with_a_length_is_aiohttps_alone(lane: Lane) -> None:
    lane.feed(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhel")
    payload = await lane.head()
    assert not lane.handler.in_body
    lane.feed(b"lo")
    assert lane.from_aiohttp() == b"hello"
    assert payload.is_eof()


@pytest.mark.fast_paths(_fast.DIRECT_ATTEMPT, _fast.UPSTREAM_LANE)
async def test_pushed_answers_use_the_lane_and_keep_their_connection() -> None:
    script = AnthropicScript(text=("Hel", "lo ", "wor", "ld"))
    async with FakeAnthropic(script) as fake:
        provider = build_provider(
            "anthropic",
            ProviderConfig(anthropic_api_key="k", anthropic_base_url=fake.url, spare_connections=0),
        )
        assert isinstance(provider, AnthropicProvider)
        try:
            for _ in range(3):
                events = [event async for event in pushed(provider, ask("hi"))]
                assert text_of(events) == "Hello world"
            assert fake.connections_accepted == 1
            pool = provider._call.direct._pool if provider._call.direct else None
            assert pool is not None
            idle = [protocol for held in pool._conns.values() for protocol, _ in held]  # type: ignore[attr-defined]
            assert idle
            assert all(isinstance(protocol, LaneHandler) for protocol in idle)
        finally:
            await provider.aclose()
