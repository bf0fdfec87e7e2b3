"""The OpenAI Chat Completions dialect: ``POST /v1/chat/completions`` requests in, ``chat.completion``
and ``chat.completion.chunk`` objects out (wire facts from OpenAI's API reference).

Streaming: unnamed ``data:`` events, each one chunk; the first delta carries the role; tool calls
stream as ``delta.tool_calls[]`` with their ``index`` always, ``id``/``type``/``function.name`` on the
first fragment and ``function.arguments`` pieces after; the finishing chunk has an empty delta and
a ``finish_reason``; with ``stream_options.include_usage`` every chunk says ``"usage": null`` and a
last chunk with empty ``choices`` has the totals; ``data: [DONE]`` ends it. A failure after the
head is a chunk ``{"error": {...}}`` (the SDK raises ``APIError`` on it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ssegate.dialects.answer import Answer, cancelled_message
from ssegate.dialects.base import DONE, WireEvent, dumps
from ssegate.dialects.request import (
    RequestShape,
    invalid,
    join_text_parts,
    optional,
    refuse_unsupported,
    unknown_fields,
)
from ssegate.gateway import id_created_at
from ssegate.providers.base import GenerationRequest, Message

NAME = "openai_chat"
ID_PREFIX = "chatcmpl-"

# Fields the request may carry that change nothing here (n=1, no logprobs, no storage).
_HARMLESS = {"user", "store", "service_tier", "stream_options", "n", "logprobs", "parallel_tool_calls"}
_FIELDS = {"model", "messages", "stream", "max_tokens", "max_completion_tokens", "provider", "metadata"}
# Honoured once the gateway's request model carries them; refused with a 400 until then.
_NOT_YET = {
    "tools",
    "tool_choice",
    "temperature",
    "top_p",
    "stop",
    "reasoning_effort",
    "functions",
    "function_call",
}
# Never honoured: several choices, log probabilities, structured output, audio...
_NEVER = {
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "top_logprobs",
    "response_format",
    "seed",
    "modalities",
    "audio",
    "prediction",
    "web_search_options",
    "verbosity",
    "prompt_cache_key",
    "safety_identifier",
}

# The gateway's finish reasons in OpenAI's words.
FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "tool_use": "tool_calls",
    "content_filter": "content_filter",
    "stop_sequence": "stop",
}


@dataclass(frozen=True, slots=True)
class ChatRequest:
    generation: GenerationRequest
    stream: bool
    include_usage: bool
    provider: str | None


def parse_request(body: Any, *, max_tokens_limit: int) -> ChatRequest:
    """A ``POST /v1/chat/completions`` body as the gateway's request; 400 naming what cannot be honoured."""
    if not isinstance(body, dict):
        raise invalid("body", "the body must be a JSON object")
    shape = RequestShape(known=_FIELDS | _HARMLESS, not_yet=_NOT_YET, never=_NEVER)
    unknown_fields(body, shape)
    refuse_unsupported(body, shape)
    n = body.get("n")
    if n is not None and n != 1:
        raise invalid("n", "n must be 1: ssegate streams one choice per generation")
    if body.get("logprobs"):
        raise invalid("logprobs", "logprobs are not supported")
    stream = optional(body, "stream", bool) or False
    stream_options = optional(body, "stream_options", dict) or {}
    if stream_options and not stream:
        raise invalid("stream_options", "stream_options is only allowed with stream: true")
    extra = sorted(set(stream_options) - {"include_usage", "include_obfuscation"})
    if extra:
        raise invalid(f"stream_options.{extra[0]}", f"unsupported stream option {extra[0]!r}")
    include_usage = bool(stream_options.get("include_usage"))
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("messages", "messages must be a non-empty list")
    system: list[str] = []
    parsed: list[Message] = []
    for index, item in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(item, dict):
            raise invalid(where, "each message must be an object with role and content")
        role = item.get("role")
        text = join_text_parts(item.get("content"), f"{where}.content", part_type="text")
        if role in ("system", "developer"):
            if parsed:
                raise invalid(f"{where}.role", "system messages must come before the conversation")
            system.append(text)
        elif role in ("user", "assistant"):
            if item.get("tool_calls"):
                raise invalid(f"{where}.tool_calls", "tool calls in the history are not supported yet")
            if not text.strip():
                raise invalid(f"{where}.content", "each message needs non-empty text content")
            parsed.append(Message(role=role, content=text))
        elif role in ("tool", "function"):
            raise invalid(f"{where}.role", f"role {role!r} (tool results) is not supported yet")
        else:
            raise invalid(f"{where}.role", f"unknown role {role!r}; use system, user or assistant")
    if not parsed or parsed[-1].role != "user":
        raise invalid("messages", "the last message must be the user's")
    max_tokens = _max_tokens(body, max_tokens_limit)
    model = optional(body, "model", str)
    provider = optional(body, "provider", str)
    generation = GenerationRequest(
        messages=tuple(parsed),
        model=model or None,
        system="\n\n".join(system) or None,
        max_tokens=max_tokens or 1024,
    )
    return ChatRequest(generation, stream, include_usage, provider or None)


