"""The shared vectors, fed as given, all at once, and one byte at a time."""

from __future__ import annotations

import pytest

from ssegate.codec import Event, EventStreamParser
from tests.codec.vectors import VECTORS_FILE, ExpectedEvent, Vector, load_vectors

VECTORS = load_vectors()


def _parse(chunks: list[bytes]) -> tuple[list[ExpectedEvent], EventStreamParser]:
    parser = EventStreamParser()
    out = []
    for chunk in chunks:
        out += parser.feed(chunk)
    out += parser.end()
    events = [ExpectedEvent(e.event, e.data, e.id or "") for e in out if isinstance(e, Event)]
    return events, parser


def _check(vector: Vector, chunks: list[bytes]) -> None:
    events, parser = _parse(chunks)
    assert events == vector.events
    assert parser.retry == vector.retry
    assert parser.last_event_id == vector.final_last_event_id


def test_vectors_file_has_an_about_line_and_enough_cases() -> None:
    assert VECTORS_FILE.read_text().count('"name"') == len(VECTORS) >= 50


@pytest.mark.parametrize("vector", VECTORS, ids=[v.name for v in VECTORS])
def test_parser_vector_in_given_chunks(vector: Vector) -> None:
    _check(vector, vector.chunks)


@pytest.mark.parametrize("vector", VECTORS, ids=[v.name for v in VECTORS])
def test_parser_vector_in_one_chunk(vector: Vector) -> None:
    _check(vector, [vector.stream])


@pytest.mark.parametrize("vector", VECTORS, ids=[v.name for v in VECTORS])
def test_parser_vector_byte_by_byte(vector: Vector) -> None:
    stream = vector.stream
    _check(vector, [stream[i : i + 1] for i in range(len(stream))])
