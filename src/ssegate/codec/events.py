"""The things an event stream carries, as plain immutable values.

These are the nouns of the codec: the parser produces them and the encoder consumes them.
Nothing here does IO.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Event:
    """One dispatched server-sent event.

    ``data`` is the event's data exactly as a WHATWG parser hands it to ``MessageEvent.data``
    (line breaks are always ``\\n``: SSE cannot carry ``\\r``). ``event`` is the type, ``"message"``
    by default. ``id`` is the ``id:`` field to write (encoder) or the last event ID in force at
    dispatch (parser), matching ``MessageEvent.lastEventId``; ``None`` means "no id field" when
    encoding. ``retry`` is a reconnection time in milliseconds to announce with the event.
    """

    data: str = ""
    event: str = "message"
    id: str | None = None
    retry: int | None = None


@dataclass(frozen=True, slots=True)
class Comment:
    """A comment line (``:`` text): keep-alives and padding; never dispatched to listeners."""

    text: str = ""


@dataclass(frozen=True, slots=True)
class Retry:
    """A reconnection time (milliseconds) the stream asked for with a valid ``retry:`` field."""

    milliseconds: int
