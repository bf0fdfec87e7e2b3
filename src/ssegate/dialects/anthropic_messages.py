"""The Anthropic Messages dialect: ``POST /v1/messages`` requests in, ``message`` objects and the
Messages streaming events out (wire facts from Anthropic's "Streaming Messages" documentation).

Streaming: named events whose JSON ``type`` repeats the name: ``message_start`` (the message with
empty content and the usage known so far), ``ping``, then per content block
``content_block_start`` / ``content_block_delta`` (``text_delta``, ``thinking_delta``,
``input_json_delta``) / ``content_block_stop``, then ``message_delta`` (``stop_reason`` and the
cumulative usage) and ``message_stop``. A failure after the head is an ``error`` event.

``message_start`` is written when the first content (or the end) arrives rather than at the log's
``start``: by then the provider has usually said which model answers and how many input tokens
the prompt took, which the message reports from its start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ssegate.dialects.answer import Answer, cancelled_message
from ssegate.dialects.base import WireEvent, dumps
from ssegate.dialects.request import (
    RequestShape,
    gateway_request,
    invalid,
    join_text_parts,
    optional,
    refuse_unsupported,
    unknown_fields,
)
from ssegate.providers.base import GenerationRequest

NAME = "anthropic_messages"
ID_PREFIX = "msg_"

_FIELDS = {
    "model",
    "messages",
    "max_tokens",
    "system",
    "stream",
    "provider",
    "tools",
    "tool_choice",
    "temperature",
    "top_p",
    "stop_sequences",
    "thinking",
    "metadata",
}
_NEVER = {"top_k", "service_tier", "container", "mcp_servers", "context_management", "inference_geo"}
# Hints for the vendor's prompt cache and citations: they change nothing in the answer.
_HINTS = ("cache_control", "citations")

# The gateway's finish reasons in Anthropic's words.
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "tool_use": "tool_use",
    "stop_sequence": "stop_sequence",
    "content_filter": "refusal",
}
# ssegate's error codes as Anthropic error types.
_ERROR_TYPES = {
    "rate_limited": "rate_limit_error",
    "upstream_overloaded": "overloaded_error",
    "upstream_bad_request": "invalid_request_error",
}
_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "invalid_request_error",
    410: "not_found_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


@dataclass(frozen=True, slots=True)
class MessagesRequest:
    generation: GenerationRequest
    stream: bool
    provider: str | None


def parse_request(body: Any, *, max_tokens_limit: int) -> MessagesRequest:
    """A ``POST /v1/messages`` body as the gateway's request (``ssegate.request``, which validates
    it); 400 naming what cannot be honoured."""
    if not isinstance(body, dict):
        raise invalid("body", "the body must be a JSON object")
    shape = RequestShape(known=_FIELDS, never=_NEVER)
    unknown_fields(body, shape)
    refuse_unsupported(body, shape)
    native: dict[str, Any] = {"messages": _messages(body.get("messages"))}
    system = body.get("system")
    if system is not None:
        native["system"] = join_text_parts(_without_hints(system), "system", part_type="text")
    for name in ("model", "max_tokens", "temperature", "top_p", "metadata", "thinking"):
        if body.get(name) is not None:
            native[name] = body[name]
    if body.get("stop_sequences") is not None:
        native["stop"] = body["stop_sequences"]
    if body.get("tools") is not None:
        native["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        native["tool_choice"] = _tool_choice(body["tool_choice"])
    generation = gateway_request(native, max_tokens_limit=max_tokens_limit)
    stream = optional(body, "stream", bool) or False
    return MessagesRequest(generation, stream, optional(body, "provider", str) or None)


def _without_hints(value: Any) -> Any:
    """``value`` with the cache and citation hints taken out of every block, and fields that are
    null (what the SDK's own block objects carry for the fields they do not use)."""
    if isinstance(value, list):
        return [_without_hints(item) for item in value]
    if isinstance(value, dict):
        return {k: _without_hints(v) for k, v in value.items() if k not in _HINTS and v is not None}
    return value


def _messages(messages: Any) -> Any:
    """Anthropic's turns in the gateway's: tool results, which Anthropic puts in a user turn, become
    a tool message (before the rest of that turn); thinking blocks sent back go on with their
    signature (what a tool loop with thinking on needs), those without one are left out (the
    provider would refuse them: they came from a provider that signs nothing)."""
    if not isinstance(messages, list):
        return messages
    out: list[Any] = []
    for index, item in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("content"), list):
            out.append(item)
            continue
        role = item.get("role")
        blocks = _without_hints(item["content"])
        for b, block in enumerate(blocks):
            kind = block.get("type") if isinstance(block, dict) else None
            if kind in ("document", "search_result", "server_tool_use", "container_upload"):
                raise invalid(f"{where}.content[{b}].type", f"{kind} blocks are not supported")
        if role == "user":
            results = [blk for blk in blocks if isinstance(blk, dict) and blk.get("type") == "tool_result"]
            rest = [blk for blk in blocks if not (isinstance(blk, dict) and blk.get("type") == "tool_result")]
            if results:
                out.append({"role": "tool", "content": results})
            if rest or not results:
                out.append({"role": "user", "content": rest})
        elif role == "assistant":
            kept = [
                blk
                for blk in blocks
                if not (isinstance(blk, dict) and blk.get("type") == "thinking" and not blk.get("signature"))
            ]
            if kept:
                out.append({"role": "assistant", "content": kept})
        else:
            out.append({**item, "content": blocks})
    return out


