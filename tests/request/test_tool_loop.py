"""A multi-turn tool loop through POST /v1/generations, as an agent app runs it: ask with tools,
read the calls off the stream, run them, send the results, read the answer. Against the demo
model and both vendors' fakes (the real SDKs underneath)."""

from __future__ import annotations

import ast
import operator
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from ssegate.providers.demo_tools import arguments_for, choose_tool
from ssegate.request import GenerationRequest, Message, Tool, ToolChoice
from tests.fakes._upstream import FakeUpstream
from tests.fakes.fake_anthropic import AnthropicScript, FakeAnthropic, ToolUse
from tests.fakes.fake_openai import FakeOpenAI, OpenAIScript, ToolCall
from tests.server.conftest import ServerFactory, ssegate_server
from tests.support.sse import Received, read_stream

__all__ = ["ssegate_server"]

CALCULATOR = {
    "name": "calculator",
    "description": "Evaluate an arithmetic expression",
    "input_schema": {
        "type": "object",
        "properties": {"expression": {"type": "string", "description": "e.g. 2 * (3 + 4)"}},
        "required": ["expression"],
    },
}
CLOCK = {
    "name": "get_time",
    "description": "The current time in a time zone",
    "input_schema": {
        "type": "object",
        "properties": {"zone": {"type": "string"}, "format": {"type": "string", "enum": ["24h", "12h"]}},
        "required": ["zone"],
    },
}
_OPERATORS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def calculate(expression: str) -> str:
    """The tool, as the app runs it: arithmetic only."""

    def walk(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.BinOp):
            return _OPERATORS[type(node.op)](walk(node.left), walk(node.right))
        raise ValueError("not arithmetic")

    return str(walk(ast.parse(expression, mode="eval").body))


def tool_calls(received: Received) -> list[dict[str, Any]]:
    """The whole calls (``end`` events) of an answer."""
    return [c for c in received.data("tool_call") if c["phase"] == "end"]


async def ask(client: httpx.AsyncClient, body: dict[str, Any]) -> Received:
    created = await client.post("/v1/generations", json=body)
    assert created.status_code == 201, created.text
    return await read_stream(client, "GET", created.json()["events_url"])


async def run_tool_loop(
    client: httpx.AsyncClient, provider: str
) -> tuple[list[Received], list[dict[str, Any]]]:
    """Ask, run every call, send the results, until the model answers; every turn's stream and the
    final conversation."""
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "What is 6 * (3 + 4)? Please calculate it."}
    ]
    turns: list[Received] = []
    for _ in range(4):
        received = await ask(
            client, {"provider": provider, "tools": [CALCULATOR, CLOCK], "messages": messages}
        )
        turns.append(received)
        done = received.data("done")[0]
        if done["finish_reason"] != "tool_use":
            return turns, messages
        calls = tool_calls(received)
        content: list[dict[str, Any]] = [{"type": "text", "text": received.text}] if received.text else []
        content += [
            {"type": "tool_use", "id": c["id"], "name": c["name"], "input": c["input"]} for c in calls
        ]
        messages.append({"role": "assistant", "content": content})
        for call in calls:
            assert call["name"] == "calculator"
            messages.append(
                {"role": "tool", "tool_use_id": call["id"], "content": calculate(call["input"]["expression"])}
            )
    raise AssertionError("the tool loop did not end")


async def test_the_demo_runs_a_tool_loop_to_its_end(ssegate_server: ServerFactory) -> None:
    async with ssegate_server() as client:
        turns, messages = await run_tool_loop(client, "demo")

    assert len(turns) == 2
    first, last = turns
    calls = tool_calls(first)
    assert [c["name"] for c in calls] == ["calculator"]
    assert calls[0]["input"] == {"expression": "6 * (3 + 4)"}
    # The arguments grew on the stream before the whole call.
    deltas = "".join(c["delta"] for c in first.data("tool_call") if c["phase"] == "delta")
    assert deltas == '{"expression": "6 * (3 + 4)"}'
    assert messages[-1] == {"role": "tool", "tool_use_id": calls[0]["id"], "content": "42"}
    assert "42" in last.text
    assert last.data("done")[0]["finish_reason"] == "stop"


@pytest.fixture(params=["anthropic", "openai"])
async def fake(request: pytest.FixtureRequest) -> AsyncIterator[FakeUpstream[Any]]:
    upstream: FakeUpstream[Any] = FakeAnthropic() if request.param == "anthropic" else FakeOpenAI()
    async with upstream:
        yield upstream


