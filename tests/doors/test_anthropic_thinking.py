"""Extended thinking through the Anthropic door: the provider's signatures (and redacted thinking)
reach the official ``anthropic`` SDK, so a tool loop with thinking on can go on through ssegate."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anthropic

from ssegate.config import Settings
from ssegate.server.app import create_app
from tests.fakes.fake_anthropic import THINKING_SIGNATURE, AnthropicScript, FakeAnthropic, ToolUse
from tests.support.servers import serve_asgi

REDACTED = "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP"
TOOLS: list[Any] = [
    {
        "name": "get_weather",
        "description": "The weather in a place",
        "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}},
    }
]
THINKING: Any = {"type": "enabled", "budget_tokens": 1024}
QUESTION: Any = {"role": "user", "content": "What is the weather in Paris?"}


@asynccontextmanager
async def ssegate_before(fake: FakeAnthropic) -> AsyncIterator[anthropic.AsyncAnthropic]:
    settings = Settings(provider="anthropic", anthropic_api_key="sk-ant-test", anthropic_base_url=fake.url)
    async with (
        serve_asgi(create_app(settings)) as base_url,
        anthropic.AsyncAnthropic(base_url=base_url, api_key="unused", max_retries=0, timeout=10) as client,
    ):
        yield client


async def test_a_tool_loop_with_thinking_keeps_the_providers_signatures() -> None:
    first = AnthropicScript(text=(), thinking=("Paris", " weather?"), redacted=REDACTED, tool=ToolUse())
    answer = AnthropicScript(text=("Sunny",), thinking=("It is",))
    async with FakeAnthropic(first) as fake, ssegate_before(fake) as client:
        fake.then(first, answer)
        async with client.messages.stream(
            model="claude-fake", max_tokens=2048, thinking=THINKING, tools=TOOLS, messages=[QUESTION]
        ) as stream:
            final = await stream.get_final_message()
        thinking, redacted, tool_use = final.content
        assert thinking.type == "thinking"
        assert (thinking.thinking, thinking.signature) == ("Paris weather?", THINKING_SIGNATURE)
        assert redacted.type == "redacted_thinking"
        assert redacted.data == REDACTED
        assert tool_use.type == "tool_use"

        # The turn sent back as the SDK built it: the fake refuses an assistant turn with tool_use
        # that does not start with signed thinking, as the API does.
        result: Any = {"type": "tool_result", "tool_use_id": tool_use.id, "content": "Sunny, 21 °C"}
        async with client.messages.stream(
            model="claude-fake",
            max_tokens=2048,
            thinking=THINKING,
            tools=TOOLS,
            messages=[
                QUESTION,
                {"role": "assistant", "content": final.content},
                {"role": "user", "content": [result]},
            ],
        ) as stream:
            second = await stream.get_final_message()
        assert [block.type for block in second.content] == ["thinking", "text"]
        sent = fake.requests[-1].json()["messages"][1]["content"]
        assert sent[0] == {"type": "thinking", "thinking": "Paris weather?", "signature": THINKING_SIGNATURE}
        assert sent[1] == {"type": "redacted_thinking", "data": REDACTED}

        # Not streamed: the same blocks, signed.
        created = await client.messages.create(
            model="claude-fake", max_tokens=2048, thinking=THINKING, tools=TOOLS, messages=[QUESTION]
        )
        assert [block.model_dump(exclude_none=True) for block in created.content[:2]] == [
            {"type": "thinking", "thinking": "Paris weather?", "signature": THINKING_SIGNATURE},
            {"type": "redacted_thinking", "data": REDACTED},
        ]
