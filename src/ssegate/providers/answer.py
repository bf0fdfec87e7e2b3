"""One streamed answer read two ways, for every vendor: a sans-IO :class:`Answer` and its driver.

A vendor's :class:`Answer` is a state machine with no IO, like the SSE codec: body chunks in, as
the upstream sent them; provider events out, through the ``emit`` callback it is given (no list
or generator per chunk on the per-token path). ``done`` turns true at the answer's last event;
a mid-stream error is raised after the events before it were emitted.

:class:`AnswerAdapter` is the one driver: it feeds an :class:`Answer` from the socket's callback
(push, :meth:`_push_handlers`) or from a task reading the body (pull, :meth:`_pull`). A vendor's
adapter says only how to send its request (``_open``) and which :class:`Answer` reads its body.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Any, Protocol

from ssegate.providers._upstream import (
    BodyPush,
    ChunkHandler,
    EndHandler,
    IdleReader,
    SSEAdapter,
    body_reader,
    disconnected_error,
)
from ssegate.providers.base import Deliver, ProviderEvent, UpstreamError

Emit = Callable[[ProviderEvent], None]


class Answer(Protocol):
    """One answer's body, chunks in and provider events out."""

    done: bool

    def feed(self, chunk: bytes, emit: Emit) -> None:
        """Emit the chunk's events in order; raise :class:`UpstreamError` for an error the
        upstream reported (after emitting the events before it). Sets ``done`` at the last one."""
        ...

    def end(self, emit: Emit) -> None:
        """The body ended: emit what completes the answer, or raise ``upstream_disconnected``."""
        ...


class AnswerAdapter(SSEAdapter):
    """An SDK-backed adapter whose body an :class:`Answer` reads, pushed or pulled."""

    def _answer(self) -> Answer:
        raise NotImplementedError

    def _push_handlers(self, push: BodyPush, deliver: Deliver) -> tuple[ChunkHandler, EndHandler]:
        answer = self._answer()
        feed = answer.feed

        def handle(chunk: bytes) -> None:
            feed(chunk, deliver)
            if answer.done:
                push.finish()

        def at_end() -> None:
            answer.end(deliver)
            push.finish()

        return handle, at_end

    async def _pull(self, response: Any) -> AsyncGenerator[ProviderEvent, None]:
        """The answer's events, read by this task chunk by chunk."""
        answer = self._answer()
        events: list[ProviderEvent] = []
        emit = events.append
        reader = IdleReader(body_reader(response.http_response), self._idle_timeout)
        try:
            while not answer.done:
                try:
                    chunk = await reader.next()
                except UpstreamError:
                    raise
                except Exception as exc:  # the transport broke: a reset or a truncated chunked body
                    raise disconnected_error(f"{type(exc).__name__}: {exc}") from exc
                # Whatever feeding raises (an error the upstream reported, or garbage the parsing
                # chokes on, which the gateway names upstream_invalid) comes after the events the
                # chunk held before it, as when pushed: nothing the upstream sent is lost.
                error: Exception | None = None
                try:
                    if chunk is None:
                        answer.end(emit)
                        answer.done = True
                    else:
                        answer.feed(chunk, emit)
                except Exception as exc:
                    error = exc
                for event in events:
                    yield event
                events.clear()
                if error is not None:
                    raise error
        finally:
            reader.close()
