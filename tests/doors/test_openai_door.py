"""The OpenAI Chat Completions door, read by the official ``openai`` SDK, in front of each provider."""

from __future__ import annotations

import json
from typing import Any

import openai
from openai.types.chat import ChatCompletionChunk

from ssegate.dialects.answer import Answer
from tests.doors.conftest import ServerFactory, Upstream, native_answer, tool_script

PROMPT = "Say hello /think"


def sdk(base_url: str, api_key: str = "unused") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=api_key, max_retries=0, timeout=10)


def fold_chunks(chunks: list[ChatCompletionChunk]) -> dict[str, Any]:
    """What an app builds from the chunks: text, reasoning, tool calls by index, finish, usage."""
    text, reasoning, finish, usage = "", "", None, None
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        if chunk.usage is not None:
            usage = (chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
        for choice in chunk.choices:
            delta = choice.delta
            text += delta.content or ""
            reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
            for call in delta.tool_calls or ():
                slot = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                if call.id:
                    slot["id"] = call.id
                if call.function and call.function.name:
                    slot["name"] = call.function.name
                if call.function and call.function.arguments:
                    slot["arguments"] += call.function.arguments
            finish = choice.finish_reason or finish
    return {
        "text": text,
        "reasoning": reasoning,
        "tool_calls": [calls[i] for i in sorted(calls)],
        "finish_reason": finish,
        "usage": usage,
    }


def expected(answer: Answer) -> dict[str, Any]:
    finish = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "tool_use": "tool_calls"}
    return {
        "text": answer.text,
        "reasoning": answer.thinking,
        "tool_calls": [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in answer.tool_calls],
        "finish_reason": finish[answer.finish_reason or "stop"],
        "usage": (answer.input_tokens or 0, answer.output_tokens or 0),
    }


async def test_streamed_answer_equals_the_providers(
    upstream: Upstream, ssegate_in_front: ServerFactory
) -> None:
    async with ssegate_in_front() as base_url:
        produced = expected(await native_answer(base_url, PROMPT, system="Be brief"))
        async with sdk(base_url) as client:
            stream = await client.chat.completions.create(
                model=upstream.name,
                messages=[{"role": "system", "content": "Be brief"}, {"role": "user", "content": PROMPT}],
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [chunk async for chunk in stream]
            headers = stream.response.headers
    got = fold_chunks(chunks)
    assert got == produced
    assert got["text"]
    assert got["reasoning"]
    if upstream.name != "demo":
        assert got["text"] == "Hello, world!"
        assert got["reasoning"] == "Let me think."
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert {c.id for c in chunks} == {f"chatcmpl-{headers['x-generation-id']}"}
    assert all(c.object == "chat.completion.chunk" for c in chunks)


async def test_not_streamed_answer_equals_the_providers(
    upstream: Upstream, ssegate_in_front: ServerFactory
) -> None:
    async with ssegate_in_front() as base_url:
        produced = expected(await native_answer(base_url, PROMPT))
        async with sdk(base_url) as client:
            completion = await client.chat.completions.create(
                model=upstream.name, messages=[{"role": "user", "content": PROMPT}]
            )
    choice = completion.choices[0]
    assert completion.object == "chat.completion"
    assert choice.message.content == produced["text"]
    assert (choice.message.model_extra or {}).get("reasoning_content") == produced["reasoning"]
    assert choice.finish_reason == produced["finish_reason"]
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == produced["usage"]


async def test_tool_calls_stream_with_their_index(
    upstream: Upstream, ssegate_in_front: ServerFactory
) -> None:
    prompt = "What is the weather in Paris? /tool"
    if upstream.fake is not None:
        upstream.then(tool_script(upstream.name), tool_script(upstream.name))
    async with ssegate_in_front() as base_url:
        produced = expected(await native_answer(base_url, prompt))
        async with sdk(base_url) as client:
            stream = await client.chat.completions.create(
                model=upstream.name, messages=[{"role": "user", "content": prompt}], stream=True
            )
            got = fold_chunks([chunk async for chunk in stream])
    assert produced["tool_calls"], "the provider was scripted to call a tool"
    assert got["tool_calls"] == produced["tool_calls"]
    assert got["finish_reason"] == "tool_calls"
    for call in got["tool_calls"]:
        json.loads(call["arguments"])  # whole JSON once the pieces are joined
    if upstream.name == "openai":
        assert [c["name"] for c in got["tool_calls"]] == ["get_weather", "get_time"]


async def test_not_streamed_tool_calls(upstream: Upstream, ssegate_in_front: ServerFactory) -> None:
    prompt = "What is the weather in Paris? /tool"
    if upstream.fake is not None:
        upstream.then(tool_script(upstream.name), tool_script(upstream.name))
    async with ssegate_in_front() as base_url:
        produced = expected(await native_answer(base_url, prompt))
        async with sdk(base_url) as client:
            completion = await client.chat.completions.create(
                model=upstream.name, messages=[{"role": "user", "content": prompt}]
            )
    calls = completion.choices[0].message.tool_calls or []
    assert [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments} for c in calls] == (  # type: ignore[union-attr]
        produced["tool_calls"]
    )
    assert completion.choices[0].finish_reason == "tool_calls"
