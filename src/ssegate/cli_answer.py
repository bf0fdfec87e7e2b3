"""How ``ssegate ask`` shows a generation on a terminal.

stdout carries the answer's text and nothing else, so ``ssegate ask ... > answer.md`` keeps just the
answer. Everything around it goes to stderr, one labelled line (or run) each:

- ``thinking: ...`` the model's reasoning, streamed as it comes;
- ``tool call: NAME {arguments}`` once a call's arguments are complete (they stream as partial JSON
  that means nothing until then); a call the stream cut short is shown as ``(incomplete)``;
- ``note: ...`` a resume that had to start over (``reset``) and an answer that stopped for another
  reason than its end (``length``, ``content_filter``, ``cancelled``).

On a terminal the labels are coloured unless ``NO_COLOR`` is set (https://no-color.org).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, TextIO

# SGR sequences: dim for the model's asides, bold cyan for tool calls, yellow for notes.
_DIM = "\x1b[2m"
_TOOL = "\x1b[1;36m"
_NOTE = "\x1b[33m"
_RESET = "\x1b[0m"
# Finish reasons that mean "the answer is complete"; any other one is worth a note.
_COMPLETE = frozenset({"stop", "tool_calls", "end_turn", "tool_use"})
_FINISH_NOTES = {
    "length": "the answer stopped at the token limit (max_tokens)",
    "content_filter": "the provider's content filter stopped the answer",
    "refusal": "the model refused to answer",
}


@dataclass
class _ToolCall:
    name: str
    arguments: list[str] = field(default_factory=list)


class AnswerPrinter:
    """Writes a generation's events (type, decoded data) for a person: see the module's docstring."""

    def __init__(self, out: TextIO, side: TextIO, *, color: bool = False) -> None:
        self._out = out
        self._side = side
        self._color = color
        self._mid_line: set[int] = set()  # id() of the streams whose last write did not end a line
        self._thinking = False  # a "thinking: " run is open on the side stream
        self._calls: dict[str, _ToolCall] = {}

    def print(self, event_type: str, data: Any) -> None:
        fields = data if isinstance(data, dict) else {}
        delta = fields.get("delta")
        if event_type == "text" and isinstance(delta, str):
            self._write(self._out, delta, inline=True)
        elif event_type == "thinking" and isinstance(delta, str):
            if not self._thinking:
                self._write(self._side, self._style(_DIM, "thinking: "), inline=True)
                self._thinking = True
            self._write(self._side, self._style(_DIM, delta), inline=True)
        elif event_type == "tool_call":
            self._tool_call(fields)
        elif event_type == "reset":
            reason = fields.get("reason", "unknown")
            self._note(f"the stream started over from its earliest kept event ({reason}); text may repeat")
        elif event_type == "done":
            self._done(fields)

    def _tool_call(self, fields: dict[str, Any]) -> None:
        call_id = str(fields.get("id", ""))
        phase = fields.get("phase")
        if phase == "start":
            self._calls[call_id] = _ToolCall(str(fields.get("name", "?")))
        elif phase == "delta" and call_id in self._calls:
            self._calls[call_id].arguments.append(str(fields.get("delta", "")))
        elif phase == "end":
            call = self._calls.pop(call_id, None) or _ToolCall(str(fields.get("name", "?")))
            # The end event carries the whole call (name and parsed input): trust it over the pieces.
            if isinstance(fields.get("name"), str):
                call.name = fields["name"]
            self._show_call(call, complete=True, whole=fields.get("input"))

    def _show_call(self, call: _ToolCall, *, complete: bool, whole: Any = None) -> None:
        raw = "".join(call.arguments)
        try:
            parsed = whole if whole is not None else json.loads(raw or "{}")
            # Compact, key order kept: one readable line however the model spaced its JSON.
            arguments = json.dumps(parsed, ensure_ascii=False, separators=(", ", ": "))
        except ValueError:
            arguments = raw
        suffix = "" if complete else " (incomplete)"
        label = self._style(_TOOL, "tool call:")
        self._write(self._side, f"{label} {call.name} {arguments}{suffix}\n", inline=False)

    def _done(self, fields: dict[str, Any]) -> None:
        reason = fields.get("finish_reason")
        if not isinstance(reason, str) or reason in _COMPLETE:
            return
        if reason == "cancelled":
            why = fields.get("reason")
            self._note("the generation was cancelled" + (f" ({why})" if why else ""))
        else:
            self._note(_FINISH_NOTES.get(reason, f"the answer ended with finish_reason {reason!r}"))

    def _note(self, text: str) -> None:
        self._write(self._side, f"{self._style(_NOTE, 'note:')} {text}\n", inline=False)

    def _style(self, sgr: str, text: str) -> str:
        return f"{sgr}{text}{_RESET}" if self._color and text else text

    def _write(self, target: TextIO, text: str, *, inline: bool) -> None:
        # A run of text continues its own line; anything else starts on a fresh one, on both
        # streams, since on a terminal they share the screen.
        if target is self._out or not inline:
            self._thinking = False
        for stream in (self._out, self._side):
            if stream is not target or not inline:
                self._end_line(stream)
        target.write(text)
        target.flush()
        if inline and text:
            self._mid_line.add(id(target))

    def _end_line(self, stream: TextIO) -> None:
        if id(stream) in self._mid_line:
            stream.write("\n")
            stream.flush()
            self._mid_line.discard(id(stream))

    def finish(self) -> None:
        """The stream ended: show calls it cut short and end any open line."""
        for call in self._calls.values():
            self._show_call(call, complete=False)
        self._calls.clear()
        self._end_line(self._out)
        self._end_line(self._side)
