"""LLM provider adapters and the one place that builds them from configuration.

Vendor SDKs are imported only when their provider is built, so the demo (and the codec, and the
tests that need neither) never pay for importing them.
"""

from __future__ import annotations

from ssegate.providers.base import (
    ConfigurationError,
    GenerationRequest,
    Message,
    Provider,
    ProviderConfig,
    ProviderEvent,
    ProviderInfo,
    UpstreamError,
)

PROVIDER_NAMES = ("demo", "anthropic", "openai")


def available_providers(config: ProviderConfig | None = None) -> tuple[str, ...]:
    """Providers that can be built with ``config`` (every known name when ``config`` is None)."""
    if config is None:
        return PROVIDER_NAMES
    names = ["demo"]
    if config.anthropic_api_key:
        names.append("anthropic")
    if config.openai_api_key or config.openai_base_url:
        names.append("openai")
    return tuple(names)


def default_provider_name(config: ProviderConfig) -> str:
    """A real model when a key (or an OpenAI-compatible URL) is configured, else the offline demo."""
    if config.anthropic_api_key:
        return "anthropic"
    if config.openai_api_key or config.openai_base_url:
        return "openai"
    return "demo"


def build_provider(name: str, config: ProviderConfig | None = None) -> Provider:
    """The provider called ``name``; :class:`ConfigurationError` when it cannot run as configured."""
    config = config or ProviderConfig()
    if name == "demo":
        from ssegate.providers.demo import DemoProvider

        return DemoProvider(
            ttft=config.demo_ttft,
            tokens_per_second=config.demo_tokens_per_second,
            answer_tokens=config.demo_answer_tokens,
        )
    if name == "anthropic":
        if not config.anthropic_api_key:
            raise ConfigurationError("provider 'anthropic' needs ANTHROPIC_API_KEY")
        from ssegate.providers.anthropic import AnthropicProvider

        return AnthropicProvider(config)
    if name == "openai":
        if not (config.openai_api_key or config.openai_base_url):
            raise ConfigurationError(
                "provider 'openai' needs OPENAI_API_KEY (or OPENAI_BASE_URL for a local compatible server)"
            )
        from ssegate.providers.openai import OpenAIProvider

        return OpenAIProvider(config)
    raise ConfigurationError(f"unknown provider {name!r}; choose one of {', '.join(PROVIDER_NAMES)}")


class ProviderRegistry:
    """One shared instance per provider name (each holds a pooled HTTP client), built on first use."""

    def __init__(self, config: ProviderConfig | None = None) -> None:
        self.config = config or ProviderConfig()
        self._providers: dict[str, Provider] = {}
        # Providers the app brought (its own producers), by name.
        self.registered: dict[str, Provider] = {}

    def get(self, name: str) -> Provider:
        """The provider called ``name``; :class:`ConfigurationError` when it cannot run as configured."""
        provider = self._providers.get(name)
        if provider is None:
            if name not in PROVIDER_NAMES and self.registered:
                names = ", ".join([*available_providers(self.config), *self.registered])
                raise ConfigurationError(f"unknown provider {name!r}; choose one of {names}")
            provider = self._providers[name] = build_provider(name, self.config)
        return provider

    def register(self, provider: Provider) -> None:
        """Run ``provider`` (an app's own producer, see ssegate.producers) under its name."""
        name = provider.info.name
        if name in PROVIDER_NAMES or name in self.registered:
            raise ValueError(f"a provider called {name!r} exists already")
        self.registered[name] = self._providers[name] = provider

    async def aclose(self) -> None:
        """Release every built provider, even if one of them fails to close."""
        providers, self._providers = list(self._providers.values()), {}
        errors: list[BaseException] = []
        for provider in providers:
            try:
                await provider.aclose()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


__all__ = [
    "ConfigurationError",
    "GenerationRequest",
    "Message",
    "Provider",
    "ProviderConfig",
    "ProviderEvent",
    "ProviderInfo",
    "ProviderRegistry",
    "UpstreamError",
    "available_providers",
    "build_provider",
    "default_provider_name",
]
