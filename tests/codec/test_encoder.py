"""The encoder: exact bytes for tricky payloads, and refusals that make field injection impossible."""

from __future__ import annotations

import pytest

from ssegate.codec import Event, EventStreamParser, encode_comment, encode_event, encode_retry
from ssegate.codec.encoder import encode_fields
from ssegate.errors import LocalProtocolError


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (Event("hi"), b"data: hi\n\n"),
        (Event(""), b"data: \n\n"),
        (Event("a\nb"), b"data: a\ndata: b\n\n"),
        (Event("a\r\nb"), b"data: a\ndata: b\n\n"),
        (Event("a\rb"), b"data: a\ndata: b\n\n"),
        (Event("a\n"), b"data: a\ndata: \n\n"),
        (Event("\n"), b"data: \ndata: \n\n"),
        (Event("\r\n\r"), b"data: \ndata: \ndata: \n\n"),
        (Event("a\u2028b"), "data: a\u2028b\n\n".encode()),
        (Event("🦜"), "data: 🦜\n\n".encode()),
        (Event("  two spaces"), b"data:   two spaces\n\n"),
        (Event(":not a comment"), b"data: :not a comment\n\n"),
        (Event("\ufeffx"), "data: \ufeffx\n\n".encode()),
        (Event("a\0b"), b"data: a\0b\n\n"),
        (Event("x", event="text"), b"event: text\ndata: x\n\n"),
        (Event("x", event="message"), b"data: x\n\n"),
        (Event("x", id="42"), b"id: 42\ndata: x\n\n"),
        (Event("x", id=""), b"id: \ndata: x\n\n"),
        (Event("x", id=" padded"), b"id:  padded\ndata: x\n\n"),
        (Event("x", retry=1500), b"retry: 1500\ndata: x\n\n"),
        (Event("x", event="done", id="7", retry=0), b"id: 7\nevent: done\nretry: 0\ndata: x\n\n"),
    ],
)
def test_encode_event_writes_exact_bytes(event: Event, expected: bytes) -> None:
    assert encode_event(event) == expected


@pytest.mark.parametrize(
    "event",
    [
        Event("x", id="1\n2"),
        Event("x", id="1\r2"),
        Event("x", id="1\r\nevent: evil"),
        Event("x", id="1\x002"),
        Event("x", event="a\nb"),
        Event("x", event="a\rdata: injected"),
        Event("x", event="a\x00b"),
        Event("x", event=""),
        Event("x", retry=-1),
        Event("x", retry=True),
        Event("x", retry=1.5),  # type: ignore[arg-type]
        Event("lone surrogate \ud800"),
        Event("x", id="\udfff"),
    ],
)
def test_encode_event_refuses_what_the_receiver_would_misread(event: Event) -> None:
    with pytest.raises(LocalProtocolError):
        encode_event(event)


def test_encode_event_error_is_a_value_error_naming_the_field() -> None:
    with pytest.raises(ValueError, match="event id cannot contain CR, LF or NUL"):
        encode_event(Event("x", id="1\n"))


def test_encode_event_one_mebibyte_line_round_trips() -> None:
    data = "x" * (1 << 20)
    parser = EventStreamParser()
    assert parser.feed(encode_event(Event(data))) == [Event(data, id="")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", b":\n"), ("ping", b": ping\n"), (" x", b":  x\n"), ("é", ": é\n".encode())],
)
def test_encode_comment_writes_one_comment_line(text: str, expected: bytes) -> None:
    assert encode_comment(text) == expected


@pytest.mark.parametrize("text", ["a\nb", "a\r", "\r\ndata: evil"])
def test_encode_comment_refuses_line_breaks(text: str) -> None:
    with pytest.raises(LocalProtocolError):
        encode_comment(text)


@pytest.mark.parametrize(("ms", "expected"), [(0, b"retry: 0\n"), (3000, b"retry: 3000\n")])
def test_encode_retry_writes_a_retry_line(ms: int, expected: bytes) -> None:
    assert encode_retry(ms) == expected


@pytest.mark.parametrize("ms", [-1, True, 2.0, "10", None])
def test_encode_retry_refuses_anything_but_non_negative_int(ms: object) -> None:
    with pytest.raises(LocalProtocolError):
        encode_retry(ms)  # type: ignore[arg-type]


# encode_fields is the log's encoder: an id and one line of data take a shortcut, so the refusals
# are checked with an id present (the shortcut's way) and without.
@pytest.mark.parametrize("event_id", ["7", None])
@pytest.mark.parametrize(
    ("data", "event_type", "bad_id"),
    [
        ("lone surrogate \ud800", "text", None),
        ("x", "a\nb", None),
        ("x", "a\rdata: injected", None),
        ("x", "a\x00b", None),
        ("x", "", None),
        ("x", "text", "1\n2"),
        ("x", "text", "1\x002"),
        ("x", "text", "\udfff"),
    ],
)
def test_encode_fields_refuses_what_encode_event_refuses(
    data: str, event_type: str, bad_id: str | None, event_id: str | None
) -> None:
    with pytest.raises(LocalProtocolError):
        encode_fields(bad_id or event_id, event_type, data)
