"""Helpers for provider tests: build a request, drain a stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeVar

from ssegate.providers.base import GenerationRequest, Message, ProviderEvent, TextDelta, UpstreamError

T = TypeVar("T")


def ask(text: str, *, model: str | None = None, system: str | None = None) -> GenerationRequest:
    return GenerationRequest(messages=(Message("user", text),), model=model, system=system)


async def collect(stream: AsyncIterator[ProviderEvent]) -> tuple[list[ProviderEvent], UpstreamError | None]:
    """Every event the stream yields, and the UpstreamError that ended it (None: it finished)."""
    events: list[ProviderEvent] = []
    try:
        async for event in stream:
            events.append(event)
    except UpstreamError as exc:
        return events, exc
    return events, None


def text_of(events: list[ProviderEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def of_type(events: list[ProviderEvent], kind: type[T]) -> list[T]:
    return [e for e in events if isinstance(e, kind)]
