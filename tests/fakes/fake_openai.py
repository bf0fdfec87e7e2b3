"""A fake OpenAI Chat Completions API speaking the real streaming wire format, on a real socket.

Wire facts (from OpenAI's API reference for ``chat.completion.chunk``): unnamed SSE events whose
data is one chunk object (``id``, ``object``, ``created``, ``model``, ``choices[]`` with
``index``/``delta``/``finish_reason``); the first delta carries ``role``; tool calls stream as
``delta.tool_calls[]`` with ``index`` always, ``id``/``type``/``function.name`` on the first
fragment and ``function.arguments`` pieces after; the finishing chunk has an empty delta and a
``finish_reason``; with ``stream_options.include_usage`` every chunk carries ``"usage": null`` and
one last chunk has empty ``choices`` and the totals; ``data: [DONE]`` ends the stream. Error
statuses answer ``{"error": {"message", "type", "param", "code"}}``. Compatible servers (vLLM,
Ollama) add ``delta.reasoning_content`` / ``delta.reasoning`` for thinking.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.fakes._http import FakeRequest
from tests.fakes._upstream import FakeUpstream, Faults, Frame, SharedClock

# HTTP status -> (error type, error code) as OpenAI names them in the body.
ERROR_KINDS = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", None),
}


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str = "call_FakeWeather01"
    name: str = "get_weather"
    argument_parts: tuple[str, ...] = ('{"loc', 'ation": "Pa', 'ris"}')


@dataclass(frozen=True, slots=True)
class OpenAIScript:
    text: tuple[str, ...] = ("Hello", ", world", "!")
    reasoning: tuple[str, ...] = ()
    reasoning_field: str = "reasoning_content"
    tool_calls: tuple[ToolCall, ...] = ()
    model: str | None = None  # None: echo the requested model
    prompt_tokens: int = 9
    finish_reason: str | None = None  # None: stop, or tool_calls when there are tool calls
    send_done: bool = True
    stream_error_type: str = "server_error"
    faults: Faults = field(default_factory=Faults)


class FakeOpenAI(FakeUpstream[OpenAIScript]):
    def __init__(self, script: OpenAIScript | None = None, *, clock: SharedClock | None = None) -> None:
        super().__init__(script or OpenAIScript(), clock=clock)

    def faults(self, script: OpenAIScript) -> Faults:
        return script.faults

    def error_body(self, status: int, script: OpenAIScript) -> dict[str, Any]:
        kind, code = ERROR_KINDS.get(status, ("server_error", None))
        return {"error": {"message": f"fake {code or kind}", "type": kind, "param": None, "code": code}}

    def error_frame(self, script: OpenAIScript) -> bytes:
        error = {
            "message": "The server had an error while processing your request.",
            "type": script.stream_error_type,
        }
        return _data({"error": {**error, "param": None, "code": None}})

    def request_problem(self, request: FakeRequest) -> str | None:
        return chat_problem(request.json())

    def frames(self, request: FakeRequest, script: OpenAIScript) -> Iterator[Frame]:
        body = request.json()
        model = script.model or body.get("model", "gpt-fake-1")
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        base = {
            "id": "chatcmpl-Fake01",
            "object": "chat.completion.chunk",
            "created": 1732245000,
            "model": model,
        }
        base["system_fingerprint"] = "fp_fake"

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            extra = {"usage": None} if include_usage else {}
            return _data({**base, "choices": [choice], **extra})

        first_content: str | None = None if script.tool_calls and not script.text else ""
        yield Frame(chunk({"role": "assistant", "content": first_content, "refusal": None}))
        for part in script.reasoning:
            yield Frame(chunk({script.reasoning_field: part}), is_delta=True)
        for part in script.text:
            yield Frame(chunk({"content": part}), is_delta=True)
        for index, call in enumerate(script.tool_calls):
            function = {"name": call.name, "arguments": ""}
            yield Frame(
                chunk(
                    {
                        "tool_calls": [
                            {"index": index, "id": call.id, "type": "function", "function": function}
                        ]
                    }
                )
            )
            for part in call.argument_parts:
                yield Frame(
                    chunk({"tool_calls": [{"index": index, "function": {"arguments": part}}]}), is_delta=True
                )
        finish_reason = script.finish_reason or ("tool_calls" if script.tool_calls else "stop")
        yield Frame(chunk({}, finish_reason))
        if include_usage:
            completion = (
                len(script.reasoning)
                + len(script.text)
                + sum(len(c.argument_parts) for c in script.tool_calls)
            )
            usage = {
                "prompt_tokens": script.prompt_tokens,
                "completion_tokens": completion,
                "total_tokens": script.prompt_tokens + completion,
            }
            yield Frame(_data({**base, "choices": [], "usage": usage}))
        if script.send_done:
            yield Frame(b"data: [DONE]\n\n")


def chat_problem(body: dict[str, Any]) -> str | None:
    """What Chat Completions would refuse in ``body`` (its rules for tool messages and image
    parts), or ``None``."""
    waiting: list[str] = []  # tool_call_ids the next messages must answer
    for index, message in enumerate(body.get("messages") or []):
        role = message.get("role")
        if role not in ("system", "developer", "user", "assistant", "tool"):
            return f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', 'tool'."
        if role == "tool":
            if message.get("tool_call_id") not in waiting:
                return (
                    f"Invalid parameter: messages[{index}]: messages with role 'tool' must be a response "
                    "to a preceeding message with 'tool_calls'."
                )
            waiting.remove(message["tool_call_id"])
            continue
        if waiting:
            return (
                "An assistant message with 'tool_calls' must be followed by tool messages responding to "
                "each 'tool_call_id'. The following tool_call_ids did not have response messages: "
                + ", ".join(waiting)
            )
        if role == "assistant":
            for call in message.get("tool_calls") or []:
                json.loads(call["function"]["arguments"])  # a string of JSON, as the API sends it
                waiting.append(call["id"])
        content = message.get("content")
        for part in content if isinstance(content, list) else []:
            if part["type"] == "image_url":
                url = part["image_url"]["url"]
                if not url.startswith(("https://", "http://", "data:image/")):
                    return f"Invalid image URL: messages[{index}]"
    if waiting:
        return f"The following tool_call_ids did not have response messages: {', '.join(waiting)}"
    for tool in body.get("tools") or []:
        if tool.get("type") != "function" or "name" not in tool.get("function", {}):
            return "Missing required parameter: 'tools[0].function'."
    return None


def _data(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


__all__ = ["FakeOpenAI", "OpenAIScript", "SharedClock", "ToolCall"]
