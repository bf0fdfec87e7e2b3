"""Helpers for provider tests: build a request, drain a stream."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TypeVar, cast

from ssegate.providers.base import (
    GenerationRequest,
    Message,
    Provider,
    ProviderEvent,
    PushingProvider,
    TextDelta,
    UpstreamError,
)

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


_END = object()

# How the adapter suites read a provider: "pull" (stream, as over Redis) or "push" (stream_into,
# from the socket's callback, as over the embedded log). Set by the ``reading`` fixture.
READING = {"mode": "pull"}


def open_stream(provider: Provider, request: GenerationRequest) -> AsyncIterator[ProviderEvent]:
    if READING["mode"] == "push":
        assert isinstance(provider, PushingProvider)
        return pushed(provider, request)
    return provider.stream(request)


async def pushed(provider: PushingProvider, request: GenerationRequest) -> AsyncIterator[ProviderEvent]:
    """``provider.stream_into`` read as an iterator: its events in order, its error raised; closing
    the iterator cancels the call, as closing ``stream`` closes it."""
    queue: asyncio.Queue[object] = asyncio.Queue()

    async def run() -> None:
        try:
            await provider.stream_into(request, queue.put_nowait)
        except Exception as exc:
            queue.put_nowait(exc)
        else:
            queue.put_nowait(_END)

    task = asyncio.create_task(run())
    try:
        while (item := await queue.get()) is not _END:
            if isinstance(item, Exception):
                raise item
            yield cast(ProviderEvent, item)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def answers_in_a_row(provider: Provider, count: int) -> None:
    """Ask ``count`` times, one answer after another; each must be the fakes' whole default answer."""
    for _ in range(count):
        events, error = await collect(open_stream(provider, ask("hi")))
        assert error is None
        assert text_of(events) == "Hello, world!"
