"""Bytes in, events out: the WHATWG HTML "interpreting an event stream" algorithm, incrementally.

The steps below follow the HTML standard (section "Server-sent events", parsing and dispatch) and
are quoted in plain words where they are implemented. Browsers are the reference: for every stream
of bytes, split into chunks however the network pleases, we dispatch what ``EventSource`` would.

What we add to the spec, and why:

* Comments are returned as :class:`Comment` (the spec ignores them) so a client can tell a
  keep-alive from silence. ``Comment.text`` is the line after the colon with one leading space
  removed, the same rule as field values.
* Each valid ``retry:`` field is returned as :class:`Retry` (browsers apply it silently).
* A size guard: a peer that never ends a line, or never ends an event, would make us buffer without
  bound. Beyond ``max_event_size`` characters we raise :class:`RemoteProtocolError`. After that error
  the parser's state is undefined: drop the connection.
"""

from __future__ import annotations

import codecs
import re

from ssegate.codec.events import Comment, Event, Retry
from ssegate.errors import RemoteProtocolError

# 16 Mi characters: far above any real event (an LLM token event is ~100 bytes, a large tool-call
# payload a few hundred KiB) yet small enough that a runaway or hostile stream is cut off before it
# costs real memory. Counted in decoded characters, i.e. roughly bytes for ASCII-heavy payloads.
MAX_EVENT_SIZE = 16 * 1024 * 1024

_BOM = "\ufeff"

Parsed = Event | Comment | Retry

# The shape nearly every event of an LLM stream has: an optional ``event:`` line, one ``data:``
# line, a blank line. A chunk made only of such events, starting at an event boundary, is parsed by
# one match per event instead of a Python call per line; the result is what the line-by-line
# algorithm below gives for that text (no id, retry or comment lines, no CR: those go line by line).
_SIMPLE_EVENT = re.compile(r"(?:event: ?([^\n]*)\n)?data: ?([^\n]*)\n\n")


