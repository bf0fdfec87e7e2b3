"""Properties: encode then parse gives the event back; how bytes are split never changes the result."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from ssegate.codec import Comment, Event, EventStreamParser, Retry, encode_comment, encode_event
from ssegate.codec.encoder import encode_fields

Parsed = Event | Comment | Retry

# Text without lone surrogates (UTF-8 cannot carry them), biased towards the characters that matter.
TRICKY = st.sampled_from(["\n", "\r", "\r\n", "\u2028", "\u0085", "\0", ":", " ", "\ufeff", "🦜", "é"])
TEXT = st.lists(st.one_of(TRICKY, st.text(st.characters(blacklist_categories=["Cs"]), max_size=5))).map(
    "".join
)
FIELD_TEXT = TEXT.map(lambda s: s.replace("\r", "").replace("\n", "").replace("\0", ""))
EVENTS = st.builds(
    Event,
    data=TEXT,
    event=st.one_of(st.just("message"), FIELD_TEXT.filter(bool)),
    id=st.one_of(st.none(), FIELD_TEXT),
    retry=st.one_of(st.none(), st.integers(min_value=0, max_value=10**12)),
)
STREAMS = st.lists(
    st.sampled_from([b"data", b"id", b"event", b"retry", b":", b" ", b"\r", b"\n", b"\r\n", b"1", b"x"])
    | st.binary(max_size=4)
    | st.sampled_from([b"\xef\xbb\xbf", b"\xf0\x9f\xa6\x9c", b"\xe2\x80\xa8", b"\xff", b"\0"])
).map(b"".join)


def _parse(chunks: list[bytes]) -> tuple[list[Parsed], str, int | None]:
    parser = EventStreamParser()
    out: list[Parsed] = []
    for chunk in chunks:
        out += parser.feed(chunk)
    out += parser.end()
    return out, parser.last_event_id, parser.retry


def _split(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(stream) + 1) for c in cuts})
    return [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]


def _as_received(sent: list[Event]) -> list[Event]:
    """What a WHATWG parser dispatches for ``sent``: line breaks become LF, the id in force carries."""
    received, last_id = [], ""
    for event in sent:
        last_id = last_id if event.id is None else event.id
        data = event.data.replace("\r\n", "\n").replace("\r", "\n")
        received.append(Event(data=data, event=event.event, id=last_id))
    return received


@given(st.lists(EVENTS, max_size=8))
def test_codec_round_trips_any_events(sent: list[Event]) -> None:
    out, _, retry = _parse([b"".join(encode_event(e) for e in sent)])
    assert [e for e in out if isinstance(e, Event)] == _as_received(sent)
    retries = [e.retry for e in sent if e.retry is not None]
    assert [r.milliseconds for r in out if isinstance(r, Retry)] == retries
    assert retry == (retries[-1] if retries else None)


@given(FIELD_TEXT)
def test_codec_round_trips_any_comment(text: str) -> None:
    assert _parse([encode_comment(text)])[0] == [Comment(text)]


@given(st.lists(EVENTS, max_size=4), st.lists(st.integers(min_value=0), max_size=12))
def test_codec_round_trips_events_split_anywhere(sent: list[Event], cuts: list[int]) -> None:
    stream = b"".join(encode_event(e) for e in sent)
    assert _parse(_split(stream, cuts)) == _parse([stream])


@given(STREAMS, st.lists(st.integers(min_value=0), max_size=12))
def test_parser_any_split_of_any_bytes_parses_like_the_whole(stream: bytes, cuts: list[int]) -> None:
    assert _parse(_split(stream, cuts)) == _parse([stream])


@given(STREAMS)
def test_parser_byte_by_byte_parses_like_the_whole(stream: bytes) -> None:
    assert _parse([stream[i : i + 1] for i in range(len(stream))]) == _parse([stream])


# Streams made mostly of the shape the parser reads in one match per event (an optional ``event:``
# line, one ``data:`` line, a blank line), mixed with the lines that must leave that shortcut: ids,
# comments, retries, second data lines, CRs, field names without a colon or without the space.
SIMPLE_SHAPED = st.lists(
    st.sampled_from(
        [
            b'event: delta\ndata: {"t": 1}\n\n',
            b"data: plain\n\n",
            b"event:x\ndata:y\n\n",
            b"event: \ndata:  two spaces\n\n",
            b"data\n\n",
            b"event\ndata: z\n\n",
            b"id: 7\n",
            b": comment\n",
            b"retry: 10\n",
            b"data: second line\n",
            b"event: a\nevent: b\ndata: c\n\n",
            b"data: cr\r\n\r\n",
            b"\r",
            b"\n",
            b"data: \xf0\x9f\xa6\x9c\n\n",
            b"\xef\xbb\xbf",
        ]
    )
).map(b"".join)


@given(SIMPLE_SHAPED, st.lists(st.integers(min_value=0), max_size=6))
def test_parser_whole_events_parse_like_byte_by_byte(stream: bytes, cuts: list[int]) -> None:
    # Byte by byte never completes an event within one chunk, so it is always the line-by-line path.
    assert _parse(_split(stream, cuts)) == _parse([stream[i : i + 1] for i in range(len(stream))])


@given(EVENTS)
def test_encode_fields_writes_what_encode_event_writes(event: Event) -> None:
    assert encode_fields(event.id, event.event, event.data) == encode_event(replace(event, retry=None))
