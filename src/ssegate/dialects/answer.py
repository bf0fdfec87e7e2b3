"""A whole answer folded from a generation's log events: what a non-streaming response reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str = ""

    def input(self) -> Any:
        """The arguments as JSON (``{}`` when empty; the raw text when they are not JSON)."""
        if not self.arguments.strip():
            return {}
        try:
            return orjson.loads(self.arguments)
        except orjson.JSONDecodeError:
            return self.arguments


@dataclass(slots=True)
class Block:
    """One run of the answer: ``text``, ``thinking``, ``redacted_thinking`` (``text`` is its
    data) or ``tool_use`` (then ``tool`` is set)."""

    kind: str
    text: str = ""
    tool: ToolCall | None = None
    # A thinking block's provider signature: it ends the block (the next thinking is another one).
    signature: str = ""


@dataclass(slots=True)
class Answer:
    model: str = ""
    blocks: list[Block] = field(default_factory=list)
    input_tokens: int | None = None
    output_tokens: int | None = None
    finish_reason: str | None = None
    # The terminal event: ``done`` (finish_reason set) or ``error`` (its data).
    error: dict[str, Any] | None = None
    ended: bool = False
    _tools: dict[str, ToolCall] = field(default_factory=dict)

    def add(self, event: str, data: dict[str, Any]) -> None:
        if event == "thinking" and "delta" not in data:
            self._thinking_end(data)
        elif event == "text" or event == "thinking":
            kind = "text" if event == "text" else "thinking"
            if not self.blocks or self.blocks[-1].kind != kind or self.blocks[-1].signature:
                self.blocks.append(Block(kind))
            self.blocks[-1].text += str(data.get("delta", ""))
        elif event == "tool_call":
            self._tool_call(data)
        elif event == "start" or (event == "status" and data.get("stage") == "model"):
            self.model = str(data.get("model") or self.model)
        elif event == "usage":
            self._usage(data)
        elif event == "done":
            self.ended = True
            self.finish_reason = str(data.get("finish_reason") or "stop")
            if data.get("finish_reason") == "cancelled":
                self.error = {"code": "cancelled", "message": _cancelled_message(data), "retryable": False}
            if isinstance(data.get("usage"), dict):
                self._usage(data["usage"])
        elif event == "error":
            self.ended = True
            self.error = data

    def _thinking_end(self, data: dict[str, Any]) -> None:
        if "redacted" in data:
            self.blocks.append(Block("redacted_thinking", str(data["redacted"])))
        elif "signature" in data:
            last = self.blocks[-1] if self.blocks else None
            if last is None or last.kind != "thinking" or last.signature:
                last = Block("thinking")
                self.blocks.append(last)
            last.signature = str(data["signature"])

    def _tool_call(self, data: dict[str, Any]) -> None:
        phase, tool_id = data.get("phase"), str(data.get("id", ""))
        if phase == "start":
            tool = self._tools[tool_id] = ToolCall(tool_id, str(data.get("name", "")))
            self.blocks.append(Block("tool_use", tool=tool))
        elif phase == "delta" and tool_id in self._tools:
            self._tools[tool_id].arguments += str(data.get("delta", ""))

    def _usage(self, data: dict[str, Any]) -> None:
        if isinstance(data.get("input_tokens"), int):
            self.input_tokens = data["input_tokens"]
        if isinstance(data.get("output_tokens"), int):
            self.output_tokens = data["output_tokens"]

    @property
    def text(self) -> str:
        return "".join(b.text for b in self.blocks if b.kind == "text")

    @property
    def thinking(self) -> str:
        return "".join(b.text for b in self.blocks if b.kind == "thinking")

    @property
    def tool_calls(self) -> list[ToolCall]:
        return [b.tool for b in self.blocks if b.tool is not None]


def _cancelled_message(data: dict[str, Any]) -> str:
    reason = data.get("reason")
    return f"the generation was cancelled ({reason})" if reason else "the generation was cancelled"


def cancelled_message(data: dict[str, Any]) -> str:
    """What a dialect says when a generation ended ``done {finish_reason: cancelled}``."""
    return _cancelled_message(data)