def _max_tokens(body: dict[str, Any], limit: int) -> int | None:
    value = None
    for name in ("max_completion_tokens", "max_tokens"):
        given = optional(body, name, int)
        if given is not None:
            if not 1 <= given <= limit:
                raise invalid(name, f"{name} must be between 1 and {limit}")
            value = given if value is None else min(value, given)
    return value


def completion_id(generation_id: str) -> str:
    return ID_PREFIX + generation_id


def _usage(input_tokens: int | None, output_tokens: int | None) -> dict[str, int]:
    prompt, completion = input_tokens or 0, output_tokens or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class ChunkEncoder:
    """Log events -> ``chat.completion.chunk`` data lines."""

    __slots__ = ("_base", "_include_usage", "_model", "_tools", "_usage")

    def __init__(self, generation_id: str, *, include_usage: bool) -> None:
        self._include_usage = include_usage
        self._model = ""
        self._tools: dict[str, int] = {}  # tool call id -> its index
        self._usage: dict[str, Any] = {}
        self._base = (completion_id(generation_id), int(id_created_at(generation_id)))

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> WireEvent:
        chunk_id, created = self._base
        chunk: dict[str, Any] = {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": self._model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if self._include_usage:
            chunk["usage"] = None
        return (None, dumps(chunk))

    def encode(self, event: str, data: dict[str, Any]) -> list[WireEvent]:
        if event == "text":
            return [self._chunk({"content": data.get("delta", "")})]
        if event == "thinking":
            # What OpenAI-compatible servers (vLLM, DeepSeek) call the reasoning they stream.
            return [self._chunk({"reasoning_content": data.get("delta", "")})]
        if event == "tool_call":
            return self._tool_call(data)
        if event == "start":
            self._model = str(data.get("model") or "")
            return [self._chunk({"role": "assistant", "content": ""})]
        if event == "status" and data.get("stage") == "model":
            self._model = str(data.get("model") or self._model)
            return []
        if event == "usage":
            self._usage = data
            return []
        if event == "done":
            return self._done(data)
        if event == "error":
            return [error_chunk(data), (None, DONE)]
        return []

    def _tool_call(self, data: dict[str, Any]) -> list[WireEvent]:
        phase, tool_id = data.get("phase"), str(data.get("id", ""))
        if phase == "start":
            index = self._tools[tool_id] = len(self._tools)
            function = {"name": data.get("name", ""), "arguments": ""}
            call = {"index": index, "id": tool_id, "type": "function", "function": function}
            return [self._chunk({"tool_calls": [call]})]
        if phase == "delta" and tool_id in self._tools:
            call = {"index": self._tools[tool_id], "function": {"arguments": data.get("delta", "")}}
            return [self._chunk({"tool_calls": [call]})]
        return []

    def _done(self, data: dict[str, Any]) -> list[WireEvent]:
        reason = data.get("finish_reason")
        if reason == "cancelled":
            error = {"code": "cancelled", "message": cancelled_message(data)}
            return [error_chunk(error), (None, DONE)]
        events = [self._chunk({}, FINISH_REASONS.get(str(reason), "stop"))]
        if self._include_usage:
            given = data.get("usage")
            usage: dict[str, Any] = given if isinstance(given, dict) else self._usage
            chunk_id, created = self._base
            last = {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": self._model,
                "system_fingerprint": None,
                "choices": [],
                "usage": _usage(usage.get("input_tokens"), usage.get("output_tokens")),
            }
            events.append((None, dumps(last)))
        events.append((None, DONE))
        return events


# ssegate's error codes as OpenAI error types (what the SDK's APIError.type reports).
_ERROR_TYPES = {
    "rate_limited": "rate_limit_error",
    "upstream_overloaded": "server_error",
    "upstream_unavailable": "server_error",
    "upstream_timeout": "server_error",
    "upstream_disconnected": "server_error",
    "upstream_lost": "server_error",
    "internal": "server_error",
    "upstream_bad_request": "invalid_request_error",
    "upstream_auth": "upstream_auth_error",
    "cancelled": "cancelled",
}


def error_chunk(data: dict[str, Any]) -> WireEvent:
    code = str(data.get("code") or "upstream_error")
    error = {
        "message": str(data.get("message") or code),
        "type": _ERROR_TYPES.get(code, "api_error"),
        "param": None,
        "code": code,
    }
    return (None, dumps({"error": error}))


def completion(generation_id: str, answer: Answer) -> dict[str, Any]:
    """The non-streaming answer: one ``chat.completion`` object."""
    message: dict[str, Any] = {"role": "assistant", "content": answer.text or None, "refusal": None}
    if answer.thinking:
        message["reasoning_content"] = answer.thinking
    calls = answer.tool_calls
    if calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in calls
        ]
    return {
        "id": completion_id(generation_id),
        "object": "chat.completion",
        "created": int(id_created_at(generation_id)),
        "model": answer.model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": FINISH_REASONS.get(answer.finish_reason or "stop", "stop"),
            }
        ],
        "usage": _usage(answer.input_tokens, answer.output_tokens),
    }


# HTTP statuses as OpenAI's error types.
_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    410: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_body(status: int, code: str, message: str, param: str | None) -> dict[str, Any]:
    """An error answer in OpenAI's shape."""
    kind = _STATUS_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
