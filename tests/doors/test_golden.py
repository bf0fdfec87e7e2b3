"""Golden tests: the same log events encode to the same wire bytes in each dialect, every time.

The expected bytes live in ``tests/doors/golden/<dialect>-<case>.sse``; after a deliberate change
of a dialect's output, rewrite them with ``SSEGATE_UPDATE_GOLDEN=1 pytest tests/doors/test_golden.py``
and review the diff.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from ssegate.dialects import ai_sdk_ui, anthropic_messages
from ssegate.dialects.base import EncodedStream, EncodedStreams, Encoder, parse_cursor
from ssegate.dialects.openai_chat import ChunkEncoder
from ssegate.log.base import LogEntry, make_entry

GOLDEN = Path(__file__).parent / "golden"
GENERATION_ID = "674f3a10AbCdEfGhIjKlMnOpQrStUv"  # created 2024-12-03
EPOCH = "k3x9"

CASES: dict[str, list[tuple[str, dict[str, object]]]] = {
    "answer": [
        ("start", {"id": GENERATION_ID, "model": "claude-x", "provider": "anthropic"}),
        ("status", {"stage": "model", "model": "claude-x-2025"}),
        ("usage", {"input_tokens": 21, "output_tokens": None}),
        ("thinking", {"delta": "Let me"}),
        ("thinking", {"delta": " think."}),
        ("text", {"delta": "Hello"}),
        ("text", {"delta": ", wörld\n"}),
        ("tool_call", {"phase": "start", "id": "toolu_1", "name": "get_weather", "index": 0}),
        ("tool_call", {"phase": "delta", "id": "toolu_1", "delta": '{"city":'}),
        ("tool_call", {"phase": "delta", "id": "toolu_1", "delta": ' "Paris"}'}),
        ("tool_call", {"phase": "end", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}),
        ("tool_call", {"phase": "start", "id": "toolu_2", "name": "get_time", "index": 1}),
        ("tool_call", {"phase": "end", "id": "toolu_2"}),
        ("usage", {"input_tokens": 21, "output_tokens": 7}),
        ("done", {"finish_reason": "tool_use", "usage": {"input_tokens": 21, "output_tokens": 7}}),
    ],
    "thinking": [
        ("start", {"id": GENERATION_ID, "model": "claude-x", "provider": "anthropic"}),
        ("thinking", {"delta": "Let me"}),
        ("thinking", {"signature": "EqQBCgIYAhIMsig"}),
        ("thinking", {"redacted": "EmwKAhgBEgyredacted"}),
        ("thinking", {"delta": "Again."}),
        ("thinking", {"signature": "EqQBCgIYAhIMsig2"}),
        ("text", {"delta": "Hi"}),
        ("done", {"finish_reason": "stop", "usage": {"input_tokens": 3, "output_tokens": 4}}),
    ],
    "error": [
        ("start", {"id": GENERATION_ID, "model": "gpt-x", "provider": "openai"}),
        ("text", {"delta": "Hel"}),
        ("error", {"code": "upstream_overloaded", "message": "Overloaded", "retryable": True}),
    ],
    "cancelled": [
        ("start", {"id": GENERATION_ID, "model": "demo-1", "provider": "demo"}),
        ("text", {"delta": "Hel"}),
        ("done", {"finish_reason": "cancelled", "reason": "abandoned", "usage": None}),
    ],
}

ENCODERS: dict[str, Callable[[str], Encoder]] = {
    "openai_chat": lambda gid: ChunkEncoder(gid, include_usage=True),
    "anthropic_messages": anthropic_messages.EventEncoder,
    "ai_sdk_ui": ai_sdk_ui.ChunkEncoder,
}


def entries(case: str) -> list[LogEntry]:
    events = CASES[case]
    last = len(events)
    return [
        make_entry(EPOCH, seq, event, orjson.dumps(data).decode(), terminal=seq == last)
        for seq, (event, data) in enumerate(events, start=1)
    ]


def encode(dialect: str, case: str) -> bytes:
    stream = EncodedStream(ENCODERS[dialect](GENERATION_ID))
    return b"".join(b"".join(stream.add(entry)) for entry in entries(case))


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("dialect", sorted(ENCODERS))
def test_same_events_same_bytes(dialect: str, case: str) -> None:
    encoded = encode(dialect, case)
    assert encoded == encode(dialect, case)
    path = GOLDEN / f"{dialect}-{case}.sse"
    if os.environ.get("SSEGATE_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(encoded)
    assert encoded == path.read_bytes()


def test_each_event_is_encoded_once_for_every_viewer_of_a_dialect() -> None:
    calls: list[str] = []

    class Counting(ChunkEncoder):
        def encode(self, event: str, data: dict[str, object]) -> list[tuple[str | None, str]]:
            calls.append(event)
            return super().encode(event, data)

    streams = EncodedStreams()
    first = streams.acquire(GENERATION_ID, "openai_chat", lambda gid: Counting(gid, include_usage=False))
    second = streams.acquire(GENERATION_ID, "openai_chat", lambda gid: Counting(gid, include_usage=False))
    assert first is second
    log = entries("answer")
    bytes_first = [first.add(entry) for entry in log]
    bytes_second = [second.add(entry) for entry in log]
    assert bytes_first == bytes_second
    assert len(calls) == len(log)
    streams.release(GENERATION_ID, "openai_chat")
    streams.release(GENERATION_ID, "openai_chat")
    assert len(streams) == 0


def test_sub_event_ids_resume_inside_one_log_entry() -> None:
    stream = EncodedStream(ChunkEncoder(GENERATION_ID, include_usage=True))
    framed = [stream.add(entry) for entry in entries("answer")]
    done = framed[-1]  # the finish chunk, the usage chunk, [DONE]
    assert len(done) == 3
    assert done[0].startswith(f"id: {EPOCH}:15/0\n".encode())
    assert done[2].startswith(f"id: {EPOCH}:15\n".encode())
    cursor = parse_cursor(f"{EPOCH}:15/0")
    assert cursor is not None
    assert (cursor.after, cursor.partial, cursor.skip) == (f"{EPOCH}:14", f"{EPOCH}:15", 1)
    assert parse_cursor("nonsense") is None
    assert parse_cursor(f"{EPOCH}:3/x") is None
