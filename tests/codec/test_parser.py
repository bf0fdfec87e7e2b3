"""Parser behaviour beyond the shared vectors: comments, retries, reuse, resume and the size guard."""

from __future__ import annotations

import pytest

from ssegate.codec import Comment, Event, EventStreamParser, Retry
from ssegate.codec.parser import MAX_EVENT_SIZE
from ssegate.errors import RemoteProtocolError


@pytest.mark.parametrize(
    ("line", "text"),
    [(b":\n", ""), (b": ping\n", "ping"), (b":ping\n", "ping"), (b":  two\n", " two"), (b":a:b\n", "a:b")],
)
def test_parser_reports_comments_with_one_space_stripped(line: bytes, text: str) -> None:
    assert EventStreamParser().feed(line) == [Comment(text)]


def test_parser_reports_items_in_stream_order() -> None:
    parser = EventStreamParser()
    out = parser.feed(b": hi\nretry: 5\nid: 1\ndata: a\n\nretry: 9\n")
    assert out == [Comment("hi"), Retry(5), Event("a", id="1"), Retry(9)]
    assert parser.retry == 9


def test_parser_last_event_id_changes_at_dispatch_not_at_the_id_line() -> None:
    parser = EventStreamParser()
    parser.feed(b"id: 3\n")
    assert parser.last_event_id == ""
    parser.feed(b"\n")
    assert parser.last_event_id == "3"


def test_parser_resumes_with_a_given_last_event_id() -> None:
    parser = EventStreamParser(last_event_id="41")
    assert parser.feed(b"data: x\n\n") == [Event("x", id="41")]


def test_parser_after_end_reads_a_new_stream_keeping_id_and_retry() -> None:
    parser = EventStreamParser()
    parser.feed(b"retry: 70\nid: 1\ndata: a\n\nid: 2\ndata: unterminated")
    assert parser.end() == []
    # A new connection: its BOM is stripped again, the half event is gone, the dispatched id stays.
    assert parser.feed(b"\xef\xbb\xbfdata: b\n\n") == [Event("b", id="1")]
    assert parser.retry == 70


def test_parser_end_drops_a_pending_cr_state() -> None:
    parser = EventStreamParser()
    parser.feed(b"data: a\r")
    parser.end()
    # On the new stream a leading LF is a blank line of its own, not the end of the old CRLF.
    assert parser.feed(b"data: b\n\n") == [Event("b", id="")]


def test_parser_long_line_in_many_chunks_is_one_value() -> None:
    parser = EventStreamParser()
    out = [parser.feed(b"data: ")]
    out += [parser.feed(b"y" * 1000) for _ in range(2000)]
    out.append(parser.feed(b"\n\n"))
    assert [item for chunk in out for item in chunk] == [Event("y" * 2_000_000, id="")]


def test_parser_refuses_a_line_longer_than_the_limit() -> None:
    parser = EventStreamParser(max_event_size=100)
    parser.feed(b"data: " + b"z" * 90)
    with pytest.raises(RemoteProtocolError, match="line exceeds 100"):
        parser.feed(b"z" * 20)


def test_parser_refuses_event_data_larger_than_the_limit() -> None:
    parser = EventStreamParser(max_event_size=100)
    with pytest.raises(RemoteProtocolError, match="data exceeds 100"):
        parser.feed(b"data: " + b"z" * 60 + b"\n" + b"data: " + b"z" * 60 + b"\n")


def test_parser_limit_resets_after_each_event() -> None:
    parser = EventStreamParser(max_event_size=100)
    events = [parser.feed(b"data: " + b"z" * 60 + b"\n\n") for _ in range(5)]
    assert all(out == [Event("z" * 60, id="")] for out in events)


def test_parser_default_limit_is_generous() -> None:
    assert MAX_EVENT_SIZE == 16 * 1024 * 1024


def test_parser_ignores_a_retry_too_long_to_convert() -> None:
    parser = EventStreamParser()
    assert parser.feed(b"retry: 5\nretry: " + b"9" * 5000 + b"\ndata: x\n\n") == [Retry(5), Event("x", id="")]
    assert parser.retry == 5


def test_parser_stands_at_an_event_boundary_only_with_nothing_pending() -> None:
    parser = EventStreamParser()
    assert not parser.at_event_boundary()  # the stream's byte-order mark may still come
    parser.feed(b"data: a\n\n")
    assert parser.at_event_boundary()
    parser.feed(b": keep-alive\nretry: 5\n")  # complete lines that start no event
    assert parser.at_event_boundary()
    parser.end()
    assert not parser.at_event_boundary()  # a new stream: its start is ahead again


@pytest.mark.parametrize(
    "pending",
    [b"da", b"data: b\n", b"event: x\n", b"id: 7\n", b"\r", b"\xc3"],
    ids=["partial line", "data line", "event type", "id", "CR that an LF may end", "half a character"],
)
def test_parser_is_not_at_an_event_boundary_with_anything_pending(pending: bytes) -> None:
    parser = EventStreamParser()
    parser.feed(b"data: a\n\n")
    parser.feed(pending)
    assert not parser.at_event_boundary()
