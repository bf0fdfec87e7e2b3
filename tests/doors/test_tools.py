"""Tools through every door: the tools reach the upstream in its vendor's words, and a whole tool
loop (the model calls a tool, the client sends the result back, the model answers with it) runs
with each dialect's own client against the demo model."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import openai

from ssegate.config import Settings
from ssegate.server.app import create_app
from tests.doors.conftest import ssegate_demo
from tests.fakes.fake_anthropic import AnthropicScript, FakeAnthropic, ToolUse
from tests.fakes.fake_openai import FakeOpenAI, OpenAIScript, ToolCall
from tests.support.servers import serve_asgi

QUESTION = "What is 6 * (3 + 4)?"
SCHEMA = {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}
OPENAI_TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "calculator",
            "description": "Evaluate an arithmetic expression",
            "parameters": SCHEMA,
        },
    }
]
ANTHROPIC_TOOLS: list[Any] = [
    {"name": "calculator", "description": "Evaluate an arithmetic expression", "input_schema": SCHEMA}
]


async def test_openai_sdk_tool_loop_against_the_demo_model() -> None:
    async with (
        ssegate_demo() as base_url,
        openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0) as client,
    ):
        messages: list[Any] = [{"role": "user", "content": QUESTION}]
        stream = await client.chat.completions.create(
            model="demo-1", messages=messages, tools=OPENAI_TOOLS, tool_choice="auto", stream=True
        )
        calls: dict[int, dict[str, str]] = {}
        finish = None
        async for chunk in stream:
            for choice in chunk.choices:
                finish = choice.finish_reason or finish
                for call in choice.delta.tool_calls or ():
                    slot = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                    slot["id"] = call.id or slot["id"]
                    if call.function:
                        slot["name"] = call.function.name or slot["name"]
                        slot["arguments"] += call.function.arguments or ""
        assert finish == "tool_calls"
        call = calls[0]
        assert call["name"] == "calculator"
        assert "6" in json.loads(call["arguments"])["expression"]
        messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call["id"],
                        "type": "function",
                        "function": {"name": "calculator", "arguments": call["arguments"]},
                    }
                ],
            }
        )
        messages.append({"role": "tool", "tool_call_id": call["id"], "content": "42"})
        answer = await client.chat.completions.create(model="demo-1", messages=messages, tools=OPENAI_TOOLS)
    assert answer.choices[0].finish_reason == "stop"
    assert "42" in (answer.choices[0].message.content or "")


async def test_anthropic_sdk_tool_loop_against_the_demo_model() -> None:
    async with (
        ssegate_demo() as base_url,
        anthropic.AsyncAnthropic(base_url=base_url, api_key="x", max_retries=0) as client,
    ):
        messages: list[Any] = [{"role": "user", "content": QUESTION}]
        async with client.messages.stream(
            model="demo-1", max_tokens=500, messages=messages, tools=ANTHROPIC_TOOLS
        ) as stream:
            first = await stream.get_final_message()
        assert first.stop_reason == "tool_use"
        use = next(block for block in first.content if block.type == "tool_use")
        assert use.name == "calculator"
        messages.append({"role": "assistant", "content": [b.model_dump() for b in first.content]})
        messages.append(
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "42"}]}
        )
        answer = await client.messages.create(
            model="demo-1", max_tokens=500, messages=messages, tools=ANTHROPIC_TOOLS
        )
    assert answer.stop_reason == "end_turn"
    assert "42" in "".join(b.text for b in answer.content if b.type == "text")


async def test_ai_sdk_tool_loop_against_the_demo_model() -> None:
    tools = ANTHROPIC_TOOLS
    user = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": QUESTION}]}
    async with ssegate_demo() as base_url, httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        first = await http.post("/v1/ui/chat", json={"id": "t1", "messages": [user], "tools": tools})
        chunks = [json.loads(line[6:]) for line in first.text.splitlines() if line.startswith("data: {")]
        call = next(c for c in chunks if c["type"] == "tool-input-available")
        assert call["toolName"] == "calculator"
        assistant = {
            "id": "a1",
            "role": "assistant",
            "parts": [
                {"type": "step-start"},
                {
                    "type": "tool-calculator",
                    "toolCallId": call["toolCallId"],
                    "state": "output-available",
                    "input": call["input"],
                    "output": {"value": 42},
                },
            ],
        }
        second = await http.post(
            "/v1/ui/chat", json={"id": "t1", "messages": [user, assistant], "tools": tools}
        )
    chunks = [json.loads(line[6:]) for line in second.text.splitlines() if line.startswith("data: {")]
    text = "".join(c["delta"] for c in chunks if c["type"] == "text-delta")
    assert "42" in text
    assert chunks[-1] == {"type": "finish", "finishReason": "stop"}


async def test_tools_reach_each_vendor_in_its_own_words() -> None:
    async with FakeOpenAI(
        OpenAIScript(
            text=(), tool_calls=(ToolCall(name="calculator", argument_parts=('{"expression": "1+1"}',)),)
        )
    ) as fake:
        settings = Settings(provider="openai", openai_api_key="x", openai_base_url=f"{fake.url}/v1")
        async with (
            serve_asgi(create_app(settings)) as base_url,
            anthropic.AsyncAnthropic(base_url=base_url, api_key="x", max_retries=0) as client,
        ):
            message = await client.messages.create(
                model="gpt-test",
                max_tokens=100,
                messages=[{"role": "user", "content": QUESTION}],
                tools=ANTHROPIC_TOOLS,
                tool_choice={"type": "tool", "name": "calculator"},
            )
    sent = fake.requests[-1].json()
    assert sent["tools"][0]["function"]["name"] == "calculator"
    assert sent["tools"][0]["function"]["parameters"] == SCHEMA
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "calculator"}}
    assert message.stop_reason == "tool_use"
    assert [b.input for b in message.content if b.type == "tool_use"] == [{"expression": "1+1"}]
    async with FakeAnthropic(
        AnthropicScript(text=(), tool=ToolUse(name="calculator", input_parts=('{"expression": "2"}',)))
    ) as fake_a:
        settings = Settings(provider="anthropic", anthropic_api_key="x", anthropic_base_url=fake_a.url)
        async with (
            serve_asgi(create_app(settings)) as base_url,
            openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0) as oai,
        ):
            completion = await oai.chat.completions.create(
                model="claude-test",
                messages=[{"role": "user", "content": QUESTION}],
                tools=OPENAI_TOOLS,
                tool_choice="required",
            )
    sent = fake_a.requests[-1].json()
    assert sent["tools"][0]["name"] == "calculator"
    assert sent["tools"][0]["input_schema"] == SCHEMA
    assert sent["tool_choice"]["type"] == "any"
    calls = completion.choices[0].message.tool_calls or []
    assert [c.function.arguments for c in calls] == ['{"expression": "2"}']  # type: ignore[union-attr]
