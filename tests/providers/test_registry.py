"""Building providers from configuration: which exist, which need a key, and what the error says."""

from __future__ import annotations

import pytest

import ssegate.providers
from ssegate.providers import (
    ConfigurationError,
    ProviderConfig,
    ProviderRegistry,
    available_providers,
    build_provider,
    default_provider_name,
)
from ssegate.providers.demo import DemoProvider


def test_providers_all_is_sorted() -> None:
    assert ssegate.providers.__all__ == sorted(ssegate.providers.__all__)


def test_registry_anthropic_without_key_names_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="provider 'anthropic' needs ANTHROPIC_API_KEY"):
        build_provider("anthropic", ProviderConfig())


def test_registry_openai_without_key_or_url_names_the_variables() -> None:
    with pytest.raises(ConfigurationError, match=r"OPENAI_API_KEY.*OPENAI_BASE_URL"):
        build_provider("openai", ProviderConfig())


def test_registry_unknown_provider_lists_the_known_ones() -> None:
    with pytest.raises(
        ConfigurationError, match="unknown provider 'gemini'; choose one of demo, anthropic, openai"
    ):
        build_provider("gemini")


def test_registry_configuration_error_is_a_400() -> None:
    assert ConfigurationError.status_code == 400


@pytest.mark.parametrize(
    ("config", "available", "default"),
    [
        (ProviderConfig(), ("demo",), "demo"),
        (ProviderConfig(anthropic_api_key="k"), ("demo", "anthropic"), "anthropic"),
        (ProviderConfig(openai_base_url="http://127.0.0.1:11434/v1"), ("demo", "openai"), "openai"),
        (
            ProviderConfig(anthropic_api_key="k", openai_api_key="k"),
            ("demo", "anthropic", "openai"),
            "anthropic",
        ),
    ],
)
def test_registry_available_and_default_follow_the_keys(
    config: ProviderConfig, available: tuple[str, ...], default: str
) -> None:
    assert available_providers(config) == available
    assert default_provider_name(config) == default
    assert available_providers() == ("demo", "anthropic", "openai")


async def test_registry_builds_each_configured_provider_with_its_settings() -> None:
    config = ProviderConfig(
        anthropic_api_key="k",
        anthropic_model="claude-custom",
        openai_base_url="http://127.0.0.1:1/v1",
        openai_model="llama3",
        demo_ttft=0.0,
        demo_tokens_per_second=7.0,
        demo_answer_tokens=11,
    )
    registry = ProviderRegistry(config)
    try:
        demo = registry.get("demo")
        assert isinstance(demo, DemoProvider)
        assert (demo.ttft, demo.tokens_per_second, demo.answer_tokens) == (0.0, 7.0, 11)
        assert registry.get("anthropic").info.default_model == "claude-custom"
        assert registry.get("openai").info.default_model == "llama3"
        assert registry.get("demo") is demo  # one shared instance (and HTTP pool) per provider
    finally:
        await registry.aclose()


async def test_registry_get_raises_configuration_error_for_missing_key() -> None:
    registry = ProviderRegistry(ProviderConfig())
    with pytest.raises(ConfigurationError):
        registry.get("anthropic")
    await registry.aclose()
