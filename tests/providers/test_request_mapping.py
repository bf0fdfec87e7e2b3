"""The request model out to each vendor: the body each API is sent, and that the direct path
sends the same bytes as the SDK for a request with everything in it."""

from __future__ import annotations

from typing import Any

import pytest

from ssegate.errors import RequestError
from ssegate.providers import ProviderConfig, anthropic_request, build_provider, openai_request
from ssegate.providers.anthropic import AnthropicProvider
from ssegate.providers.openai import OpenAIProvider
from ssegate.request import GenerationRequest, parse_request
from tests.fakes.fake_anthropic import FakeAnthropic
from tests.fakes.fake_openai import FakeOpenAI
from tests.providers.helpers import collect
from tests.request.test_parse import CLOCK, PNG, full_body


def agent_request(**changes: Any) -> GenerationRequest:
    body = full_body()
    for name in ("temperature", "top_p", "thinking", "reasoning_effort", "tool_choice"):
        body.pop(name)
    body.update(changes)
    return parse_request(body, max_tokens_limit=4096)


def test_the_anthropic_body() -> None:
    request = agent_request(
        max_tokens=2000, thinking={"budget_tokens": 1024}, tool_choice="auto", reasoning_effort="high"
    )
    anthropic_request.check(request)

    body = anthropic_request.body(request, "claude-x")

    assert list(body) == sorted(body)  # the SDK's order
    assert body == {
        "max_tokens": 2000,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What time is it in Paris? And what is this?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me check."},
                    {
                        "type": "tool_use",
                        "id": "call_1",
                        "name": "get_time",
                        "input": {"zone": "Europe/Paris"},
                    },
                    {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {"zone": "UTC"}},
                ],
            },
            # Both tool messages are one user turn of results.
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "12:00"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": "no clock", "is_error": True},
                ],
            },
        ],
        "model": "claude-x",
        "output_config": {"effort": "high"},
        "stop_sequences": ["END"],
        "stream": True,
        "system": "Be brief.\n\nAnswer in English.",
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "tool_choice": {"type": "auto"},
        "tools": [CLOCK],
    }


def test_anthropic_puts_the_users_words_after_tool_results_in_the_same_turn() -> None:
    body = full_body()
    body["messages"].append({"role": "user", "content": "Thanks, go on."})
    request = parse_request(body, max_tokens_limit=4096)

    messages = anthropic_request.body(request, "m")["messages"]

    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert [b["type"] for b in messages[-1]["content"]] == ["tool_result", "tool_result", "text"]
    assert messages[-1]["content"][-1] == {"type": "text", "text": "Thanks, go on."}


def test_the_openai_body() -> None:
    request = agent_request(
        temperature=0.3,
        top_p=0.8,
        reasoning_effort="minimal",
        tool_choice={"type": "tool", "name": "get_time"},
    )
    openai_request.check(request)

    body = openai_request.body(request, "gpt-x")

    assert body == {
        "model": "gpt-x",
        "stream": True,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "system", "content": "Answer in English."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What time is it in Paris? And what is this?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                ],
            },
            {
                "role": "assistant",
                "content": "Let me check.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": '{"zone":"Europe/Paris"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": '{"zone":"UTC"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "12:00"},
            {"role": "tool", "tool_call_id": "call_2", "content": "Error: no clock"},
        ],
        "max_tokens": 200,
        "reasoning_effort": "minimal",
        "stop": ["END"],
        "stream_options": {"include_usage": True},
        "temperature": 0.3,
        "tool_choice": {"type": "function", "function": {"name": "get_time"}},
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_time",
                    "description": CLOCK["description"],
                    "parameters": CLOCK["input_schema"],
                },
            }
        ],
        "top_p": 0.8,
    }


@pytest.mark.parametrize(("choice", "sent"), [("auto", "auto"), ("none", "none"), ("any", "required")])
def test_openai_tool_choice_words(choice: str, sent: str) -> None:
    request = agent_request(tool_choice=choice)
    assert openai_request.body(request, "m")["tool_choice"] == sent


def test_an_image_in_a_tool_result_is_refused_by_openai_only() -> None:
    body = full_body()
    del body["thinking"]
    body["messages"][3]["content"][0]["content"] = [
        {"type": "text", "text": "a chart"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
    ]
    request = parse_request(body, max_tokens_limit=4096)
    anthropic_request.check(request.__class__(**{**_fields(request), "temperature": None, "top_p": None}))
    with pytest.raises(RequestError) as refused:
        openai_request.check(request)
    assert refused.value.extra == {
        "field": "messages[3].content[0].content[1]",
        "provider": "openai",
    }


def _fields(request: GenerationRequest) -> dict[str, Any]:
    return {name: getattr(request, name) for name in request.__dataclass_fields__}


@pytest.mark.parametrize("vendor", ["anthropic", "openai"])
async def test_the_direct_path_sends_what_the_sdk_sends_for_a_full_request(vendor: str) -> None:
    fake: FakeAnthropic | FakeOpenAI = FakeAnthropic() if vendor == "anthropic" else FakeOpenAI()
    async with fake:
        if vendor == "anthropic":
            config = ProviderConfig(anthropic_api_key="sk-test", anthropic_base_url=fake.url, max_retries=0)
            # With thinking on, the assistant's turn starts with its signed thinking (Anthropic's rule).
            messages = full_body()["messages"]
            messages[2]["content"].insert(0, {"type": "thinking", "thinking": "Hm.", "signature": "c2ln"})
            messages[2]["content"].insert(1, {"type": "redacted_thinking", "data": "b3BhcXVl"})
            request = agent_request(
                max_tokens=2000,
                thinking={"budget_tokens": 1024},
                tool_choice="auto",
                reasoning_effort="low",
                messages=messages,
            )
        else:
            config = ProviderConfig(openai_api_key="sk-test", openai_base_url=f"{fake.url}/v1", max_retries=0)
            request = agent_request(temperature=0.3, top_p=0.8, reasoning_effort="low", tool_choice="any")
        provider = build_provider(vendor, config)
        assert isinstance(provider, AnthropicProvider | OpenAIProvider)
        try:
            _, error = await collect(provider.stream(request))
            assert error is None
            mapping = anthropic_request if vendor == "anthropic" else openai_request
            body = mapping.body(request, request.model or provider.info.default_model)
            if isinstance(provider, AnthropicProvider):
                call: Any = provider._client.messages.with_streaming_response.create(**body)
            else:
                call = provider._client.chat.completions.with_streaming_response.create(**body)
            async with call as response:
                await response.read()
        finally:
            await provider.aclose()
        direct, by_sdk = fake.requests
    assert direct.headers == by_sdk.headers
    assert direct.body == by_sdk.body
    assert direct.json() == body
