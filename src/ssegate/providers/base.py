"""What every LLM provider adapter produces: a stream of small typed events.

Adapters (``demo``, ``anthropic``, ``openai``) are the only modules that import vendor SDKs. Each
turns one :class:`GenerationRequest` into an async iterator of :data:`ProviderEvent`; the gateway
maps those onto the wire vocabulary and the event log. Closing the iterator (``aclose``, or
cancelling the task consuming it) must close the upstream HTTP request at once: that is how an
abandoned or cancelled generation stops costing tokens.

Failures are raised as :class:`UpstreamError` with a stable ``code``:

==========================  =====================================================  =========
code                        when                                                   retryable
==========================  =====================================================  =========
``upstream_auth``           401/403: missing or wrong API key                      no
``upstream_bad_request``    400/404/422: the provider rejected the request         no
``rate_limited``            429                                                    yes
``upstream_overloaded``     529 / ``overloaded_error`` (also after the first byte)  yes
``upstream_unavailable``    5xx, connection refused                                yes
``upstream_timeout``        no byte from the upstream for ``idle_timeout`` s        yes
``upstream_disconnected``   the upstream closed the stream before it finished       yes
``upstream_error``          any other error event from the provider                 no
``upstream_invalid``        bytes its protocol does not allow (not JSON, wrong shape) yes
==========================  =====================================================  =========
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ssegate.config import Settings

# Defined with every other error (ssegate.errors); named here too, where the adapters look for them.
from ssegate.errors import ConfigurationError as ConfigurationError
from ssegate.errors import UpstreamError as UpstreamError

# The request model lives in ssegate.request; adapters have always imported it from here.
from ssegate.request import GenerationRequest as GenerationRequest
from ssegate.request import Message as Message

# The settings' defaults are the adapters' defaults too: one place says what they are.
_DEFAULTS = Settings()
# Upstream connections one provider may hold at once (one per running generation): the server's
# default stream limit, well above the SDKs' own pool of 1000.
DEFAULT_MAX_CONNECTIONS = _DEFAULTS.max_streams_total


@dataclass(frozen=True, slots=True)
class TextDelta:
    """Answer text, appended as it comes (``text`` on the wire); ``ssegate.producers.Text``."""

    text: str


@dataclass(frozen=True, slots=True)
class ThinkingDelta:
    """Reasoning shown apart from the answer (``thinking``); ``ssegate.producers.Thinking``."""

    text: str


@dataclass(frozen=True, slots=True)
class ThinkingSignature:
    """The signature that closes a thinking block (Anthropic): a client sends it back with the
    thinking when it continues a tool loop with thinking on."""

    signature: str


@dataclass(frozen=True, slots=True)
class RedactedThinking:
    """Thinking the provider sent encrypted (Anthropic's ``redacted_thinking``), to be sent back as is."""

    data: str


@dataclass(frozen=True, slots=True)
class ToolCallStart:
    id: str
    name: str
    index: int = 0


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A fragment of the tool call's JSON input, as the model writes it (not valid JSON alone)."""

    id: str
    partial_json: str


@dataclass(frozen=True, slots=True)
class ToolCallEnd:
    id: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts so far (cumulative, not increments)."""

    input_tokens: int | None = None
    output_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Finished:
    """The upstream finished normally. ``finish_reason`` is normalised:
    ``stop`` | ``length`` | ``tool_use`` | ``content_filter`` | other provider words as they are."""

    finish_reason: str
    model: str | None = None


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """The model that actually answers (sent early, when the provider names it)."""

    model: str


@dataclass(frozen=True, slots=True)
class WireEvent:
    """An event logged as it is: ``status`` and ``data`` from an app's own producer
    (:mod:`ssegate.producers` checks the name and the data)."""

    event: str
    data: dict[str, Any]


ProviderEvent = (
    TextDelta
    | ThinkingDelta
    | ThinkingSignature
    | RedactedThinking
    | ToolCallStart
    | ToolCallDelta
    | ToolCallEnd
    | Usage
    | Finished
    | ModelInfo
    | WireEvent
)


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """Everything the adapters read, in one object: :meth:`from_settings` fills it from the
    settings once (what each field means: :class:`ssegate.config.Settings`), and each adapter reads
    its own fields from it. Built by hand (tests, an app's own producer), it takes the settings'
    defaults."""

    anthropic_api_key: str | None = None
    anthropic_base_url: str | None = None
    anthropic_model: str | None = None
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    openai_model: str | None = None
    demo_ttft: float = _DEFAULTS.demo_ttft
    demo_tokens_per_second: float = _DEFAULTS.demo_tokens_per_second
    demo_answer_tokens: int = 120
    idle_timeout: float = _DEFAULTS.upstream_idle_timeout
    max_retries: int = _DEFAULTS.upstream_max_retries
    # Seconds each attempt waits for the upstream's response headers (0: the SDK's timeout only).
    first_byte_timeout: float = _DEFAULTS.upstream_first_byte_timeout
    # Upstream connections per provider, held one per running generation (HTTP/1.1 streaming).
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    # Idle upstream connections each provider keeps open for the next generations (see _direct).
    spare_connections: int = _DEFAULTS.upstream_spare_connections

    @classmethod
    def from_settings(cls, settings: Settings) -> ProviderConfig:
        """The adapters' part of ``settings``. SSEGATE_MODEL names the default provider's model;
        each request may still name its own."""
        default = settings.default_provider
        return cls(
            anthropic_api_key=settings.anthropic_api_key,
            anthropic_base_url=settings.anthropic_base_url,
            anthropic_model=settings.model if default == "anthropic" else None,
            openai_api_key=settings.openai_api_key,
            openai_base_url=settings.openai_base_url,
            openai_model=settings.model if default == "openai" else None,
            demo_ttft=settings.demo_ttft,
            demo_tokens_per_second=settings.demo_tokens_per_second,
            idle_timeout=settings.upstream_idle_timeout,
            max_retries=settings.upstream_max_retries,
            first_byte_timeout=settings.upstream_first_byte_timeout,
            max_connections=settings.upstream_max_connections or settings.max_streams_total,
            spare_connections=settings.upstream_spare_connections,
        )


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    name: str
    default_model: str
    models: tuple[str, ...] = field(default_factory=tuple)  # empty: any model name is passed through


class Provider(Protocol):
    info: ProviderInfo

    def stream(self, request: GenerationRequest) -> AsyncIterator[ProviderEvent]:
        """Start the upstream call and yield its events. Closing the iterator closes the upstream."""
        ...

    async def aclose(self) -> None:
        """Release the HTTP client."""


@runtime_checkable
class CheckingProvider(Protocol):
    """A provider that says, before anything starts, what in a request it cannot honour."""

    def check(self, request: GenerationRequest) -> None:
        """Raise a 400 (:func:`ssegate.request.unsupported`) naming the first field this provider
        cannot honour; return if it can run the request as asked."""
        ...


def check_request(provider: Provider, request: GenerationRequest) -> None:
    """:meth:`CheckingProvider.check` where the provider has one."""
    check = getattr(provider, "check", None)
    if check is not None:
        check(request)


Deliver = Callable[[ProviderEvent], None]


async def pull_into(events: AsyncIterator[ProviderEvent], deliver: Deliver) -> None:
    """Hand a pulled provider's events to ``deliver``: :meth:`PushingProvider.stream_into` for a
    stream that cannot be pushed. Leaving for any reason closes the iterator, so the upstream."""
    try:
        async for event in events:
            deliver(event)
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


@runtime_checkable
class PushingProvider(Provider, Protocol):
    """A provider that can also hand its events over as the upstream's bytes arrive."""

    async def stream_into(self, request: GenerationRequest, deliver: Deliver) -> None:
        """Run the upstream call, calling ``deliver`` with each event from the socket's callback (no
        task switch per event); return after :class:`Finished`. What ``deliver`` raises ends the
        call and is raised here; so are failures, as :class:`UpstreamError`. Cancelling the caller
        closes the upstream, as closing :meth:`stream`'s iterator does."""
        ...
