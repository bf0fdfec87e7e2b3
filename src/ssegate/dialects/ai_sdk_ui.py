"""The AI SDK's UI message stream, v1 (``x-vercel-ai-ui-message-stream: v1``): what ``useChat`` and
``DefaultChatTransport`` from the npm ``ai`` package send and read (tested against ``ai`` 6.0.333).

Requests: ``{id, messages: UIMessage[], trigger, messageId}``; a UIMessage is ``{id, role,
parts}`` with parts such as ``{type: "text", text}``. Responses: unnamed ``data:`` events whose
JSON ``type`` is one of ``start``, ``start-step``, ``text-start``/``-delta``/``-end``,
``reasoning-start``/``-delta``/``-end``, ``tool-input-start``/``-delta``,
``tool-input-available`` (or ``tool-input-error``), ``finish-step``, ``finish``, ``abort``,
``error``, then ``data: [DONE]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from ssegate.dialects.answer import cancelled_message
from ssegate.dialects.base import DONE, WireEvent, dumps
from ssegate.dialects.request import gateway_request, invalid, optional
from ssegate.providers.base import GenerationRequest

NAME = "ai_sdk_ui"
HEADER = ("x-vercel-ai-ui-message-stream", "v1")
MAX_CHAT_ID = 200

_FIELDS = {"id", "messages", "trigger", "messageId", "model", "provider"}
# What the transport's ``body`` may add, in the gateway's own JSON (docs/requests.md): the app's
# tools and settings, as an AI SDK server route would pass them to ``streamText``.
_GATEWAY_FIELDS = {
    "system",
    "max_tokens",
    "tools",
    "tool_choice",
    "temperature",
    "top_p",
    "stop",
    "reasoning_effort",
    "thinking",
    "metadata",
}
_TRIGGERS = ("submit-message", "regenerate-message")
FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool-calls",
    "tool_use": "tool-calls",
    "content_filter": "content-filter",
    "stop_sequence": "stop",
}


@dataclass(frozen=True, slots=True)
class ChatRequest:
    chat_id: str
    generation: GenerationRequest
    provider: str | None


def check_chat_id(value: Any, field: str = "id") -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_CHAT_ID:
        raise invalid(field, f"the chat id must be a string of 1 to {MAX_CHAT_ID} characters")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value) or value in (".", ".."):
        raise invalid(field, "the chat id contains control characters or is a dot path")
    return value


def parse_request(body: Any, *, max_tokens_limit: int) -> ChatRequest:
    """What ``DefaultChatTransport`` POSTs, as the gateway's request (``ssegate.request``, which
    validates it); 400 naming what is wrong."""
    if not isinstance(body, dict):
        raise invalid("body", "the body must be a JSON object")
    allowed = _FIELDS | _GATEWAY_FIELDS
    unknown = sorted(set(body) - allowed)
    if unknown:
        names = ", ".join(sorted(allowed))
        raise invalid(unknown[0], f"unknown field {unknown[0]!r}; allowed: {names}", code="unknown_parameter")
    chat_id = check_chat_id(body.get("id"))
    trigger = body.get("trigger", "submit-message")
    if trigger not in _TRIGGERS:
        raise invalid("trigger", f"trigger must be one of {', '.join(_TRIGGERS)}")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("messages", "messages must be a non-empty list of UI messages")
    system: list[str] = []
    native_messages: list[dict[str, Any]] = []
    for index, item in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(item, dict):
            raise invalid(where, "each message must be an object with role and parts")
        role = item.get("role")
        parts = item.get("parts")
        if role not in ("system", "user", "assistant"):
            raise invalid(f"{where}.role", f"unknown role {role!r}; use system, user or assistant")
        if not isinstance(parts, list):
            raise invalid(f"{where}.parts", "parts must be a list")
        if role == "system":
            system.append(
                "".join(p.get("text", "") for p in parts if isinstance(p, dict) and p.get("type") == "text")
            )
        elif role == "user":
            native_messages.append({"role": "user", "content": _user_blocks(parts, f"{where}.parts")})
        else:
            native_messages.extend(_assistant_turns(parts, f"{where}.parts"))
    native: dict[str, Any] = {"messages": native_messages}
    extra_system = optional(body, "system", str)
    joined = "\n\n".join(text for text in [extra_system or "", *system] if text)
    if joined:
        native["system"] = joined
    for name in sorted(_GATEWAY_FIELDS - {"system"}):
        if body.get(name) is not None:
            native[name] = body[name]
    if body.get("model") is not None:
        native["model"] = body["model"]
    generation = gateway_request(native, max_tokens_limit=max_tokens_limit)
    return ChatRequest(chat_id, generation, optional(body, "provider", str) or None)


def _user_blocks(parts: list[Any], where: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for index, part in enumerate(parts):
        kind = _kind(part, f"{where}[{index}]")
        if kind == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "file":
            media_type = str(part.get("mediaType", ""))
            if not media_type.startswith("image/"):
                raise invalid(
                    f"{where}[{index}].mediaType", f"files of type {media_type!r} are not supported"
                )
            blocks.append({"type": "image", "source": {"type": "url", "url": part.get("url")}})
        elif not _ignored(kind):
            raise invalid(
                f"{where}[{index}].type", f"parts of type {kind!r} are not supported in a user message"
            )
    return blocks


def _assistant_turns(parts: list[Any], where: str) -> list[dict[str, Any]]:
    """An assistant UIMessage as the gateway's turns: per step (``step-start`` parts divide them),
    the assistant's text and tool calls, then a tool message with those calls' outputs."""
    turns: list[dict[str, Any]] = []
    blocks: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []

    def end_step() -> None:
        if blocks:
            turns.append({"role": "assistant", "content": list(blocks)})
        if results:
            turns.append({"role": "tool", "content": list(results)})
        blocks.clear()
        results.clear()

    for index, part in enumerate(parts):
        path = f"{where}[{index}]"
        kind = _kind(part, path)
        if kind == "step-start":
            end_step()
        elif kind == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "dynamic-tool" or kind.startswith("tool-"):
            name = part.get("toolName") if kind == "dynamic-tool" else kind[5:]
            call_id = part.get("toolCallId")
            blocks.append({"type": "tool_use", "id": call_id, "name": name, "input": part.get("input")})
            results.append(_tool_result(part, path, call_id))
        elif not _ignored(kind):
            raise invalid(f"{path}.type", f"parts of type {kind!r} are not supported in an assistant message")
    end_step()
    return turns


def _tool_result(part: dict[str, Any], path: str, call_id: Any) -> dict[str, Any]:
    state = part.get("state")
    if state == "output-available":
        output = part.get("output")
        content = output if isinstance(output, str) else orjson.dumps(output).decode()
        return {"type": "tool_result", "tool_use_id": call_id, "content": content}
    if state == "output-error":
        text = str(part.get("errorText", ""))
        return {"type": "tool_result", "tool_use_id": call_id, "content": text, "is_error": True}
    if state == "output-denied":
        text = "the user denied this call"
        return {"type": "tool_result", "tool_use_id": call_id, "content": text, "is_error": True}
    raise invalid(f"{path}.state", f"the tool call has no output yet (state {state!r}); add its output first")


def _kind(part: Any, path: str) -> str:
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        raise invalid(path, "each part must be an object with a type")
    kind: str = part["type"]
    return kind


def _ignored(kind: str) -> bool:
    """Parts that are not for the model, as the AI SDK's own ``convertToModelMessages`` leaves them."""
    return kind in ("reasoning", "step-start", "source-url", "source-document") or kind.startswith("data-")