async def test_a_tool_loop_through_each_vendor(
    ssegate_server: ServerFactory, fake: FakeUpstream[Any]
) -> None:
    parts = ('{"expre', 'ssion": "6 * ', '(3 + 4)"}')
    if isinstance(fake, FakeAnthropic):
        fake.then(
            AnthropicScript(text=("Calculating.",), tool=ToolUse("toolu_01Calc", "calculator", parts)),
            AnthropicScript(text=("It is ", "42.")),
        )
        settings = {"anthropic_api_key": "sk-test", "anthropic_base_url": fake.url, "provider": "anthropic"}
        provider = "anthropic"
    else:
        fake.then(
            OpenAIScript(text=(), tool_calls=(ToolCall("call_Calc01", "calculator", parts),)),
            OpenAIScript(text=("It is ", "42.")),
        )
        settings = {"openai_api_key": "sk-test", "openai_base_url": f"{fake.url}/v1", "provider": "openai"}
        provider = "openai"

    async with ssegate_server(upstream_max_retries=0, **settings) as client:
        turns, _ = await run_tool_loop(client, provider)

    assert [t.data("done")[0]["finish_reason"] for t in turns] == ["tool_use", "stop"]
    assert tool_calls(turns[0])[0]["input"] == {"expression": "6 * (3 + 4)"}
    assert turns[1].text == "It is 42."
    # The second request carried the call and its result, in the vendor's shape (the fakes refuse
    # a result without its call, as the vendors do).
    second = fake.requests[-1].json()["messages"]
    if isinstance(fake, FakeAnthropic):
        assert second[-1]["content"] == [
            {"type": "tool_result", "tool_use_id": "toolu_01Calc", "content": "42"}
        ]
    else:
        assert second[-1] == {"role": "tool", "tool_call_id": "call_Calc01", "content": "42"}


TOOLS = tuple(Tool(t["name"], t["input_schema"], t["description"]) for t in (CALCULATOR, CLOCK))


@pytest.mark.parametrize(
    ("prompt", "choice", "tool"),
    [
        ("What is 2 + 2?", None, "calculator"),
        ("Calculate the sum please", None, "calculator"),
        ("What time is it in Tokyo?", None, "get_time"),
        ("Tell me about event streams", None, None),
        ("Tell me about event streams", ToolChoice("any"), "calculator"),
        ("What is 2 + 2?", ToolChoice("none"), None),
        ("What is 2 + 2?", ToolChoice("tool", "get_time"), "get_time"),
    ],
)
def test_the_demo_picks_the_tool_the_prompt_asks_for(
    prompt: str, choice: ToolChoice | None, tool: str | None
) -> None:
    request = GenerationRequest((Message("user", prompt),), tools=TOOLS, tool_choice=choice)
    chosen = choose_tool(request, prompt)
    assert (chosen.name if chosen else None) == tool


def test_the_demo_fills_arguments_that_fit_the_schema() -> None:
    clock = TOOLS[1]
    assert arguments_for(clock, "What time is it in Tokyo?") == {"zone": "Tokyo", "format": "24h"}
    assert arguments_for(clock, "What time is it in 12h?") == {"zone": "UTC", "format": "12h"}
    typed = Tool(
        "book",
        {
            "type": "object",
            "properties": {
                "seats": {"type": "integer", "minimum": 1, "maximum": 4},
                "window": {"type": "boolean"},
                "class": {"enum": ["economy", "business"]},
                "names": {"type": "array", "items": {"type": "string"}},
                "note": {"type": "string", "maxLength": 5},
            },
            "required": ["seats", "window", "class", "names", "note"],
        },
    )
    assert arguments_for(typed, "Book 9 business seats") == {
        "seats": 4,
        "window": True,
        "class": "business",
        "names": ["Book 9 business seats"],
        "note": "Book ",
    }


@pytest.mark.parametrize("send_thinking_back", [True, False])
async def test_an_anthropic_tool_loop_with_thinking_sends_the_signed_thinking_back(
    ssegate_server: ServerFactory, send_thinking_back: bool
) -> None:
    parts = ('{"expression": ', '"6 * (3 + 4)"}')
    async with FakeAnthropic() as fake:
        fake.then(
            AnthropicScript(
                thinking=("Use the ", "calculator."), text=(), tool=ToolUse("toolu_01C", "calculator", parts)
            ),
            AnthropicScript(text=("42.",)),
        )
        settings = {"anthropic_api_key": "sk-test", "anthropic_base_url": fake.url, "upstream_max_retries": 0}
        question = {"role": "user", "content": "What is 6 * (3 + 4)?"}
        base = {
            "provider": "anthropic",
            "tools": [CALCULATOR],
            "max_tokens": 2048,
            "thinking": {"budget_tokens": 1024},
        }
        async with ssegate_server(**settings) as client:
            first = await ask(client, {**base, "messages": [question]})
            thinking = first.data("thinking")
            text = "".join(d.get("delta", "") for d in thinking)
            signatures = [d["signature"] for d in thinking if "signature" in d]
            call = tool_calls(first)[0]
            content: list[dict[str, Any]] = [
                {"type": "tool_use", "id": call["id"], "name": call["name"], "input": call["input"]}
            ]
            if send_thinking_back:
                content.insert(0, {"type": "thinking", "thinking": text, "signature": signatures[0]})
            messages = [
                question,
                {"role": "assistant", "content": content},
                {"role": "tool", "tool_use_id": call["id"], "content": "42"},
            ]
            if send_thinking_back:
                second = await ask(client, {**base, "messages": messages})
            else:
                refused = await client.post("/v1/generations", json={**base, "messages": messages})

    assert text == "Use the calculator."
    assert len(signatures) == 1
    if send_thinking_back:
        assert second.text == "42."
        sent = fake.requests[-1].json()["messages"][1]["content"][0]
        assert sent == {"type": "thinking", "thinking": "Use the calculator.", "signature": signatures[0]}
    else:
        # What the real API says when the signed thinking is left out: the upstream refused the
        # start before its first event, so the POST itself answers with the upstream's status class.
        assert refused.status_code == 502, refused.text
        assert refused.json()["error"]["code"] == "upstream_bad_request"
        assert "thinking" in refused.json()["error"]["message"]
