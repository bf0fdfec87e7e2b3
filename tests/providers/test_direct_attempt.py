"""A call's first attempt sent directly with the SDK's own prepared request (providers._direct).

What the upstream receives must be what the SDK would have sent, and everything but a 2xx answer
must end as the SDK would end it: its retries (one attempt already made), its errors.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
from opentelemetry import trace

from ssegate import _fast
from ssegate.providers import ProviderConfig, build_provider
from ssegate.providers.anthropic import AnthropicProvider
from ssegate.providers.base import GenerationRequest, Provider
from ssegate.providers.openai import OpenAIProvider
from tests.fakes._upstream import FakeUpstream, Faults
from tests.fakes.fake_anthropic import AnthropicScript, FakeAnthropic
from tests.fakes.fake_openai import FakeOpenAI, OpenAIScript
from tests.providers.helpers import answers_in_a_row, ask, collect, open_stream, text_of

pytestmark = pytest.mark.usefixtures("reading")

VENDORS = ["anthropic", "openai"]
API_KEY = "sk-test-key"
UNREACHABLE = ProviderConfig(anthropic_api_key=API_KEY, anthropic_base_url="http://127.0.0.1:9")


def config(vendor: str, url: str, *, max_retries: int = 0, spares: int = 1) -> ProviderConfig:
    common: dict[str, Any] = {"max_retries": max_retries, "spare_connections": spares}
    if vendor == "anthropic":
        return ProviderConfig(anthropic_api_key=API_KEY, anthropic_base_url=url, **common)
    return ProviderConfig(openai_api_key=API_KEY, openai_base_url=f"{url}/v1", **common)


@pytest.fixture(params=VENDORS)
async def fake(request: pytest.FixtureRequest) -> AsyncIterator[FakeUpstream[Any]]:
    upstream: FakeUpstream[Any] = FakeAnthropic() if request.param == "anthropic" else FakeOpenAI()
    async with upstream:
        yield upstream


def vendor_of(fake: FakeUpstream[Any]) -> str:
    return "anthropic" if isinstance(fake, FakeAnthropic) else "openai"


def script(fake: FakeUpstream[Any], faults: Faults) -> Any:
    return AnthropicScript(faults=faults) if isinstance(fake, FakeAnthropic) else OpenAIScript(faults=faults)


async def sdk_call(provider: Provider, request: GenerationRequest) -> None:
    """The same call as the provider's, made by the SDK itself through the provider's own client."""
    assert isinstance(provider, AnthropicProvider | OpenAIProvider)
    text = request.messages[0].content
    if isinstance(provider, AnthropicProvider):
        call = provider._client.messages.with_streaming_response.create(
            model=request.model or provider.info.default_model,
            max_tokens=request.max_tokens,
            messages=[{"role": "user", "content": text}],
            system=request.system or "",
            stream=True,
        )
    else:
        call = provider._client.chat.completions.with_streaming_response.create(
            model=request.model or provider.info.default_model,
            messages=[{"role": "system", "content": request.system or ""}, {"role": "user", "content": text}],
            max_tokens=request.max_tokens,
            stream=True,
            stream_options={"include_usage": True},
        )
    async with call as response:
        await response.read()


async def test_the_direct_attempt_sends_what_the_sdk_sends(fake: FakeUpstream[Any]) -> None:
    provider = build_provider(vendor_of(fake), config(vendor_of(fake), fake.url))
    request = ask("Say hello ü", model="model-test", system="Be brief")
    try:
        _, error = await collect(open_stream(provider, request))
        assert error is None
        await sdk_call(provider, request)
    finally:
        await provider.aclose()

    direct, by_sdk = fake.requests
    assert (direct.method, direct.path) == (by_sdk.method, by_sdk.path)
    # The same bytes: every header with its value, and the body (UTF-8 as is, the SDK's order).
    assert direct.headers == by_sdk.headers
    assert direct.body == by_sdk.body


@pytest.mark.fast_paths(_fast.DIRECT_ATTEMPT)
async def test_after_the_first_call_the_sdk_builds_no_request(
    fake: FakeUpstream[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = build_provider(vendor_of(fake), config(vendor_of(fake), fake.url))
    assert isinstance(provider, AnthropicProvider | OpenAIProvider)
    built: list[Any] = []
    build = provider._client._build_request

    def counting_build(*args: Any, **kwargs: Any) -> Any:
        built.append(args)
        return build(*args, **kwargs)

    monkeypatch.setattr(provider._client, "_build_request", counting_build)
    try:
        await answers_in_a_row(provider, 3)
    finally:
        await provider.aclose()

    assert len(fake.requests) == 3
    assert len(built) == 1  # the prepared request, once


@pytest.mark.parametrize(("retries", "failures", "answered"), [(2, 2, True), (1, 2, False), (1, 1, True)])
async def test_a_retryable_status_is_retried_by_the_sdk_with_the_retries_left(
    fake: FakeUpstream[Any], retries: int, failures: int, answered: bool
) -> None:
    status = 529 if isinstance(fake, FakeAnthropic) else 503
    fake.then(*[script(fake, Faults(status=status))] * failures)
    provider = build_provider(vendor_of(fake), config(vendor_of(fake), fake.url, max_retries=retries))
    try:
        events, error = await collect(open_stream(provider, ask("hi")))
    finally:
        await provider.aclose()

    # Never more attempts than the SDK's own 1 + max_retries.
    assert len(fake.requests) == min(failures + 1, retries + 1)
    if answered:
        assert error is None
        assert text_of(events) == "Hello, world!"
    else:
        assert error is not None
        assert (error.retryable, error.status) == (True, status)
        assert "fake" in error.message  # the vendor's words, from the SDK's own error


@pytest.mark.fast_paths(_fast.DIRECT_ATTEMPT)
def test_spans_leave_every_attempt_to_the_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_OPEN_TELEMETRY", raising=False)
    assert (
        AnthropicProvider(
            ProviderConfig(anthropic_api_key=API_KEY, anthropic_base_url="http://127.0.0.1:9")
        )._call.direct
        is not None
    )
    # Something can record spans: the SDK makes each call, so that each attempt has its span.
    monkeypatch.setattr(trace, "get_tracer_provider", trace.NoOpTracerProvider)
    assert (
        AnthropicProvider(
            ProviderConfig(anthropic_api_key=API_KEY, anthropic_base_url="http://127.0.0.1:9")
        )._call.direct
        is None
    )


@pytest.mark.fast_paths(_fast.DIRECT_ATTEMPT)
async def test_a_spare_connection_waits_for_the_next_call(fake: FakeUpstream[Any]) -> None:
    # Two calls at once need two connections (HTTP/1.1): the second finds one open already.
    held = Faults(stall_after=1)  # one delta, then the answer holds its connection
    fake.then(script(fake, held), script(fake, held))
    provider = build_provider(vendor_of(fake), config(vendor_of(fake), fake.url, spares=1))
    first = open_stream(provider, ask("hi"))
    second = open_stream(provider, ask("hi"))
    try:
        await anext(first)
        # While only the first call runs, the spare is opened beside it.
        await asyncio.wait_for(fake.until_accepted(2), 10)
        await anext(second)
        calls = [request.connection for request in fake.requests]
        assert calls == [1, 2]  # the second call went out on the spare
    finally:
        await first.aclose()  # type: ignore[attr-defined]
        await second.aclose()  # type: ignore[attr-defined]
        await provider.aclose()


@pytest.mark.fast_paths(_fast.DIRECT_ATTEMPT, _fast.UPSTREAM_LANE)
async def test_a_malformed_chunk_ends_the_answer_at_once(fake: FakeUpstream[Any]) -> None:
    # aiohttp refuses the chunk and closes the connection; the body's reader must hear of it then,
    # not when the idle timer (here far longer than the test allows) gives up on a silent upstream
    fake.then(script(fake, Faults(garble_after=1)))
    settings = dataclasses.replace(config(vendor_of(fake), fake.url), idle_timeout=60.0)
    provider = build_provider(vendor_of(fake), settings)
    try:
        async with asyncio.timeout(10):
            events, error = await collect(open_stream(provider, ask("hi")))
    finally:
        await provider.aclose()

    assert text_of(events) == "Hello"
    assert error is not None
    assert (error.code, error.retryable) == ("upstream_disconnected", True)
