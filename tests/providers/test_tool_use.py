"""Tool use through both vendors' adapters (the real SDKs) against fakes speaking each vendor's
wire format: several tools, parallel calls with arguments in pieces, a tool result turn with an
image, both ways of reading a provider. One suite, parametrised by vendor."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ssegate.providers import ProviderConfig, build_provider
from ssegate.providers.base import (
    Finished,
    Provider,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
)
from ssegate.request import (
    GenerationRequest,
    ImageBlock,
    Message,
    TextBlock,
    Tool,
    ToolResultBlock,
    ToolUseBlock,
    parse_request,
)
from tests.fakes._upstream import FakeUpstream
from tests.fakes.fake_anthropic import AnthropicScript, FakeAnthropic, ToolUse
from tests.fakes.fake_openai import FakeOpenAI, OpenAIScript, ToolCall
from tests.providers.helpers import collect, of_type, open_stream, text_of
from tests.request.test_parse import PNG

pytestmark = pytest.mark.usefixtures("reading")

TOOLS = (
    Tool("get_weather", {"type": "object", "properties": {"city": {"type": "string"}}}, "Weather in a city"),
    Tool("get_time", {"type": "object", "properties": {"zone": {"type": "string"}}}, "Time in a zone"),
)
# Two calls in one answer, each with its arguments in pieces (as both vendors stream them).
CALLS = (
    ("call_w1", "get_weather", ('{"ci', 'ty": "Pa', 'ris"}')),
    ("call_t2", "get_time", ('{"zo', 'ne": "Europe/', 'Paris"}')),
)


@pytest.fixture(params=["anthropic", "openai"])
async def fake(request: pytest.FixtureRequest) -> AsyncIterator[FakeUpstream[Any]]:
    upstream: FakeUpstream[Any] = FakeAnthropic() if request.param == "anthropic" else FakeOpenAI()
    async with upstream:
        yield upstream


@pytest.fixture
async def provider(fake: FakeUpstream[Any]) -> AsyncIterator[Provider]:
    if isinstance(fake, FakeAnthropic):
        config = ProviderConfig(anthropic_api_key="sk-test", anthropic_base_url=fake.url, max_retries=0)
        built = build_provider("anthropic", config)
    else:
        config = ProviderConfig(openai_api_key="sk-test", openai_base_url=f"{fake.url}/v1", max_retries=0)
        built = build_provider("openai", config)
    yield built
    await built.aclose()


def tool_answer(fake: FakeUpstream[Any], text: tuple[str, ...] = ("Let me look.",)) -> Any:
    if isinstance(fake, FakeAnthropic):
        return AnthropicScript(text=text, tools=tuple(ToolUse(i, n, p) for i, n, p in CALLS))
    return OpenAIScript(text=text, tool_calls=tuple(ToolCall(i, n, p) for i, n, p in CALLS))


def text_answer(fake: FakeUpstream[Any], text: tuple[str, ...]) -> Any:
    return AnthropicScript(text=text) if isinstance(fake, FakeAnthropic) else OpenAIScript(text=text)


QUESTION = Message(
    "user",
    (
        TextBlock("Weather and time in Paris? And what is in this picture?"),
        ImageBlock(media_type="image/png", data=PNG),
    ),
)
ASSISTANT = Message(
    "assistant",
    (
        TextBlock("Let me look."),
        ToolUseBlock("call_w1", "get_weather", {"city": "Paris"}),
        ToolUseBlock("call_t2", "get_time", {"zone": "Europe/Paris"}),
    ),
)
RESULTS = (
    Message("tool", (ToolResultBlock("call_w1", "18 C, cloudy"),)),
    Message("tool", (ToolResultBlock("call_t2", "unknown zone", is_error=True),)),
)


async def test_parallel_tool_calls_stream_in_pieces_then_end_with_tool_use(
    provider: Provider, fake: FakeUpstream[Any]
) -> None:
    fake.then(tool_answer(fake))

    events, error = await collect(open_stream(provider, GenerationRequest((QUESTION,), tools=TOOLS)))

    assert error is None
    assert text_of(events) == "Let me look."
    assert of_type(events, ToolCallStart) == [
        ToolCallStart("call_w1", "get_weather", 0),
        ToolCallStart("call_t2", "get_time", 1),
    ]
    for tool_id, _, parts in CALLS:
        pieces = [e.partial_json for e in of_type(events, ToolCallDelta) if e.id == tool_id]
        assert pieces == list(parts)  # each piece as it came, so a UI can show it growing
    assert {e.id for e in of_type(events, ToolCallEnd)} == {"call_w1", "call_t2"}
    # Every call's pieces come after its start and before its end.
    for tool_id, _, _ in CALLS:
        positions = [i for i, e in enumerate(events) if getattr(e, "id", None) == tool_id]
        assert isinstance(events[positions[0]], ToolCallStart)
        assert isinstance(events[positions[-1]], ToolCallEnd)
    assert isinstance(events[-1], Finished)
    assert events[-1].finish_reason == "tool_use"
    # What the vendor was sent: both tools, in its own shape.
    sent = fake.requests[-1].json()
    names = [t["name"] if "name" in t else t["function"]["name"] for t in sent["tools"]]
    assert names == ["get_weather", "get_time"]


async def test_the_tool_result_turn_is_sent_in_the_vendors_shape_and_answered(
    provider: Provider, fake: FakeUpstream[Any]
) -> None:
    fake.then(text_answer(fake, ("It is ", "18 C in Paris.")))
    request = GenerationRequest((QUESTION, ASSISTANT, *RESULTS), tools=TOOLS)

    events, error = await collect(open_stream(provider, request))

    assert error is None, error
    assert text_of(events) == "It is 18 C in Paris."
    assert isinstance(events[-1], Finished)
    assert events[-1].finish_reason == "stop"
    messages = fake.requests[-1].json()["messages"]
    if isinstance(fake, FakeAnthropic):
        assert [m["role"] for m in messages] == ["user", "assistant", "user"]
        assert messages[0]["content"][1]["source"] == {
            "type": "base64",
            "media_type": "image/png",
            "data": PNG,
        }
        assert messages[2]["content"] == [
            {"type": "tool_result", "tool_use_id": "call_w1", "content": "18 C, cloudy"},
            {"type": "tool_result", "tool_use_id": "call_t2", "content": "unknown zone", "is_error": True},
        ]
    else:
        assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool"]
        assert messages[0]["content"][1] == {
            "type": "image_url",
            "image_url": {"url": f"data:image/png;base64,{PNG}"},
        }
        calls = messages[1]["tool_calls"]
        assert [json.loads(c["function"]["arguments"]) for c in calls] == [
            {"city": "Paris"},
            {"zone": "Europe/Paris"},
        ]
        assert messages[2:] == [
            {"role": "tool", "tool_call_id": "call_w1", "content": "18 C, cloudy"},
            {"role": "tool", "tool_call_id": "call_t2", "content": "Error: unknown zone"},
        ]


async def test_the_fakes_refuse_a_call_without_its_result_as_the_vendors_do(
    provider: Provider, fake: FakeUpstream[Any]
) -> None:
    # Built by hand: the parser would have refused it with a 400 before any call.
    request = GenerationRequest((QUESTION, ASSISTANT, RESULTS[0]), tools=TOOLS)

    events, error = await collect(open_stream(provider, request))

    assert error is not None
    assert error.code == "upstream_bad_request"
    assert "call_t2" in error.message
    assert not of_type(events, TextDelta)


def test_a_parsed_tool_loop_request_equals_the_hand_built_one() -> None:
    body = {
        "tools": [
            {"name": t.name, "description": t.description, "input_schema": t.input_schema} for t in TOOLS
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather and time in Paris? And what is in this picture?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "call_w1", "name": "get_weather", "input": {"city": "Paris"}},
                    {
                        "type": "tool_use",
                        "id": "call_t2",
                        "name": "get_time",
                        "input": {"zone": "Europe/Paris"},
                    },
                ],
            },
            {"role": "tool", "tool_use_id": "call_w1", "content": "18 C, cloudy"},
            {"role": "tool", "tool_use_id": "call_t2", "content": "unknown zone", "is_error": True},
        ],
    }
    assert parse_request(body, max_tokens_limit=4096) == GenerationRequest(
        (QUESTION, ASSISTANT, *RESULTS), tools=TOOLS
    )