def _tools(tools: Any) -> Any:
    if not isinstance(tools, list):
        return tools
    out: list[Any] = []
    for index, tool in enumerate(_without_hints(tools)):
        if isinstance(tool, dict) and tool.get("type", "custom") != "custom":
            raise invalid(f"tools[{index}].type", f"server tools ({tool.get('type')}) are not supported")
        out.append({k: v for k, v in tool.items() if k != "type"} if isinstance(tool, dict) else tool)
    return out


def _tool_choice(choice: Any) -> Any:
    if not isinstance(choice, dict):
        return choice
    if choice.get("disable_parallel_tool_use"):
        raise invalid("tool_choice.disable_parallel_tool_use", "disable_parallel_tool_use is not supported")
    kind = choice.get("type")
    if kind == "tool":
        return {"type": "tool", "name": choice.get("name")}
    return kind


def message_id(generation_id: str) -> str:
    return ID_PREFIX + generation_id


def _event(name: str, body: dict[str, Any]) -> WireEvent:
    return (name, dumps({"type": name, **body}))


class EventEncoder:
    """Log events -> Messages streaming events."""

    __slots__ = ("_blocks", "_id", "_input", "_model", "_open", "_output", "_started", "_tools")

    def __init__(self, generation_id: str) -> None:
        self._id = message_id(generation_id)
        self._model = ""
        self._input: int | None = None
        self._output: int | None = None
        self._started = False
        self._blocks = 0  # blocks started so far: the next one's index
        self._open: tuple[str, int] | None = None  # the open text/thinking block: (kind, index)
        self._tools: dict[str, int] = {}  # open tool_use blocks: tool call id -> index

    def encode(self, event: str, data: dict[str, Any]) -> list[WireEvent]:
        if event == "thinking" and "delta" not in data:
            return self._thinking_end(data)
        if event == "text" or event == "thinking":
            return self._delta(event, str(data.get("delta", "")))
        if event == "tool_call":
            return self._tool_call(data)
        if event == "start":
            self._model = str(data.get("model") or "")
            return []
        if event == "status" and data.get("stage") == "model":
            self._model = str(data.get("model") or self._model)
            return []
        if event == "usage":
            self._usage(data)
            return []
        if event == "done":
            return self._done(data)
        if event == "error":
            return [*self._close_all(), error_event(data)]
        return []

    def _usage(self, data: dict[str, Any]) -> None:
        if isinstance(data.get("input_tokens"), int):
            self._input = data["input_tokens"]
        if isinstance(data.get("output_tokens"), int):
            self._output = data["output_tokens"]

    def _start(self) -> list[WireEvent]:
        if self._started:
            return []
        self._started = True
        started: dict[str, Any] = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self._input or 0, "output_tokens": self._output or 0},
        }
        return [_event("message_start", {"message": started}), _event("ping", {})]

    def _delta(self, kind: str, text: str) -> list[WireEvent]:
        events = self._start()
        if self._open is None or self._open[0] != kind:
            events += self._close_open()
            index = self._new_block()
            self._open = (kind, index)
            block = (
                {"type": "text", "text": ""}
                if kind == "text"
                else {"type": "thinking", "thinking": "", "signature": ""}
            )
            events.append(_event("content_block_start", {"index": index, "content_block": block}))
        delta = (
            {"type": "text_delta", "text": text}
            if kind == "text"
            else {"type": "thinking_delta", "thinking": text}
        )
        events.append(_event("content_block_delta", {"index": self._open[1], "delta": delta}))
        return events

    def _thinking_end(self, data: dict[str, Any]) -> list[WireEvent]:
        """The provider's signature closes its thinking block (``signature_delta``, then
        ``content_block_stop``, as Anthropic sends them); a redacted block is one whole block. A
        client sends both back, as they came, to continue a tool loop with thinking on."""
        events = self._start()
        if "redacted" in data:
            events += self._close_open()
            index = self._new_block()
            block = {"type": "redacted_thinking", "data": str(data["redacted"])}
            events.append(_event("content_block_start", {"index": index, "content_block": block}))
            events.append(_event("content_block_stop", {"index": index}))
            return events
        if "signature" not in data:
            return events
        if self._open is None or self._open[0] != "thinking":
            events += self._delta("thinking", "")  # a signed block whose thinking was empty
        assert self._open is not None
        delta = {"type": "signature_delta", "signature": str(data["signature"])}
        events.append(_event("content_block_delta", {"index": self._open[1], "delta": delta}))
        return events + self._close_open()

    def _tool_call(self, data: dict[str, Any]) -> list[WireEvent]:
        phase, tool_id = data.get("phase"), str(data.get("id", ""))
        if phase == "start":
            events = self._start() + self._close_open()
            index = self._tools[tool_id] = self._new_block()
            block = {"type": "tool_use", "id": tool_id, "name": data.get("name", ""), "input": {}}
            events.append(_event("content_block_start", {"index": index, "content_block": block}))
            return events
        open_index = self._tools.get(tool_id)
        if open_index is None:
            return []
        if phase == "delta":
            delta = {"type": "input_json_delta", "partial_json": data.get("delta", "")}
            return [_event("content_block_delta", {"index": open_index, "delta": delta})]
        if phase == "end":
            del self._tools[tool_id]
            return [_event("content_block_stop", {"index": open_index})]
        return []

    def _new_block(self) -> int:
        index = self._blocks
        self._blocks += 1
        return index

    def _close_open(self) -> list[WireEvent]:
        if self._open is None:
            return []
        index = self._open[1]
        self._open = None
        return [_event("content_block_stop", {"index": index})]

    def _close_all(self) -> list[WireEvent]:
        events = self._close_open()
        for index in sorted(self._tools.values()):
            events.append(_event("content_block_stop", {"index": index}))
        self._tools.clear()
        return events

    def _done(self, data: dict[str, Any]) -> list[WireEvent]:
        if data.get("finish_reason") == "cancelled":
            return [
                *self._close_all(),
                error_event({"code": "cancelled", "message": cancelled_message(data)}),
            ]
        if isinstance(data.get("usage"), dict):
            self._usage(data["usage"])
        events = self._start() + self._close_all()
        delta = {
            "stop_reason": STOP_REASONS.get(str(data.get("finish_reason")), "end_turn"),
            "stop_sequence": None,
        }
        usage: dict[str, int] = {"output_tokens": self._output or 0}
        if self._input is not None:
            usage["input_tokens"] = self._input
        events.append(_event("message_delta", {"delta": delta, "usage": usage}))
        events.append(_event("message_stop", {}))
        return events


