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
from ssegate.dialects.request import invalid, optional
from ssegate.providers.base import GenerationRequest, Message

NAME = "ai_sdk_ui"
HEADER = ("x-vercel-ai-ui-message-stream", "v1")
MAX_CHAT_ID = 200

_FIELDS = {"id", "messages", "trigger", "messageId", "model", "provider", "system", "max_tokens", "metadata"}
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
    """What ``DefaultChatTransport`` POSTs, as the gateway's request; 400 naming what is wrong."""
    if not isinstance(body, dict):
        raise invalid("body", "the body must be a JSON object")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        allowed = ", ".join(sorted(_FIELDS))
        raise invalid(
            unknown[0], f"unknown field {unknown[0]!r}; allowed: {allowed}", code="unknown_parameter"
        )
    chat_id = check_chat_id(body.get("id"))
    trigger = body.get("trigger", "submit-message")
    if trigger not in _TRIGGERS:
        raise invalid("trigger", f"trigger must be one of {', '.join(_TRIGGERS)}")
    if body.get("metadata") is not None:
        raise invalid("metadata", "'metadata' is not supported by ssegate yet", code="unsupported_parameter")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("messages", "messages must be a non-empty list of UI messages")
    system: list[str] = []
    parsed: list[Message] = []
    for index, item in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(item, dict):
            raise invalid(where, "each message must be an object with role and parts")
        role = item.get("role")
        if role not in ("system", "user", "assistant"):
            raise invalid(f"{where}.role", f"unknown role {role!r}; use system, user or assistant")
        text = _text_of(item.get("parts"), f"{where}.parts")
        if role == "system":
            system.append(text)
        elif text.strip():
            parsed.append(Message(role=role, content=text))
        elif role == "user":
            raise invalid(f"{where}.parts", "a user message needs a non-empty text part")
        # An assistant message with no text (only reasoning, or cut before its first word) adds
        # nothing the model could use.
    if not parsed or parsed[-1].role != "user":
        raise invalid("messages", "the last message must be the user's")
    extra_system = optional(body, "system", str)
    if extra_system:
        system.insert(0, extra_system)
    max_tokens = optional(body, "max_tokens", int)
    if max_tokens is not None and not 1 <= max_tokens <= max_tokens_limit:
        raise invalid("max_tokens", f"max_tokens must be between 1 and {max_tokens_limit}")
    generation = GenerationRequest(
        messages=tuple(parsed),
        model=optional(body, "model", str) or None,
        system="\n\n".join(system) or None,
        max_tokens=max_tokens or 1024,
    )
    return ChatRequest(chat_id, generation, optional(body, "provider", str) or None)


def _text_of(parts: Any, where: str) -> str:
    if not isinstance(parts, list):
        raise invalid(where, "parts must be a list")
    texts: list[str] = []
    for index, part in enumerate(parts):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise invalid(f"{where}[{index}]", "each part must be an object with a type")
        kind: str = part["type"]
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise invalid(f"{where}[{index}].text", "a text part needs a string text")
            texts.append(text)
        elif kind in ("reasoning", "step-start", "source-url", "source-document") or kind.startswith("data-"):
            continue  # not for the model: as the AI SDK's own convertToModelMessages leaves them
        else:
            raise invalid(f"{where}[{index}].type", f"parts of type {kind!r} are not supported yet")
    return "".join(texts)


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
