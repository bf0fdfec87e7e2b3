"""What both vendors' adapters do the same way, in one suite: failures of the upstream's transport,
closing the upstream when the consumer leaves, bodies split and compressed. Each test runs for
Anthropic and OpenAI (the real SDKs, against fakes speaking each wire format), pulled and pushed.
What is particular to one vendor stays in test_anthropic.py / test_openai.py; tool use is in
test_tool_use.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from ssegate.providers import ProviderConfig, build_provider
from ssegate.providers.base import Finished, Provider, TextDelta
from tests.fakes._upstream import FakeUpstream, Faults
from tests.fakes.fake_anthropic import AnthropicScript, FakeAnthropic
from tests.fakes.fake_openai import FakeOpenAI, OpenAIScript
from tests.providers.helpers import ask, collect, open_stream, text_of
from tests.support.servers import free_port

pytestmark = pytest.mark.usefixtures("reading")

VENDORS = ["anthropic", "openai"]
Build = Callable[..., Provider]


def config(vendor: str, url: str, *, idle_timeout: float = 30.0, max_retries: int = 0) -> ProviderConfig:
    common: dict[str, Any] = {"idle_timeout": idle_timeout, "max_retries": max_retries}
    if vendor == "anthropic":
        return ProviderConfig(anthropic_api_key="sk-ant-test", anthropic_base_url=url, **common)
    return ProviderConfig(openai_api_key="sk-test", openai_base_url=f"{url}/v1", **common)


def script(fake: FakeUpstream[Any], **fields: Any) -> Any:
    return AnthropicScript(**fields) if isinstance(fake, FakeAnthropic) else OpenAIScript(**fields)


def vendor_of(fake: FakeUpstream[Any]) -> str:
    return "anthropic" if isinstance(fake, FakeAnthropic) else "openai"


@pytest.fixture(params=VENDORS)
async def fake(request: pytest.FixtureRequest) -> AsyncIterator[FakeUpstream[Any]]:
    upstream: FakeUpstream[Any] = FakeAnthropic() if request.param == "anthropic" else FakeOpenAI()
    async with upstream:
        yield upstream


@pytest.fixture
async def build(fake: FakeUpstream[Any]) -> AsyncIterator[Build]:
    """Providers for the fake (``idle_timeout``, ``max_retries``), each closed at the end."""
    built: list[Provider] = []

    def make(**options: Any) -> Provider:
        provider = build_provider(vendor_of(fake), config(vendor_of(fake), fake.url, **options))
        built.append(provider)
        return provider

    yield make
    for provider in built:
        await provider.aclose()


# With a retry, the refused first attempt (sent directly, see providers._direct) is retried by the SDK.
@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize("retries", [0, 1])
async def test_connection_refused_is_unavailable(vendor: str, retries: int) -> None:
    provider = build_provider(vendor, config(vendor, f"http://127.0.0.1:{free_port()}", max_retries=retries))
    try:
        events, error = await collect(open_stream(provider, ask("hi")))
    finally:
        await provider.aclose()

    assert events == []
    assert error is not None
    assert (error.code, error.retryable) == ("upstream_unavailable", True)


async def test_a_stalled_upstream_times_out_and_is_closed(fake: FakeUpstream[Any], build: Build) -> None:
    fake.then(script(fake, faults=Faults(stall_after=1)))

    events, error = await collect(open_stream(build(idle_timeout=0.3), ask("hi")))

    assert text_of(events) == "Hello"
    assert error is not None
    assert (error.code, error.retryable) == ("upstream_timeout", True)
    await fake.client_closed_early.wait()


async def test_the_idle_timer_ignores_time_the_consumer_spends(fake: FakeUpstream[Any], build: Build) -> None:
    provider = build(idle_timeout=0.2)
    events = []
    async for event in open_stream(provider, ask("hi")):
        events.append(event)
        if len(events) <= 2:  # hold events longer than the idle timeout: a slow consumer
            await asyncio.sleep(0.3)  # the behaviour under test, not synchronisation

    assert events[-1] == Finished("stop", provider.info.default_model)


async def test_a_dropped_connection_is_disconnected(fake: FakeUpstream[Any], build: Build) -> None:
    fake.then(script(fake, faults=Faults(drop_after=2)))

    events, error = await collect(open_stream(build(), ask("hi")))

    assert text_of(events) == "Hello, world"
    assert error is not None
    assert (error.code, error.retryable) == ("upstream_disconnected", True)


async def test_a_body_ending_before_the_answer_is_disconnected(fake: FakeUpstream[Any], build: Build) -> None:
    fake.then(script(fake, faults=Faults(end_after=1)))

    events, error = await collect(open_stream(build(), ask("hi")))

    assert text_of(events) == "Hello"
    assert error is not None
    assert error.code == "upstream_disconnected"
    assert not any(isinstance(e, Finished) for e in events)


async def test_aclose_mid_stream_closes_the_upstream_connection(
    fake: FakeUpstream[Any], build: Build
) -> None:
    fake.then(script(fake, faults=Faults(stall_after=2)))
    stream = open_stream(build(), ask("hi"))
    received: list[str] = []
    async for event in stream:
        if isinstance(event, TextDelta):
            received.append(event.text)
            if len(received) == 2:
                break
    await stream.aclose()  # type: ignore[attr-defined]

    await fake.client_closed_early.wait()
    assert received == ["Hello", ", world"]
    assert fake.completed == 0


async def test_cancelling_the_consumer_closes_the_upstream_connection(
    fake: FakeUpstream[Any], build: Build
) -> None:
    fake.then(script(fake, faults=Faults(stall_after=1)))
    provider = build()
    first_text = asyncio.Event()

    async def consume() -> None:
        async for event in open_stream(provider, ask("hi")):
            if isinstance(event, TextDelta):
                first_text.set()

    task = asyncio.create_task(consume())
    await first_text.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    await fake.client_closed_early.wait()
    assert fake.completed == 0


async def test_many_deltas_split_across_reads_arrive_whole(fake: FakeUpstream[Any], build: Build) -> None:
    words = tuple(f" w{n}" for n in range(300))
    fake.then(script(fake, text=words))

    events, error = await collect(open_stream(build(), ask("long")))

    assert error is None
    assert text_of(events) == "".join(words)


async def test_a_gzip_compressed_stream_is_decoded(fake: FakeUpstream[Any], build: Build) -> None:
    # A proxy may compress the event stream; the fast raw read must not hand over gzip bytes.
    fake.then(script(fake, faults=Faults(gzip=True)))
    provider = build()

    events, error = await collect(open_stream(provider, ask("hi")))

    assert error is None
    assert text_of(events) == "Hello, world!"
    assert events[-1] == Finished("stop", provider.info.default_model)
