"""A call's first attempt sent directly with the SDK's own prepared request (providers._direct).

What the upstream receives must be what the SDK would have sent, and everything but a 2xx answer
must end as the SDK would end it: its retries (one attempt already made), its errors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from opentelemetry import trace

from ssegate.providers import build_provider
from ssegate.providers.anthropic import AnthropicProvider
from ssegate.providers.base import Provider
from tests.fakes._upstream import Faults
from tests.fakes.fake_anthropic import AnthropicScript, FakeAnthropic
from tests.providers.helpers import ask, collect, open_stream, text_of
from tests.providers.test_anthropic import API_KEY, anthropic_config
from tests.support.servers import free_port

pytestmark = pytest.mark.usefixtures("reading")

OVERLOADED = AnthropicScript(faults=Faults(status=529))


@pytest.fixture
async def provider(fake_anthropic: FakeAnthropic) -> AsyncIterator[AnthropicProvider]:
    provider = AnthropicProvider(api_key=API_KEY, base_url=fake_anthropic.url, max_retries=0)
    yield provider
    await provider.aclose()


async def test_the_direct_attempt_sends_what_the_sdk_sends(
    provider: AnthropicProvider, fake_anthropic: FakeAnthropic
) -> None:
    request = ask("Say hello ü", model="claude-test", system="Be brief")
    _, error = await collect(open_stream(provider, request))
    assert error is None
    # The same call made by the SDK itself, through the same client.
    async with provider._client.messages.with_streaming_response.create(
        model="claude-test",
        max_tokens=request.max_tokens,
        messages=[{"role": "user", "content": "Say hello ü"}],
        system="Be brief",
        stream=True,
    ) as response:
        await response.read()

    direct, by_sdk = fake_anthropic.requests
    assert (direct.method, direct.path) == (by_sdk.method, by_sdk.path)
    # The same bytes: every header with its value, and the body (UTF-8 as is, compact).
    assert direct.headers == by_sdk.headers
    assert direct.body == by_sdk.body


async def test_after_the_first_call_the_sdk_builds_no_request(
    provider: AnthropicProvider, fake_anthropic: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[Any] = []
    build = provider._client._build_request

    def counting_build(*args: Any, **kwargs: Any) -> Any:
        built.append(args)
        return build(*args, **kwargs)

    monkeypatch.setattr(provider._client, "_build_request", counting_build)
    for _ in range(3):
        events, error = await collect(open_stream(provider, ask("hi")))
        assert error is None
        assert text_of(events) == "Hello, world!"

    assert len(fake_anthropic.requests) == 3
    assert len(built) == 1  # the prepared request, once


@pytest.mark.parametrize(("retries", "overloaded", "answered"), [(2, 2, True), (1, 2, False), (1, 1, True)])
async def test_a_retryable_status_is_retried_by_the_sdk_with_the_retries_left(
    fake_anthropic: FakeAnthropic, retries: int, overloaded: int, answered: bool
) -> None:
    fake_anthropic.then(*[OVERLOADED] * overloaded)
    config = anthropic_config(fake_anthropic.url, max_retries=retries)
    provider: Provider = build_provider("anthropic", config)
    try:
        events, error = await collect(open_stream(provider, ask("hi")))
    finally:
        await provider.aclose()

    # Never more attempts than the SDK's own 1 + max_retries.
    assert len(fake_anthropic.requests) == min(overloaded + 1, retries + 1)
    if answered:
        assert error is None
        assert text_of(events) == "Hello, world!"
    else:
        assert error is not None
        assert (error.code, error.retryable, error.status) == ("upstream_overloaded", True, 529)
        assert "fake" in error.message  # the vendor's words, from the SDK's own error


async def test_a_refused_connection_is_retried_by_the_sdk_then_unavailable() -> None:
    provider = build_provider("anthropic", anthropic_config(f"http://127.0.0.1:{free_port()}", max_retries=1))
    try:
        events, error = await collect(open_stream(provider, ask("hi")))
    finally:
        await provider.aclose()

    assert events == []
    assert error is not None
    assert (error.code, error.retryable) == ("upstream_unavailable", True)


def test_spans_leave_every_attempt_to_the_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_OPEN_TELEMETRY", raising=False)
    assert AnthropicProvider(api_key=API_KEY, base_url="http://127.0.0.1:9")._direct is not None
    # Something can record spans: the SDK makes each call, so that each attempt has its span.
    monkeypatch.setattr(trace, "get_tracer_provider", trace.NoOpTracerProvider)
    assert AnthropicProvider(api_key=API_KEY, base_url="http://127.0.0.1:9")._direct is None