class EventStreamParser:
    """Incremental WHATWG event-stream parser: ``feed(bytes)`` returns what became complete.

    ``last_event_id`` is the event source's "last event ID string": what ``MessageEvent.lastEventId``
    shows and what a reconnecting client sends as ``Last-Event-ID``. Like the spec, it is updated
    when an event is dispatched (also by a blank line with no data), not when the ``id:`` line is
    read. ``retry`` is the last valid reconnection time seen, in milliseconds, or ``None``.

    After :meth:`end` the same parser can read the next connection's stream: the buffers, the
    decoder and the byte-order-mark check start afresh, while ``last_event_id`` and ``retry`` carry
    over, as they do for a reconnecting ``EventSource``. Pass ``last_event_id`` to resume a stream
    with a new parser.
    """

    def __init__(self, *, last_event_id: str = "", max_event_size: int = MAX_EVENT_SIZE) -> None:
        self.last_event_id: str = last_event_id
        self.retry: int | None = None
        self.max_event_size = max_event_size
        self._start_stream()

    def _start_stream(self) -> None:
        # Invalid UTF-8 becomes U+FFFD, as the spec's "UTF-8 decode" does; the incremental decoder
        # holds back a multi-byte character split across chunks until it is complete.
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._at_stream_start = True
        self._line_fragments: list[str] = []
        self._line_size = 0
        self._after_cr = False
        self._data_lines: list[str] = []
        self._data_size = 0
        self._event_type = ""
        # Browsers seed a new connection's buffer with the id already in force (the spec text
        # would start it empty; Chromium, Firefox and WebKit do not, and neither do we).
        self._id_buffer = self.last_event_id

    def feed(self, data: bytes) -> list[Parsed]:
        """Parse the next chunk of the stream; return the events, comments and retries it completed."""
        return self._feed_text(self._decoder.decode(data))

    def at_event_boundary(self) -> bool:
        """Whether the next byte starts a new event: no line, field, id or partial character is
        pending, and the stream's start (its byte-order mark) is behind. A caller that recognises a
        whole event by its bytes may then read it without :meth:`feed`: the parser's state after
        that event would be this same state."""
        return (
            not self._at_stream_start
            and not self._line_fragments
            and not self._data_lines
            and not self._event_type
            and not self._after_cr
            and self._id_buffer == self.last_event_id
            and not self._decoder.getstate()[0]
        )

    def end(self) -> list[Parsed]:
        """The stream ended: flush the decoder; an unterminated event is discarded, as the spec says.

        "Once the end of the file is reached, any pending data must be discarded": a last line with
        no line end is never interpreted, and fields read since the last blank line dispatch nothing.
        """
        self._feed_text(self._decoder.decode(b"", final=True))
        self._start_stream()
        return []

    def _feed_text(self, text: str) -> list[Parsed]:
        if not text:
            return []
        if self._at_stream_start:
            # "One leading U+FEFF BYTE ORDER MARK character must be ignored if any are present."
            self._at_stream_start = False
            if text.startswith(_BOM):
                text = text[1:]
        if self._after_cr:
            self._after_cr = False
            if text.startswith("\n"):
                # A CR ending the previous chunk already ended its line; this LF completes a CRLF.
                text = text[1:]
        if (
            not self._line_fragments
            and not self._data_lines
            and not self._event_type
            and self._id_buffer == self.last_event_id
            and "\r" not in text
            and len(text) <= self.max_event_size
        ):
            out, text = self._simple_events(text)
            if not text:
                return out
            return out + self._feed_lines(text)
        return self._feed_lines(text)

    def _simple_events(self, text: str) -> tuple[list[Parsed], str]:
        """The events at the start of ``text`` that have the simple shape, and the rest of it.

        Only called at an event boundary with no id pending, so each is dispatched exactly as the
        line-by-line path would: that type (or ``message``), that data, the id already in force.
        """
        out: list[Parsed] = []
        match = _SIMPLE_EVENT.match
        position = 0
        event_id = self.last_event_id
        while (found := match(text, position)) is not None:
            event_type, data = found.groups()
            out.append(Event(data=data, event=event_type or "message", id=event_id))
            position = found.end()
        return out, text[position:]

    def _feed_lines(self, text: str) -> list[Parsed]:
        if "\r" in text:
            self._after_cr = text.endswith("\r")
            # "Lines must be separated by either a CRLF pair, a single LF, or a single CR."
            # Only these three: str.splitlines() would also split on U+2028, U+0085 and others.
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        lines = text.split("\n")
        unfinished = lines.pop()
        out: list[Parsed] = []
        if lines:
            if self._line_fragments:
                lines[0] = "".join(self._line_fragments) + lines[0]
                self._line_fragments.clear()
                self._line_size = 0
            for line in lines:
                self._process_line(line, out)
        if unfinished:
            # Keep fragments in a list: a long line arriving in many chunks stays O(N), not O(N²).
            self._line_size += len(unfinished)
            if self._line_size > self.max_event_size:
                raise RemoteProtocolError(f"an event stream line exceeds {self.max_event_size} characters")
            self._line_fragments.append(unfinished)
        return out

    def _process_line(self, line: str, out: list[Parsed]) -> None:
        # "If the line is empty (a blank line): dispatch the event."
        if not line:
            self._dispatch(out)
            return
        colon = line.find(":")
        if colon == 0:
            # "If the line starts with a U+003A COLON character (:): ignore the line." (We report it.)
            out.append(Comment(line[2:] if line.startswith(" ", 1) else line[1:]))
            return
        if colon < 0:
            # "Otherwise, the string is not empty but does not contain a colon: process the field
            # using the whole line as the field name, and the empty string as the field value."
            self._process_field(line, "", out)
            return
        # "Collect the characters before the first colon as the field name, the characters after
        # it as the value; if the value starts with a U+0020 SPACE character, remove it."
        value = line[colon + 2 :] if line.startswith(" ", colon + 1) else line[colon + 1 :]
        self._process_field(line[:colon], value, out)

    def _process_field(self, name: str, value: str, out: list[Parsed]) -> None:
        if name == "data":
            # "Append the field value to the data buffer, then append a single U+000A LINE FEED."
            # We keep the lines in a list and join them with LF at dispatch: the same string.
            self._data_size += len(value) + 1
            if self._data_size > self.max_event_size:
                raise RemoteProtocolError(f"an event's data exceeds {self.max_event_size} characters")
            self._data_lines.append(value)
        elif name == "event":
            # "Set the event type buffer to the field value."
            self._event_type = value
        elif name == "id":
            # "If the field value does not contain U+0000 NULL, set the last event ID buffer to the
            # field value. Otherwise, ignore the field."
            if "\0" not in value:
                self._id_buffer = value
        elif name == "retry" and value.isascii() and value.isdigit():
            # "If the field value consists of only ASCII digits, interpret it as a base-ten integer
            # and set the reconnection time." isdigit() alone would accept other scripts' digits,
            # int() alone "+1_0". An empty value has no digits ("".isdigit() is False) and is
            # ignored, as browsers do.
            self._set_retry(value, out)
        # "Otherwise: the field is ignored."

    def _set_retry(self, digits: str, out: list[Parsed]) -> None:
        try:
            milliseconds = int(digits)
        except ValueError:
            # Python refuses to convert more than 4300 digits (a guard against slow conversion);
            # such a delay means nothing, so the field is dropped rather than the connection.
            return
        self.retry = milliseconds
        out.append(Retry(milliseconds))

    def _dispatch(self, out: list[Parsed]) -> None:
        # "1. Set the last event ID string of the event source to the last event ID buffer."
        self.last_event_id = self._id_buffer
        # "2. If the data buffer is an empty string, set the data buffer and the event type buffer
        # to the empty string and return."
        if not self._data_lines:
            self._event_type = ""
            return
        # "3. If the data buffer's last character is a U+000A LINE FEED, remove it." Joining the
        # lines with LF builds the buffer without that final LF.
        data = "\n".join(self._data_lines)
        # "5. If the event type buffer has a value other than the empty string, use it as the
        # type; otherwise the type is message."
        out.append(Event(data=data, event=self._event_type or "message", id=self.last_event_id))
        # "6. Set the data buffer and the event type buffer to the empty string."
        self._data_lines = []
        self._data_size = 0
        self._event_type = ""
