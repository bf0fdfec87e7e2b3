"""The OpenAI adapter, driven through the real ``openai`` SDK against a fake Chat Completions API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from ssegate.providers import ProviderConfig, build_provider
from ssegate.providers.base import (
    Finished,
    ModelInfo,
    Provider,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from tests.fakes._upstream import Faults
from tests.fakes.fake_openai import FakeOpenAI, OpenAIScript, ToolCall
from tests.providers.helpers import ask, collect, of_type, open_stream, text_of

API_KEY = "sk-test-key"

# Every test reads the adapter both ways: pulled and pushed (see helpers.READING).
pytestmark = pytest.mark.usefixtures("reading")


def openai_config(
    url: str, *, idle_timeout: float = 30.0, api_key: str | None = API_KEY, max_retries: int = 0
) -> ProviderConfig:
    return ProviderConfig(
        openai_api_key=api_key,
        openai_base_url=f"{url}/v1",
        idle_timeout=idle_timeout,
        max_retries=max_retries,
    )


@pytest.fixture
async def provider(fake_openai: FakeOpenAI) -> AsyncIterator[Provider]:
    provider = build_provider("openai", openai_config(fake_openai.url))
    yield provider
    await provider.aclose()


async def test_openai_streams_text_model_usage_and_stop(provider: Provider, fake_openai: FakeOpenAI) -> None:
    events, error = await collect(
        open_stream(provider, ask("Say hello", model="gpt-test", system="Be brief"))
    )

    assert error is None
    assert events[0] == ModelInfo("gpt-test")
    assert text_of(events) == "Hello, world!"
    assert of_type(events, Usage) == [Usage(9, 3)]
    assert events[-2:] == [Usage(9, 3), Finished("stop", "gpt-test")]
    sent = fake_openai.requests[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    body = sent.json()
    assert body["messages"] == [
        {"role": "system", "content": "Be brief"},
        {"role": "user", "content": "Say hello"},
    ]
    assert (body["stream"], body["stream_options"], body["max_tokens"]) == (
        True,
        {"include_usage": True},
        1024,
    )


async def test_openai_local_server_needs_no_key(fake_openai: FakeOpenAI) -> None:
    provider = build_provider("openai", openai_config(fake_openai.url, api_key=None))
    try:
        events, error = await collect(open_stream(provider, ask("hi", model="llama3")))
    finally:
        await provider.aclose()

    assert error is None
    assert text_of(events) == "Hello, world!"


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
async def test_openai_reasoning_deltas_become_thinking(
    provider: Provider, fake_openai: FakeOpenAI, field: str
) -> None:
    fake_openai.then(OpenAIScript(reasoning=("Let me", " think."), reasoning_field=field, text=("Done.",)))

    events, error = await collect(open_stream(provider, ask("hard question")))

    assert error is None
    content = [e for e in events if isinstance(e, TextDelta | ThinkingDelta)]
    assert content == [ThinkingDelta("Let me"), ThinkingDelta(" think."), TextDelta("Done.")]


async def test_openai_parallel_tool_calls_stream_start_arguments_and_end(
    provider: Provider, fake_openai: FakeOpenAI
) -> None:
    calls = (
        ToolCall(),
        ToolCall(id="call_Second02", name="get_time", argument_parts=('{"tz": ', '"CET"}')),
    )
    fake_openai.then(OpenAIScript(text=(), tool_calls=calls))

    events, error = await collect(open_stream(provider, ask("weather and time in Paris?")))

    assert error is None
    assert of_type(events, ToolCallStart) == [
        ToolCallStart("call_FakeWeather01", "get_weather", 0),
        ToolCallStart("call_Second02", "get_time", 1),
    ]
    arguments: dict[str, str] = {}
    for delta in of_type(events, ToolCallDelta):
        arguments[delta.id] = arguments.get(delta.id, "") + delta.partial_json
    assert {k: json.loads(v) for k, v in arguments.items()} == {
        "call_FakeWeather01": {"location": "Paris"},
        "call_Second02": {"tz": "CET"},
    }
    assert of_type(events, ToolCallEnd) == [ToolCallEnd("call_FakeWeather01"), ToolCallEnd("call_Second02")]
    # Every end comes after that call's last argument fragment, and the finish comes last.
    last_delta = max(i for i, e in enumerate(events) if isinstance(e, ToolCallDelta))
    first_end = min(i for i, e in enumerate(events) if isinstance(e, ToolCallEnd))
    assert last_delta < first_end
    assert events[-1] == Finished("tool_use", provider.info.default_model)


@pytest.mark.parametrize(
    ("finish_reason", "normalised"),
    [
        ("stop", "stop"),
        ("length", "length"),
        ("content_filter", "content_filter"),
        ("tool_calls", "tool_use"),
    ],
)
async def test_openai_finish_reason_is_normalised(
    provider: Provider, fake_openai: FakeOpenAI, finish_reason: str, normalised: str
) -> None:
    fake_openai.then(OpenAIScript(finish_reason=finish_reason))

    events, _ = await collect(open_stream(provider, ask("hi")))

    assert isinstance(events[-1], Finished)
    assert events[-1].finish_reason == normalised


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (400, "upstream_bad_request", False),
        (401, "upstream_auth", False),
        (403, "upstream_auth", False),
        (404, "upstream_bad_request", False),
        (429, "rate_limited", True),
        (500, "upstream_unavailable", True),
        (503, "upstream_unavailable", True),
    ],
)
async def test_openai_error_status_before_first_byte_maps_to_code(
    provider: Provider, fake_openai: FakeOpenAI, status: int, code: str, retryable: bool
) -> None:
    fake_openai.then(OpenAIScript(faults=Faults(status=status)))

    events, error = await collect(open_stream(provider, ask("hi")))

    assert events == []
    assert error is not None
    assert (error.code, error.retryable, error.status) == (code, retryable, status)
    assert "fake" in error.message


async def test_openai_error_chunk_after_200_is_an_upstream_error(
    provider: Provider, fake_openai: FakeOpenAI
) -> None:
    fake_openai.then(OpenAIScript(stream_error_type="invalid_request_error", faults=Faults(error_after=2)))

    events, error = await collect(open_stream(provider, ask("hi")))

    assert text_of(events) == "Hello, world"
    assert error is not None
    assert (error.code, error.retryable) == ("upstream_error", False)


async def test_openai_server_error_chunk_after_200_is_retryable(
    provider: Provider, fake_openai: FakeOpenAI
) -> None:
    fake_openai.then(OpenAIScript(faults=Faults(error_after=1)))

    _, error = await collect(open_stream(provider, ask("hi")))

    assert error is not None
    assert (error.code, error.retryable) == ("upstream_unavailable", True)


async def test_openai_server_without_done_line_still_finishes(
    provider: Provider, fake_openai: FakeOpenAI
) -> None:
    fake_openai.then(OpenAIScript(send_done=False))

    events, error = await collect(open_stream(provider, ask("hi")))

    assert error is None
    assert events[-1] == Finished("stop", provider.info.default_model)
