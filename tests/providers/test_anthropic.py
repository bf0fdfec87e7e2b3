"""The Anthropic adapter, driven through the real ``anthropic`` SDK against a fake Messages API."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator

import aiohttp
import anthropic
import pytest
from opentelemetry import trace

from ssegate import _fast
from ssegate.providers import ProviderConfig, build_provider
from ssegate.providers._upstream import body_reader
from ssegate.providers.anthropic import AnthropicProvider
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
from tests.fakes.fake_anthropic import AnthropicScript, FakeAnthropic, ToolUse
from tests.providers.helpers import answers_in_a_row, ask, collect, of_type, open_stream, text_of

API_KEY = "sk-ant-test-key"

# Every test reads the adapter both ways: pulled and pushed (see helpers.READING).
pytestmark = pytest.mark.usefixtures("reading")


@pytest.fixture
async def provider(fake_anthropic: FakeAnthropic) -> AsyncIterator[Provider]:
    provider = build_provider("anthropic", anthropic_config(fake_anthropic.url))
    yield provider
    await provider.aclose()


def anthropic_config(url: str, *, idle_timeout: float = 30.0, max_retries: int = 0) -> ProviderConfig:
    return ProviderConfig(
        anthropic_api_key=API_KEY, anthropic_base_url=url, idle_timeout=idle_timeout, max_retries=max_retries
    )


async def test_anthropic_streams_text_model_usage_and_stop(
    provider: Provider, fake_anthropic: FakeAnthropic
) -> None:
    events, error = await collect(
        open_stream(provider, ask("Say hello", model="claude-test", system="Be brief"))
    )

    assert error is None
    assert events[0] == ModelInfo("claude-test")
    assert text_of(events) == "Hello, world!"
    assert of_type(events, Usage) == [Usage(21, 1), Usage(21, 3)]
    assert events[-1] == Finished("stop", "claude-test")
    sent = fake_anthropic.requests[0]
    assert sent.path == "/v1/messages"
    # The SDK decides how the key travels (x-api-key, or Bearer in newer versions): it must arrive.
    assert API_KEY in (
        sent.headers.get("x-api-key"),
        sent.headers.get("authorization", "").removeprefix("Bearer "),
    )
    assert sent.json() == {
        "model": "claude-test",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Say hello"}],
        "system": "Be brief",
        "stream": True,
    }


async def test_anthropic_uses_the_default_model_when_the_request_names_none(
    provider: Provider, fake_anthropic: FakeAnthropic
) -> None:
    events, _ = await collect(open_stream(provider, ask("hi")))

    assert fake_anthropic.requests[0].json()["model"] == provider.info.default_model
    assert events[0] == ModelInfo(provider.info.default_model)


async def test_anthropic_thinking_comes_first_and_signatures_stay_out(
    provider: Provider, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.then(AnthropicScript(thinking=("Let me", " think."), text=("Done.",)))

    events, error = await collect(open_stream(provider, ask("hard question")))

    assert error is None
    content = [e for e in events if isinstance(e, TextDelta | ThinkingDelta)]
    assert content == [ThinkingDelta("Let me"), ThinkingDelta(" think."), TextDelta("Done.")]


async def test_anthropic_tool_use_streams_start_partial_json_and_end(
    provider: Provider, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.then(AnthropicScript(text=("Checking.",), tool=ToolUse()))

    events, error = await collect(open_stream(provider, ask("weather in Paris?")))

    assert error is None
    tool_events = [e for e in events if isinstance(e, ToolCallStart | ToolCallDelta | ToolCallEnd)]
    # Numbered among the answer's tool calls (the text block before it does not count).
    assert tool_events[0] == ToolCallStart("toolu_01FakeWeather", "get_weather", 0)
    assert tool_events[-1] == ToolCallEnd("toolu_01FakeWeather")
    partial = "".join(e.partial_json for e in of_type(events, ToolCallDelta))
    assert json.loads(partial) == {"location": "Paris, France"}
    assert all(e.id == "toolu_01FakeWeather" for e in of_type(events, ToolCallDelta))
    assert events[-1].finish_reason == "tool_use"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_use"),
        ("stop_sequence", "stop_sequence"),
        ("refusal", "refusal"),
    ],
)
async def test_anthropic_stop_reason_is_normalised(
    provider: Provider, fake_anthropic: FakeAnthropic, stop_reason: str, finish_reason: str
) -> None:
    fake_anthropic.then(AnthropicScript(stop_reason=stop_reason))

    events, _ = await collect(open_stream(provider, ask("hi")))

    assert isinstance(events[-1], Finished)
    assert events[-1].finish_reason == finish_reason


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (400, "upstream_bad_request", False),
        (401, "upstream_auth", False),
        (403, "upstream_auth", False),
        (404, "upstream_bad_request", False),
        (429, "rate_limited", True),
        (500, "upstream_unavailable", True),
        (529, "upstream_overloaded", True),
    ],
)
async def test_anthropic_error_status_before_first_byte_maps_to_code(
    provider: Provider, fake_anthropic: FakeAnthropic, status: int, code: str, retryable: bool
) -> None:
    fake_anthropic.then(AnthropicScript(faults=Faults(status=status)))

    events, error = await collect(open_stream(provider, ask("hi")))

    assert events == []
    assert error is not None
    assert (error.code, error.retryable, error.status) == (code, retryable, status)
    assert "fake" in error.message  # the vendor's own words reach the user


async def test_anthropic_sdk_retries_an_overloaded_status_when_allowed(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.then(AnthropicScript(faults=Faults(status=529)))
    provider = build_provider("anthropic", anthropic_config(fake_anthropic.url, max_retries=1))
    try:
        events, error = await collect(open_stream(provider, ask("hi")))
    finally:
        await provider.aclose()

    assert error is None
    assert text_of(events) == "Hello, world!"
    assert len(fake_anthropic.requests) == 2


async def test_anthropic_overloaded_error_event_after_200_is_retryable_error(
    provider: Provider, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.then(AnthropicScript(faults=Faults(error_after=2)))

    events, error = await collect(open_stream(provider, ask("hi")))

    assert text_of(events) == "Hello, world"
    assert error is not None
    assert (error.code, error.retryable) == ("upstream_overloaded", True)
    assert "overloaded_error" in error.message


async def test_anthropic_unknown_error_event_is_a_final_upstream_error(
    provider: Provider, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.then(AnthropicScript(stream_error_type="mystery_error", faults=Faults(error_after=1)))

    _, error = await collect(open_stream(provider, ask("hi")))

    assert error is not None
    assert (error.code, error.retryable) == ("upstream_error", False)


@pytest.mark.fast_paths(_fast.BODY_PUSH)
async def test_anthropic_sdk_body_is_read_from_aiohttp_buffer(fake_anthropic: FakeAnthropic) -> None:
    # The per-token fast path depends on the SDK's aiohttp transport internals: if an SDK upgrade
    # moves them, this fails instead of the gateway silently getting slower.
    client = anthropic.AsyncAnthropic(
        api_key=API_KEY, base_url=fake_anthropic.url, http_client=anthropic.DefaultAioHttpClient()
    )
    try:
        async with client.messages.with_streaming_response.create(
            model="claude-test", max_tokens=10, messages=[{"role": "user", "content": "hi"}], stream=True
        ) as response:
            read = body_reader(response.http_response)
            assert isinstance(getattr(read, "__self__", None), aiohttp.StreamReader)
            body = b""
            while chunk := await read():
                body += chunk
    finally:
        await client.close()
    assert b"event: message_stop" in body


@pytest.mark.parametrize(
    ("tracer_provider", "env", "spans"),
    [
        (None, None, False),  # nothing would record a span: the SDK builds none
        (trace.NoOpTracerProvider, None, True),  # a configured provider: the SDK's default
        (None, "true", True),  # the SDK's own switch decides
        (trace.NoOpTracerProvider, "false", False),
    ],
)
def test_the_sdk_makes_spans_only_where_something_can_record_them(
    monkeypatch: pytest.MonkeyPatch,
    tracer_provider: type[trace.TracerProvider] | None,
    env: str | None,
    spans: bool,
) -> None:
    if tracer_provider is not None:
        monkeypatch.setattr(trace, "get_tracer_provider", tracer_provider)
    if env is None:
        monkeypatch.delenv("ANTHROPIC_OPEN_TELEMETRY", raising=False)
    else:
        monkeypatch.setenv("ANTHROPIC_OPEN_TELEMETRY", env)
    provider = AnthropicProvider(
        ProviderConfig(anthropic_api_key=API_KEY, anthropic_base_url="http://127.0.0.1:9")
    )
    assert provider._client.open_telemetry["traces"]["enabled"] is spans


async def test_anthropic_answers_one_after_another_reuse_one_connection(
    fake_anthropic: FakeAnthropic,
) -> None:
    # Pushed, the body is read through a protocol put in front of aiohttp's: the connection still
    # goes back to aiohttp's pool and serves the next request. (No spare connection: one is enough.)
    config = dataclasses.replace(anthropic_config(fake_anthropic.url), spare_connections=0)
    provider = build_provider("anthropic", config)
    try:
        await answers_in_a_row(provider, 3)
    finally:
        await provider.aclose()
    assert fake_anthropic.connections_accepted == 1
