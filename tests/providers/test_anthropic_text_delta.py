"""Anthropic's token events read by their bytes (anthropic.text_delta): exactly what the parser and
the mapper make of the same chunk, or nothing (and the chunk goes the general way)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ssegate.codec import Event, EventStreamParser
from ssegate.providers.anthropic import _Answer, text_delta
from ssegate.providers.base import TextDelta

TEXT = st.text(st.characters(blacklist_categories=["Cs"]))


def delta_event(text: str, *, ensure_ascii: bool = False) -> bytes:
    data = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}
    payload = json.dumps(data, ensure_ascii=ensure_ascii, separators=(",", ":")).encode()
    return b"event: content_block_delta\ndata: " + payload + b"\n\n"


def general_way(chunk: bytes) -> list[object]:
    """What the parser and the mapper give for ``chunk`` fed at an event boundary."""
    answer = _Answer()
    out: list[object] = []
    for item in EventStreamParser().feed(chunk):
        if type(item) is Event:
            answer.event(item, out.append)
    return out


@given(TEXT, st.booleans())
def test_a_token_event_gives_the_text_the_general_way_gives(text: str, ensure_ascii: bool) -> None:
    chunk = delta_event(text, ensure_ascii=ensure_ascii)
    found = text_delta(chunk)
    assert found == text
    assert general_way(chunk) == [TextDelta(text)]


@pytest.mark.parametrize(
    "chunk",
    [
        delta_event("a") + delta_event("b"),  # two events: the general way reads both
        b"id: 7\n" + delta_event("a"),  # an id changes the parser's state
        delta_event("a").replace(b"\n", b"\r\n"),  # CR line ends
        delta_event("a")[:-1],  # not a whole event
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"thinking_delta","thinking":"hm"}}\n\n',
        b'event: content_block_delta\ndata: {"delta":{"type":"text_delta","text":"\xff"}}\n\n',
        b"event: content_block_delta\ndata: [1]\n\n",
        b"event: ping\ndata: {}\n\n",
    ],
)
def test_anything_else_is_left_to_the_general_way(chunk: bytes) -> None:
    assert text_delta(chunk) is None


def test_a_second_space_before_the_data_is_json_whitespace_both_ways() -> None:
    chunk = b'event: content_block_delta\ndata:  {"delta":{"type":"text_delta","text":"a"}}\n\n'
    assert text_delta(chunk) == "a"
    assert general_way(chunk) == [TextDelta("a")]


def test_invalid_utf8_is_left_to_the_parser_which_replaces_it() -> None:
    chunk = b'event: content_block_delta\ndata: {"delta":{"type":"text_delta","text":"a\xffb"}}\n\n'
    assert text_delta(chunk) is None
    assert general_way(chunk) == [TextDelta("a\ufffdb")]


def test_the_parser_says_when_it_stands_at_an_event_boundary() -> None:
    parser = EventStreamParser()
    assert not parser.at_event_boundary()  # a byte-order mark may still come
    parser.feed(b"data: 1\n\n")
    assert parser.at_event_boundary()
    for pending in (b"data: 2", b"data: 2\n", b"event: x\n", b"id: 3\n", b"data: 2\r", b"\xf0\x9f"):
        parser = EventStreamParser()
        parser.feed(b"data: 1\n\n" + pending)
        assert not parser.at_event_boundary(), pending