def error_event(data: dict[str, Any]) -> WireEvent:
    code = str(data.get("code") or "upstream_error")
    error = {
        "type": _ERROR_TYPES.get(code, "api_error"),
        "message": str(data.get("message") or code),
        "code": code,
    }
    return _event("error", {"error": error})


def message(generation_id: str, answer: Answer) -> dict[str, Any]:
    """The non-streaming answer: one ``message`` object."""
    content: list[dict[str, Any]] = []
    for block in answer.blocks:
        if block.kind == "text":
            content.append({"type": "text", "text": block.text})
        elif block.kind == "thinking":
            content.append({"type": "thinking", "thinking": block.text, "signature": block.signature})
        elif block.kind == "redacted_thinking":
            content.append({"type": "redacted_thinking", "data": block.text})
        elif block.tool is not None:
            tool_input = block.tool.input()
            content.append(
                {
                    "type": "tool_use",
                    "id": block.tool.id,
                    "name": block.tool.name,
                    "input": tool_input if isinstance(tool_input, dict) else {},
                }
            )
    return {
        "id": message_id(generation_id),
        "type": "message",
        "role": "assistant",
        "model": answer.model,
        "content": content,
        "stop_reason": STOP_REASONS.get(answer.finish_reason or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": {"input_tokens": answer.input_tokens or 0, "output_tokens": answer.output_tokens or 0},
    }


def error_body(status: int, code: str, message: str, field: str | None) -> dict[str, Any]:
    """An error answer in Anthropic's shape (ssegate's ``code`` and ``field`` alongside)."""
    kind = _STATUS_TYPES.get(status, "api_error")
    error: dict[str, Any] = {"type": kind, "message": message, "code": code}
    if field is not None:
        error["field"] = field
    return {"type": "error", "error": error}


def error_status(code: str) -> int:
    """A failed generation's status when not streamed (Anthropic says 529 for overloaded)."""
    return {
        "rate_limited": 429,
        "upstream_overloaded": 529,
        "upstream_bad_request": 400,
        "upstream_timeout": 504,
        "cancelled": 409,
        "internal": 500,
    }.get(code, 502)
