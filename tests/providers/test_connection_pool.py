"""How many generations one process can stream at once: as many as its settings say.

A streaming call holds its HTTP connection until the answer ends. The vendor SDKs' own pools stop
at 1000 connections, so without ssegate's own limit the 1001st concurrent generation would wait
for a connection, then end with ``upstream_timeout``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import pytest

from ssegate.config import Settings
from ssegate.providers import ProviderConfig, build_provider
from ssegate.providers.base import DEFAULT_MAX_CONNECTIONS, ProviderEvent
from tests.fakes._upstream import FakeUpstream, Faults
from tests.fakes.fake_anthropic import AnthropicScript, FakeAnthropic
from tests.fakes.fake_openai import FakeOpenAI, OpenAIScript
from tests.providers.helpers import ask

SDK_POOL = anthropic.DEFAULT_CONNECTION_LIMITS.max_connections  # 1000, the same in the openai SDK
# Each answer sends one delta, then holds its connection open until the client hangs up.
HELD = Faults(stall_after=1)


def held_upstream(vendor: str) -> FakeUpstream[Any]:
    if vendor == "anthropic":
        return FakeAnthropic(AnthropicScript(text=("held",), faults=HELD))
    return FakeOpenAI(OpenAIScript(text=("held",), faults=HELD))


def config_for(vendor: str, url: str) -> ProviderConfig:
    if vendor == "anthropic":
        return ProviderConfig(anthropic_api_key="test", anthropic_base_url=url, idle_timeout=60.0)
    return ProviderConfig(openai_api_key="test", openai_base_url=url, idle_timeout=60.0)


@pytest.mark.parametrize("vendor", ["anthropic", "openai"])
async def test_a_provider_streams_more_generations_at_once_than_the_sdk_pool_holds(vendor: str) -> None:
    assert SDK_POOL is not None
    assert DEFAULT_MAX_CONNECTIONS > SDK_POOL
    count = SDK_POOL + 1
    async with held_upstream(vendor) as fake:
        provider = build_provider(vendor, config_for(vendor, fake.url))
        streams: list[AsyncIterator[ProviderEvent]] = [provider.stream(ask("hi")) for _ in range(count)]
        try:
            # Every stream's first event: every call holds its own connection at the same time.
            firsts = await asyncio.wait_for(asyncio.gather(*(anext(s) for s in streams)), 45)
            assert len(firsts) == count
            assert len(fake.requests) == count
        finally:
            await asyncio.gather(*(s.aclose() for s in streams), return_exceptions=True)  # type: ignore[attr-defined]
            await provider.aclose()


def test_the_upstream_pool_follows_the_stream_limit_unless_set() -> None:
    assert ProviderConfig.from_settings(Settings()).max_connections == Settings().max_streams_total
    assert ProviderConfig.from_settings(Settings(max_streams_total=25_000)).max_connections == 25_000
    assert ProviderConfig.from_settings(Settings(upstream_max_connections=300)).max_connections == 300
    from_env = Settings.from_env({"SSEGATE_UPSTREAM_MAX_CONNECTIONS": "2000"})
    assert ProviderConfig.from_settings(from_env).max_connections == 2000
    with pytest.raises(ValueError, match="SSEGATE_UPSTREAM_MAX_CONNECTIONS"):
        Settings.from_env({"SSEGATE_UPSTREAM_MAX_CONNECTIONS": "-1"})


def test_spare_connections_come_from_the_environment() -> None:
    assert ProviderConfig.from_settings(Settings()).spare_connections == 1
    from_env = Settings.from_env({"SSEGATE_UPSTREAM_SPARE_CONNECTIONS": "0"})
    assert ProviderConfig.from_settings(from_env).spare_connections == 0
    with pytest.raises(ValueError, match="SSEGATE_UPSTREAM_SPARE_CONNECTIONS"):
        Settings.from_env({"SSEGATE_UPSTREAM_SPARE_CONNECTIONS": "-1"})
