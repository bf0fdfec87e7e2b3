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

import orjson

from ssegate.dialects.answer import Answer, cancelled_message
from ssegate.dialects.base import DONE, WireEvent, dumps
from ssegate.dialects.request import (
    RequestShape,
    gateway_request,
    invalid,
    join_text_parts,
    optional,
    refuse_unsupported,
    unknown_fields,
)
from ssegate.gateway import id_created_at
from ssegate.providers.base import GenerationRequest

NAME = "openai_chat"
ID_PREFIX = "chatcmpl-"

# Fields the request may carry that change nothing here (n=1, no logprobs, no storage).
_HARMLESS = {"user", "store", "service_tier", "stream_options", "n", "logprobs", "parallel_tool_calls"}
_FIELDS = {
    "model",
    "messages",
    "stream",
    "max_tokens",
    "max_completion_tokens",
    "provider",
    "metadata",
    "tools",
    "tool_choice",
    "temperature",
    "top_p",
    "stop",
    "reasoning_effort",
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
    "functions",
    "function_call",
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
    """A ``POST /v1/chat/completions`` body as the gateway's request (``ssegate.request``, which
    validates it); 400 naming what cannot be honoured."""
    if not isinstance(body, dict):
        raise invalid("body", "the body must be a JSON object")
    shape = RequestShape(known=_FIELDS | _HARMLESS, never=_NEVER)
    unknown_fields(body, shape)
    refuse_unsupported(body, shape)
    n = body.get("n")
    if n is not None and n != 1:
        raise invalid("n", "n must be 1: ssegate streams one choice per generation")
    if body.get("logprobs"):
        raise invalid("logprobs", "logprobs are not supported")
    if body.get("parallel_tool_calls") is False:
        raise invalid("parallel_tool_calls", "parallel_tool_calls: false is not supported")
    stream = optional(body, "stream", bool) or False
    stream_options = optional(body, "stream_options", dict) or {}
    if stream_options and not stream:
        raise invalid("stream_options", "stream_options is only allowed with stream: true")
    extra = sorted(set(stream_options) - {"include_usage", "include_obfuscation"})
    if extra:
        raise invalid(f"stream_options.{extra[0]}", f"unsupported stream option {extra[0]!r}")
    include_usage = bool(stream_options.get("include_usage"))
    native: dict[str, Any] = {"messages": _messages(body.get("messages"))}
    for name in ("model", "temperature", "top_p", "stop", "reasoning_effort", "metadata"):
        if body.get(name) is not None:
            native[name] = body[name]
    max_tokens = _max_tokens(body, max_tokens_limit)
    if max_tokens is not None:
        native["max_tokens"] = max_tokens
    if body.get("tools") is not None:
        native["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        native["tool_choice"] = _tool_choice(body["tool_choice"])
    generation = gateway_request(native, max_tokens_limit=max_tokens_limit)
    provider = optional(body, "provider", str)
    return ChatRequest(generation, stream, include_usage, provider or None)


def _messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise invalid("messages", "messages must be a non-empty list")
    out: list[dict[str, Any]] = []
    for index, item in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(item, dict):
            raise invalid(where, "each message must be an object with role and content")
        role = item.get("role")
        if role in ("system", "developer"):
            out.append(
                {
                    "role": "system",
                    "content": join_text_parts(item.get("content"), f"{where}.content", part_type="text"),
                }
            )
        elif role == "user":
            out.append({"role": "user", "content": _user_content(item.get("content"), f"{where}.content")})
        elif role == "assistant":
            message = _assistant(item, where)
            if message is not None:
                out.append(message)
        elif role == "tool":
            call_id = item.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise invalid(f"{where}.tool_call_id", "a tool message needs the tool_call_id it answers")
            content = join_text_parts(item.get("content"), f"{where}.content", part_type="text")
            out.append({"role": "tool", "tool_use_id": call_id, "content": content})
        else:
            raise invalid(
                f"{where}.role", f"unknown role {role!r}; use system, developer, user, assistant or tool"
            )
    return out


def _user_content(content: Any, where: str) -> Any:
    if isinstance(content, str) or not isinstance(content, list):
        return content
    blocks: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": part.get("text")})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            blocks.append({"type": "image", "source": {"type": "url", "url": url}})
        else:
            raise invalid(f"{where}[{index}].type", f"content parts of type {kind!r} are not supported")
    return blocks


def _assistant(item: dict[str, Any], where: str) -> dict[str, Any] | None:
    text = join_text_parts(item.get("content"), f"{where}.content", part_type="text")
    calls = item.get("tool_calls") or []
    if not isinstance(calls, list):
        raise invalid(f"{where}.tool_calls", "tool_calls must be a list")
    if not calls:
        return {"role": "assistant", "content": text} if text.strip() else None
    blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text.strip() else []
    for index, call in enumerate(calls):
        path = f"{where}.tool_calls[{index}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise invalid(path, "a tool call needs id, type 'function' and function {name, arguments}")
        arguments = function.get("arguments") or "{}"
        try:
            parsed = orjson.loads(arguments) if isinstance(arguments, str) else None
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            raise invalid(f"{path}.function.arguments", "arguments must be a JSON object, as a string")
        blocks.append(
            {"type": "tool_use", "id": call.get("id"), "name": function.get("name"), "input": parsed}
        )
    return {"role": "assistant", "content": blocks}


def _tools(tools: Any) -> Any:
    if not isinstance(tools, list):
        return tools  # the gateway's parser says what is wrong
    out: list[Any] = []
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if (
            not isinstance(tool, dict)
            or tool.get("type", "function") != "function"
            or not isinstance(function, dict)
        ):
            raise invalid(
                f"tools[{index}]", "each tool must be {type: 'function', function: {name, parameters}}"
            )
        if function.get("strict"):
            raise invalid(f"tools[{index}].function.strict", "strict function schemas are not supported")
        mapped: dict[str, Any] = {
            "name": function.get("name"),
            "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
        }
        if function.get("description") is not None:
            mapped["description"] = function["description"]
        out.append(mapped)
    return out


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function")
        return {"type": "tool", "name": function.get("name") if isinstance(function, dict) else None}
    return choice


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
            if "delta" not in data:  # a signature or redacted thinking: OpenAI has no place for it
                return []
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
