"""Micro-benchmark of the providers' event mapping (not a test): ``python -m bench.mapping_micro``.

Feeds one vendor's streamed answer, chunk by chunk as the upstream sends it (one SSE event per
chunk), through the adapter's push handler and counts events handed over per second: the CPU the
mapping costs a relayed token, with no socket or event loop in the way. Text answers (the per-token
path) and a tool call's argument deltas are measured for both vendors.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from ssegate.providers.anthropic import AnthropicProvider
from ssegate.providers.base import ProviderConfig, ProviderEvent
from ssegate.providers.openai import OpenAIProvider

TOKENS = 2_000


def _sse(event: str | None, data: dict[str, Any]) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


def anthropic_chunks(tool: bool) -> list[bytes]:
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "content": []}
    chunks = [
        _sse("message_start", {"type": "message_start", "message": {**message, "usage": {"input_tokens": 9}}})
    ]
    block = (
        {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}
        if tool
        else {"type": "text", "text": ""}
    )
    chunks.append(
        _sse("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block})
    )
    for n in range(TOKENS):
        delta = (
            {"type": "input_json_delta", "partial_json": f'"k{n}": 1, '}
            if tool
            else {"type": "text_delta", "text": f" tok{n}"}
        )
        chunks.append(
            _sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
        )
    chunks.append(_sse("content_block_stop", {"type": "content_block_stop", "index": 0}))
    stop = {"stop_reason": "tool_use" if tool else "end_turn", "stop_sequence": None}
    chunks.append(
        _sse("message_delta", {"type": "message_delta", "delta": stop, "usage": {"output_tokens": TOKENS}})
    )
    chunks.append(_sse("message_stop", {"type": "message_stop"}))
    return chunks


def openai_chunks(tool: bool) -> list[bytes]:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _sse(None, {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    chunks = [chunk({"role": "assistant", "content": ""})]
    if tool:
        call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}
        chunks.append(chunk({"tool_calls": [call]}))
    for n in range(TOKENS):
        if tool:
            chunks.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": f'"k{n}": 1, '}}]}))
        else:
            chunks.append(chunk({"content": f" tok{n}"}))
    chunks.append(chunk({}, "tool_calls" if tool else "stop"))
    chunks.append(
        _sse(None, {**base, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": TOKENS}})
    )
    chunks.append(b"data: [DONE]\n\n")
    return chunks


class _Push:
    """What a push handler is given: it only says when the answer ended."""

    finished = False

    def finish(self) -> None:
        self.finished = True


def events_per_second(provider: Any, chunks: list[bytes], seconds: float = 3.0) -> float:
    """Answers mapped for about ``seconds``; events per second of the best answer."""
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        events: list[ProviderEvent] = []
        push = _Push()
        handle, _ = provider._push_handlers(push, events.append)
        start = time.perf_counter()
        for chunk in chunks:
            handle(chunk)
        elapsed = time.perf_counter() - start
        assert push.finished
        best = max(best, len(events) / elapsed)
    return best


async def main() -> None:
    config = ProviderConfig(
        anthropic_api_key="x",
        anthropic_base_url="http://127.0.0.1:9",
        openai_api_key="x",
        openai_base_url="http://127.0.0.1:9/v1",
    )
    anthropic = AnthropicProvider(config)
    openai = OpenAIProvider(config)
    try:
        for label, provider, chunks in (
            ("anthropic text", anthropic, anthropic_chunks(tool=False)),
            ("anthropic tool arguments", anthropic, anthropic_chunks(tool=True)),
            ("openai text", openai, openai_chunks(tool=False)),
            ("openai tool arguments", openai, openai_chunks(tool=True)),
        ):
            rate = events_per_second(provider, chunks)
            print(f"{label:<28}{rate:>12,.0f} events/s  ({1e6 / rate:.2f} us per event)")
    finally:
        await anthropic.aclose()
        await openai.aclose()


if __name__ == "__main__":
    asyncio.run(main())