def _chunk(body: dict[str, Any]) -> WireEvent:
    return (None, dumps(body))


class ChunkEncoder:
    """Log events -> UI message stream chunks."""

    __slots__ = ("_message_id", "_open", "_parts", "_tools")

    def __init__(self, generation_id: str) -> None:
        self._message_id = f"msg-{generation_id}"
        self._parts = 0  # text and reasoning parts started: the next one's number
        self._open: tuple[str, str] | None = None  # the open text/reasoning part: (kind, id)
        self._tools: dict[str, tuple[str, list[str]]] = {}  # open tool calls: id -> (name, argument pieces)

    def encode(self, event: str, data: dict[str, Any]) -> list[WireEvent]:
        if event == "thinking" and "delta" not in data:
            return []  # a signature or redacted thinking: not part of the UI message
        if event == "text" or event == "thinking":
            return self._delta("text" if event == "text" else "reasoning", str(data.get("delta", "")))
        if event == "tool_call":
            return self._tool_call(data)
        if event == "start":
            return [_chunk({"type": "start", "messageId": self._message_id}), _chunk({"type": "start-step"})]
        if event == "done":
            return self._done(data)
        if event == "error":
            message = str(data.get("message") or data.get("code") or "error")
            return [*self._close_open(), _chunk({"type": "error", "errorText": message}), (None, DONE)]
        return []

    def _delta(self, kind: str, text: str) -> list[WireEvent]:
        events: list[WireEvent] = []
        if self._open is None or self._open[0] != kind:
            events += self._close_open()
            part_id = f"{kind}-{self._parts}"
            self._parts += 1
            self._open = (kind, part_id)
            events.append(_chunk({"type": f"{kind}-start", "id": part_id}))
        events.append(_chunk({"type": f"{kind}-delta", "id": self._open[1], "delta": text}))
        return events

    def _close_open(self) -> list[WireEvent]:
        if self._open is None:
            return []
        kind, part_id = self._open
        self._open = None
        return [_chunk({"type": f"{kind}-end", "id": part_id})]

    def _tool_call(self, data: dict[str, Any]) -> list[WireEvent]:
        phase, tool_id = data.get("phase"), str(data.get("id", ""))
        if phase == "start":
            name = str(data.get("name", ""))
            self._tools[tool_id] = (name, [])
            start = {"type": "tool-input-start", "toolCallId": tool_id, "toolName": name}
            return [*self._close_open(), _chunk(start)]
        call = self._tools.get(tool_id)
        if call is None:
            return []
        if phase == "delta":
            piece = str(data.get("delta", ""))
            call[1].append(piece)
            return [_chunk({"type": "tool-input-delta", "toolCallId": tool_id, "inputTextDelta": piece})]
        if phase == "end":
            del self._tools[tool_id]
            return [self._tool_input(tool_id, call[0], "".join(call[1]))]
        return []

    @staticmethod
    def _tool_input(tool_id: str, name: str, arguments: str) -> WireEvent:
        try:
            parsed = orjson.loads(arguments) if arguments.strip() else {}
        except orjson.JSONDecodeError:
            error = {
                "type": "tool-input-error",
                "toolCallId": tool_id,
                "toolName": name,
                "input": arguments,
                "errorText": "the model's tool input is not valid JSON",
            }
            return _chunk(error)
        return _chunk(
            {"type": "tool-input-available", "toolCallId": tool_id, "toolName": name, "input": parsed}
        )

    def _done(self, data: dict[str, Any]) -> list[WireEvent]:
        events = self._close_open()
        for tool_id, (name, pieces) in list(self._tools.items()):
            events.append(self._tool_input(tool_id, name, "".join(pieces)))
        self._tools.clear()
        reason = data.get("finish_reason")
        if reason == "cancelled":
            return [*events, _chunk({"type": "abort", "reason": cancelled_message(data)}), (None, DONE)]
        finish = {"type": "finish", "finishReason": FINISH_REASONS.get(str(reason), "other")}
        return [*events, _chunk({"type": "finish-step"}), _chunk(finish), (None, DONE)]


def error_body(status: int, code: str, message: str, field: str | None) -> dict[str, Any]:
    """ssegate's own error shape (``DefaultChatTransport`` shows the body's text as the error)."""
    error: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return {"error": error}


def error_event(data: dict[str, Any]) -> WireEvent:
    return _chunk({"type": "error", "errorText": str(data.get("message") or data.get("code") or "error")})
