"""Events in, bytes out: the writing half of the codec.

What a WHATWG parser (a browser's ``EventSource``) rebuilds from our bytes must be exactly what we
were given, so the encoder's whole job is to leave the parser no room for another reading:

* Every line ending in ``data`` (``\\r\\n``, lone ``\\r``, ``\\n``) ends an SSE line, and the parser
  joins ``data:`` lines with ``\\n``. So each data line becomes its own ``data:`` field and the
  receiver sees the same text with every line break turned into ``\\n``: SSE cannot carry a ``\\r``.
  Other separators (U+2028, U+0085, ...) are not SSE line ends and pass through untouched.
* Values are written after ``": "``; the parser strips exactly one space after the colon, so a value
  that starts with spaces (or with ``:``) keeps them.
* An event type or id containing CR or LF would end its line early and let the rest be read as a
  new field (field injection); an id containing NUL is silently ignored by browsers. Both raise
  :class:`~ssegate.errors.LocalProtocolError` instead of writing something the receiver misreads.

This is on the hot path (every event of every stream passes here once), hence the plain bytes
operations, the fast path for single-line data and the cached ``event:`` lines.
"""

from __future__ import annotations

from functools import lru_cache

from ssegate.codec.events import Event
from ssegate.errors import LocalProtocolError

_DATA = b"data: "
_LINE_THEN_DATA = b"\ndata: "
_END_OF_EVENT = b"\n\n"


def encode_event(event: Event) -> bytes:
    """The bytes of one complete event, ending with the blank line that dispatches it.

    Fields are written in the order ``id``, ``event``, ``retry``, ``data``. The default type
    ``"message"`` writes no ``event:`` line. ``id=None`` writes no ``id:`` line; ``id=""`` writes an
    empty one, which resets the receiver's last event ID. Empty ``data`` still dispatches (as ``""``).

    Raises :class:`~ssegate.errors.LocalProtocolError` (a ``ValueError``) for an id or type holding
    CR, LF or NUL, an empty type, a retry that is not a non-negative ``int``, or data that is not
    encodable as UTF-8 (a lone surrogate).
    """
    head = _head(event.id, event.event)
    if event.retry is not None:
        head += encode_retry(event.retry)
    return head + _DATA + _data_body(event.data) + _END_OF_EVENT


def encode_fields(event_id: str | None, event_type: str, data: str) -> bytes:
    """``encode_event(Event(data, event_type, event_id))`` without building the ``Event``: the
    event log encodes every appended event with it (same rules, same errors)."""
    # The log's case, once per event of every stream: an id, one line of data. One formatting
    # operation instead of a function call and a concatenation per field (12.5k -> 5.3k
    # instructions per event, callgrind).
    if "\n" not in data and "\r" not in data:
        try:
            if event_id is None:  # the Redis log's: the id is added once Redis has given it
                return b"%bdata: %b\n\n" % (_type_line(event_type), data.encode())
            if "\n" not in event_id and "\r" not in event_id and "\0" not in event_id:
                return b"id: %b\n%bdata: %b\n\n" % (event_id.encode(), _type_line(event_type), data.encode())
        except UnicodeEncodeError:
            pass  # a lone surrogate: the general path below says where
    return _head(event_id, event_type) + _DATA + _data_body(data) + _END_OF_EVENT


def _head(event_id: str | None, event_type: str) -> bytes:
    """The ``id:`` and ``event:`` lines (none for no id and the default type)."""
    head = b"" if event_id is None else _id_line(event_id)
    return head + _type_line(event_type)


def _type_line(event_type: str) -> bytes:
    """The ``event:`` line, none for the default type."""
    return b"" if event_type == "message" else _event_line(event_type)


def encode_comment(text: str = "") -> bytes:
    """One comment line (``: text``), which every parser ignores: a keep-alive or padding.

    A comment is not an event, so it needs no blank line. Raises
    :class:`~ssegate.errors.LocalProtocolError` if ``text`` holds CR or LF (the rest would be read
    as fields).
    """
    if not text:
        return b":\n"
    if "\n" in text or "\r" in text:
        raise LocalProtocolError(f"a comment cannot contain CR or LF: {text!r}")
    return b": " + _utf8(text, "comment") + b"\n"


def encode_retry(milliseconds: int) -> bytes:
    """A ``retry:`` line asking the receiver to wait ``milliseconds`` before reconnecting.

    Needs no blank line: the field takes effect as soon as the line is read. Raises
    :class:`~ssegate.errors.LocalProtocolError` unless ``milliseconds`` is a non-negative ``int``
    (a parser ignores anything but ASCII digits, so ``-1`` or ``1.5`` would be silently lost).
    """
    if type(milliseconds) is not int or milliseconds < 0:
        raise LocalProtocolError(f"retry must be a non-negative int of milliseconds, got {milliseconds!r}")
    return b"retry: %d\n" % milliseconds


def _data_body(data: str) -> bytes:
    body = _utf8(data, "data")
    # UTF-8 never uses the bytes 0x0A / 0x0D inside a multi-byte character, so line breaks can be
    # found and rewritten on the encoded bytes directly.
    if b"\r" in body:
        body = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if b"\n" in body:
        body = body.replace(b"\n", _LINE_THEN_DATA)
    return body


def _id_line(event_id: str) -> bytes:
    if "\n" in event_id or "\r" in event_id or "\0" in event_id:
        raise LocalProtocolError(f"an event id cannot contain CR, LF or NUL: {event_id!r}")
    return b"id: " + _utf8(event_id, "id") + b"\n"


# A stream uses a handful of event types, so validating and encoding each once pays off.
@lru_cache(maxsize=256)
def _event_line(event_type: str) -> bytes:
    if not event_type:
        # An empty type is dispatched as "message"; refuse it rather than change it silently.
        raise LocalProtocolError('an event type cannot be empty (use "message", the default)')
    if "\n" in event_type or "\r" in event_type or "\0" in event_type:
        raise LocalProtocolError(f"an event type cannot contain CR, LF or NUL: {event_type!r}")
    return b"event: " + _utf8(event_type, "event type") + b"\n"


def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"{what} is not encodable as UTF-8: {exc.reason} at {exc.start}") from exc


# The comment ssegate writes to an idle stream so proxies and clients see it is alive.
KEEPALIVE = encode_comment("keep-alive")
