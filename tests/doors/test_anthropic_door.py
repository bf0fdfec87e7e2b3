"""The Anthropic Messages door, read by the official ``anthropic`` SDK, in front of each provider."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest
from anthropic.types import Message

from ssegate.dialects.answer import Answer
from tests.doors.conftest import ServerFactory, Upstream, native_answer, ssegate_demo, tool_script

PROMPT = "Say hello /think"
KEYS = "alice:sk-alice-1:generate,subscribe"


def sdk(base_url: str, api_key: str = "unused") -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=base_url, api_key=api_key, max_retries=0, timeout=10)


def blocks_of(message: Message) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for block in message.content:
        if block.type == "text":
            out.append({"type": "text", "text": block.text})
        elif block.type == "thinking":
            out.append({"type": "thinking", "thinking": block.thinking})
        elif block.type == "tool_use":
            out.append({"type": "tool_use", "id": block.id, "name": block.name, "input": block.input})
    return out


def expected(answer: Answer) -> dict[str, Any]:
    stops = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "tool_use": "tool_use"}
    blocks: list[dict[str, Any]] = []
    for block in answer.blocks:
        if block.kind == "text":
            blocks.append({"type": "text", "text": block.text})
        elif block.kind == "thinking":
            blocks.append({"type": "thinking", "thinking": block.text})
        elif block.tool is not None:
            blocks.append(
                {
                    "type": "tool_use",
                    "id": block.tool.id,
                    "name": block.tool.name,
                    "input": block.tool.input(),
                }
            )
    return {
        "content": blocks,
        "stop_reason": stops[answer.finish_reason or "stop"],
        "usage": (answer.input_tokens or 0, answer.output_tokens or 0),
    }


def summary(message: Message) -> dict[str, Any]:
    return {
        "content": blocks_of(message),
        "stop_reason": message.stop_reason,
        "usage": (message.usage.input_tokens, message.usage.output_tokens),
    }


async def test_streamed_message_equals_the_providers(
    upstream: Upstream, ssegate_in_front: ServerFactory
) -> None:
    async with ssegate_in_front() as base_url:
        produced = expected(await native_answer(base_url, PROMPT, system="Be brief"))
        async with sdk(base_url) as client:
            async with client.messages.stream(
                model=upstream.name,
                max_tokens=1024,
                system="Be brief",
                messages=[{"role": "user", "content": PROMPT}],
            ) as stream:
                texts = [text async for text in stream.text_stream]
                final = await stream.get_final_message()
            headers = stream.response.headers
    assert summary(final) == produced
    assert "".join(texts) == "".join(b["text"] for b in produced["content"] if b["type"] == "text")
    assert [b["type"] for b in produced["content"]] == ["thinking", "text"]
    if upstream.name != "demo":
        assert final.content[1].type == "text"
        assert final.content[1].text == "Hello, world!"
    assert final.id == f"msg_{headers['x-generation-id']}"


async def test_created_message_equals_the_providers(
    upstream: Upstream, ssegate_in_front: ServerFactory
) -> None:
    async with ssegate_in_front() as base_url:
        produced = expected(await native_answer(base_url, PROMPT))
        async with sdk(base_url) as client:
            created = await client.messages.create(
                model=upstream.name, max_tokens=1024, messages=[{"role": "user", "content": PROMPT}]
            )
    assert summary(created) == produced
    assert created.type == "message"
    assert created.role == "assistant"


async def test_tool_use_streams_as_input_json_deltas(
    upstream: Upstream, ssegate_in_front: ServerFactory
) -> None:
    prompt = "What is the weather in Paris? /tool"
    if upstream.fake is not None:
        upstream.then(tool_script(upstream.name), tool_script(upstream.name), tool_script(upstream.name))
    async with ssegate_in_front() as base_url:
        produced = expected(await native_answer(base_url, prompt))
        async with sdk(base_url) as client:
            async with client.messages.stream(
                model=upstream.name, max_tokens=1024, messages=[{"role": "user", "content": prompt}]
            ) as stream:
                kinds = [event.type async for event in stream]
                final = await stream.get_final_message()
            created = await client.messages.create(
                model=upstream.name, max_tokens=1024, messages=[{"role": "user", "content": prompt}]
            )
    assert any(b["type"] == "tool_use" for b in produced["content"])
    assert summary(final) == produced
    assert summary(created) == produced
    assert final.stop_reason == "tool_use"
    assert "input_json" in kinds  # the SDK saw the arguments grow
    if upstream.name == "openai":
        assert [b.name for b in final.content if b.type == "tool_use"] == ["get_weather", "get_time"]


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"top_k": 5}, "top_k"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0].type"),
        (
            {"tool_choice": {"type": "auto", "disable_parallel_tool_use": True}},
            "tool_choice.disable_parallel_tool_use",
        ),
    ],
)
async def test_unsupported_parameters_are_refused_in_anthropics_shape(
    extra: dict[str, Any], field: str
) -> None:
    async with ssegate_demo() as base_url, sdk(base_url) as client:
        with pytest.raises(anthropic.BadRequestError) as raised:
            await client.messages.create(
                model="demo-1", max_tokens=100, messages=[{"role": "user", "content": "hi"}], extra_body=extra
            )
    body = raised.value.body
    assert isinstance(body, dict)
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["field"] == field
    assert body["error"]["message"]


async def test_x_api_key_carries_a_ssegate_key() -> None:
    async with ssegate_demo(api_keys=KEYS) as base_url:
        async with sdk(base_url, "sk-wrong") as client:
            with pytest.raises(anthropic.AuthenticationError) as raised:
                await client.messages.create(
                    model="demo-1", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
                )
            body = raised.value.body
            assert isinstance(body, dict)
            assert body["error"]["type"] == "authentication_error"
        async with sdk(base_url, "sk-alice-1") as client:
            created = await client.messages.create(
                model="demo-1", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
            )
    assert created.content
