"""A fake Anthropic Messages API speaking the real streaming wire format, on a real socket.

Wire facts (from Anthropic's "Streaming Messages" documentation): every event is a named SSE event
whose JSON ``type`` repeats the name; a stream is ``message_start``, then per content block
``content_block_start`` / ``content_block_delta``... / ``content_block_stop``, then
``message_delta`` (stop_reason, cumulative output usage) and ``message_stop``; ``ping`` may appear
anywhere; an ``error`` event (e.g. ``overloaded_error``) may arrive after the 200. Error statuses
answer ``{"type": "error", "error": {"type", "message"}, "request_id"}``.

Benchmarks run it alone: ``python -m tests.fakes.fake_anthropic --port P --tokens 500 --rate 50``
streams 500 text deltas per request, all streams paced by one shared 50 Hz clock.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.fakes._http import FakeRequest
from tests.fakes._upstream import FakeUpstream, Faults, Frame, SharedClock

# HTTP status -> the error type Anthropic names in the body.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}

# What the fake signs its thinking with (a client must send it back with the thinking).
THINKING_SIGNATURE = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxfake"


@dataclass(frozen=True, slots=True)
class ToolUse:
    id: str = "toolu_01FakeWeather"
    name: str = "get_weather"
    input_parts: tuple[str, ...] = ('{"location":', ' "Paris, Fr', 'ance"}')


@dataclass(frozen=True, slots=True)
class AnthropicScript:
    text: tuple[str, ...] = ("Hello", ", world", "!")
    thinking: tuple[str, ...] = ()
    # a redacted_thinking block (its encrypted data) after the thinking, as the API may send one
    redacted: str | None = None
    tool: ToolUse | None = None
    tools: tuple[ToolUse, ...] = ()  # more tool_use blocks after ``tool``: parallel calls
    model: str | None = None  # None: echo the requested model, as the API does
    input_tokens: int = 21
    stop_reason: str | None = None  # None: end_turn, or tool_use when there is a tool
    stream_error_type: str = "overloaded_error"
    faults: Faults = field(default_factory=Faults)


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


class FakeAnthropic(FakeUpstream[AnthropicScript]):
    def __init__(self, script: AnthropicScript | None = None, *, clock: SharedClock | None = None) -> None:
        super().__init__(script or AnthropicScript(), clock=clock)

    def faults(self, script: AnthropicScript) -> Faults:
        return script.faults

    def error_body(self, status: int, script: AnthropicScript) -> dict[str, Any]:
        kind = ERROR_TYPES.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": f"fake {kind}"}, "request_id": "req_fake"}

    def error_frame(self, script: AnthropicScript) -> bytes:
        kind = script.stream_error_type
        return _event("error", {"type": "error", "error": {"type": kind, "message": "Overloaded"}})

    def garbage_frame(self, script: AnthropicScript, data: bytes) -> bytes:
        return b"event: content_block_delta\ndata: " + data + b"\n\n"

    def request_problem(self, request: FakeRequest) -> str | None:
        return messages_problem(request.json())

    def frames(self, request: FakeRequest, script: AnthropicScript) -> Iterator[Frame]:
        model = script.model or request.json().get("model", "claude-fake-1")
        message: dict[str, Any] = {
            "id": "msg_01Fake",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": script.input_tokens, "output_tokens": 1},
        }
        yield Frame(_event("message_start", {"type": "message_start", "message": message}))
        yield Frame(_event("ping", {"type": "ping"}))
        index = 0
        if script.thinking:
            yield from self._block(index, {"type": "thinking", "thinking": ""}, script.thinking, "thinking")
            signature = {"type": "signature_delta", "signature": THINKING_SIGNATURE}
            yield Frame(
                _event(
                    "content_block_delta", {"type": "content_block_delta", "index": index, "delta": signature}
                )
            )
            yield Frame(_event("content_block_stop", {"type": "content_block_stop", "index": index}))
            index += 1
        if script.redacted is not None:
            block = {"type": "redacted_thinking", "data": script.redacted}
            start = {"type": "content_block_start", "index": index, "content_block": block}
            yield Frame(_event("content_block_start", start))
            yield Frame(_event("content_block_stop", {"type": "content_block_stop", "index": index}))
            index += 1
        if script.text:
            yield from self._block(index, {"type": "text", "text": ""}, script.text, "text")
            yield Frame(_event("content_block_stop", {"type": "content_block_stop", "index": index}))
            index += 1
        calls = ((script.tool,) if script.tool else ()) + script.tools
        for tool in calls:
            start = {"type": "tool_use", "id": tool.id, "name": tool.name, "input": {}}
            yield from self._block(index, start, tool.input_parts, "input_json")
            yield Frame(_event("content_block_stop", {"type": "content_block_stop", "index": index}))
            index += 1
        stop_reason = script.stop_reason or ("tool_use" if calls else "end_turn")
        output_tokens = len(script.thinking) + len(script.text) + sum(len(t.input_parts) for t in calls)
        delta = {"stop_reason": stop_reason, "stop_sequence": None}
        yield Frame(
            _event(
                "message_delta",
                {"type": "message_delta", "delta": delta, "usage": {"output_tokens": output_tokens}},
            )
        )
        yield Frame(_event("message_stop", {"type": "message_stop"}))

    def _block(self, index: int, start: dict[str, Any], parts: tuple[str, ...], kind: str) -> Iterator[Frame]:
        yield Frame(
            _event(
                "content_block_start", {"type": "content_block_start", "index": index, "content_block": start}
            )
        )
        field_name = {"text": "text", "thinking": "thinking", "input_json": "partial_json"}[kind]
        for part in parts:
            delta = {"type": f"{kind}_delta", field_name: part}
            body = {"type": "content_block_delta", "index": index, "delta": delta}
            yield Frame(_event("content_block_delta", body), is_delta=True)


_IMAGE_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp"}


def messages_problem(body: dict[str, Any]) -> str | None:
    """What the Messages API would refuse in ``body`` (the rules its docs state for tool use and
    images), or ``None``."""
    for name in ("temperature", "top_p"):
        if name in body:
            return f"{name}: Extra inputs are not permitted"
    messages = body.get("messages") or []
    has_tool_blocks = False
    for index, message in enumerate(messages):
        if message.get("role") not in ("user", "assistant"):
            return f"messages.{index}.role: Input should be 'user' or 'assistant'"
        content = message["content"]
        blocks = [] if isinstance(content, str) else content
        previous = messages[index - 1] if index else None
        called = [
            b["id"]
            for b in ([] if previous is None or isinstance(previous["content"], str) else previous["content"])
            if b["type"] == "tool_use"
        ]
        answered = [b["tool_use_id"] for b in blocks if b["type"] == "tool_result"]
        if called and sorted(answered) != sorted(called):
            return (
                f"messages.{index}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {', '.join(sorted(set(called) - set(answered)))}"
            )
        for position, block in enumerate(blocks):
            kind = block["type"]
            if kind in ("tool_use", "tool_result"):
                has_tool_blocks = True
            if kind == "tool_result" and (message["role"] != "user" or block["tool_use_id"] not in called):
                where = f"messages.{index}.content.{position}"
                return f"{where}: unexpected `tool_use_id` found in `tool_result` blocks"
            if kind == "tool_result" and any(b["type"] != "tool_result" for b in blocks[:position]):
                return f"messages.{index}: `tool_result` blocks must come first in the user message"
            if kind == "tool_use" and message["role"] != "assistant":
                return f"messages.{index}.content.{position}: tool_use blocks belong to the assistant"
            if kind == "text" and not block["text"]:
                return f"messages.{index}.content.{position}: text content blocks must be non-empty"
            if kind == "image":
                source = block["source"]
                if source["type"] == "base64" and source["media_type"] not in _IMAGE_TYPES:
                    return (
                        f"messages.{index}.content.{position}.source.media_type: not a supported image type"
                    )
                if source["type"] == "base64":
                    try:
                        base64.b64decode(source["data"], validate=True)
                    except ValueError:
                        return f"messages.{index}.content.{position}.source.data: invalid base64 data"
    thinking_on = (body.get("thinking") or {}).get("type") == "enabled"
    last_assistant = next((m for m in reversed(messages) if m.get("role") == "assistant"), None)
    if thinking_on and last_assistant is not None and not isinstance(last_assistant["content"], str):
        blocks = last_assistant["content"]
        if any(b["type"] == "tool_use" for b in blocks) and blocks[0]["type"] not in (
            "thinking",
            "redacted_thinking",
        ):
            return (
                f"Expected `thinking` or `redacted_thinking`, but found `{blocks[0]['type']}`. "
                "When `thinking` is enabled, a final `assistant` message must start with a thinking block."
            )
        for block in blocks:
            if block["type"] == "thinking" and not block.get("signature"):
                return "thinking blocks must carry the signature they were sent with"
    if has_tool_blocks and not body.get("tools"):
        return "Requests which include `tool_use` or `tool_result` blocks must define tools."
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description="A fake Anthropic Messages API for benchmarks.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", type=int, default=500, help="text deltas per answer")
    parser.add_argument(
        "--rate", type=float, default=50.0, help="deltas per second, one clock for all streams"
    )
    args = parser.parse_args()
    script = AnthropicScript(text=tuple(f" tok{n}" for n in range(args.tokens)))

    async def run() -> None:
        fake = FakeAnthropic(script, clock=SharedClock(args.rate))
        print(f"fake anthropic on http://127.0.0.1:{args.port}", flush=True)
        await fake.serve_forever(args.port)

    asyncio.run(run())


if __name__ == "__main__":
    main()
