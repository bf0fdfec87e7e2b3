"""Stream your own agent's output through ssegate: a producer is an async generator (or a function
given an emitter) of small typed events.

::

    from ssegate.producers import Generation, Status, Text, ToolCall, Usage, producer

    @producer("my-agent")
    async def my_agent(generation: Generation) -> AsyncIterator[Event]:
        yield Status("searching", progress=0.2)
        yield ToolCall("call_1", "search", {"q": generation.prompt})
        yield Text("Here is what I found...")
        yield Usage(input_tokens=120, output_tokens=48)

Register it (``create_app(settings, producers=[my_agent])`` or ``mount(..., producers=[...])``)
and ``POST /v1/generations`` with ``"provider": "my-agent"`` runs it; or start it from your own
route with :func:`start`. Either way it gets what a built-in provider gets: its events go to the
event log (so viewers resume exactly, anywhere, also over Redis), a cancel or an abandoned
generation cancels it with ``CancelledError`` at its ``await`` (so its ``finally`` runs), an
exception becomes one ``error`` event, and returning ends the generation ``done``
(``finish_reason`` ``stop``, or what a :class:`Finish` said).

Errors: raise :class:`ProducerError` with a ``code`` of your own for an ``error`` event that says
why (its message is shown to viewers); any other exception is logged with its traceback and
viewers get ``error {code: "producer_failed"}`` without the details.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias, cast

import orjson

from ssegate.errors import ProducerError as ProducerError  # one tree for every error
from ssegate.gateway import CURRENT_GENERATION, Gateway, GenerationInfo
from ssegate.providers.base import (
    Finished,
    GenerationRequest,
    Message,
    ProviderEvent,
    ProviderInfo,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    UpstreamError,
    WireEvent,
)
from ssegate.providers.base import Usage as Usage  # the same event as the built-in providers'

logger = logging.getLogger("ssegate.producers")

# A producer that never awaits would hold the event loop for as long as it yields: give the loop a
# turn this often (other streams' writes, cancels, the lease ticker).
_YIELD_EVERY = 256
# Events an emitter-style producer may be ahead of the log (it then waits at ``emit``).
_EMITTER_BUFFER = 256


# The same events as the built-in providers', under the names a producer writes.
Text = TextDelta
Thinking = ThinkingDelta


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A whole tool call: ``tool_call`` ``start``, its input as JSON, ``end``."""

    id: str
    name: str
    input: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Status:
    """Where the producer is (``status``): a stage name, an optional line for people, a progress
    from 0 to 1."""

    stage: str
    message: str | None = None
    progress: float | None = None


@dataclass(frozen=True, slots=True)
class Data:
    """Anything else the page needs (``data`` ``{name, value}``): citations, a chart, a form.
    ``value`` must be JSON-ready."""

    name: str
    value: Any


@dataclass(frozen=True, slots=True)
class Finish:
    """End now with this ``finish_reason`` (returning is ``Finish("stop")``)."""

    reason: str = "stop"


Event: TypeAlias = Text | Thinking | ToolCall | Status | Data | Usage | Finish


@dataclass(frozen=True, slots=True)
class Generation:
    """What a producer is asked for: the request (messages, model, system, max_tokens), and the
    generation it runs for (id, owner, the app's metadata)."""

    id: str
    request: GenerationRequest
    owner: str
    metadata: Mapping[str, Any]

    @property
    def prompt(self) -> str:
        """The last user message's text."""
        return self.request.messages[-1].text if self.request.messages else ""


class Emitter:
    """Hands an emitter-style producer's events to ssegate: ``await emit(Text(...))`` or the
    shortcuts. Waits while the log is more than a few hundred events behind."""

    def __init__(self, channel: _Channel) -> None:
        self._channel = channel

    async def __call__(self, event: Event) -> None:
        if not isinstance(event, _EVENT_TYPES):
            raise TypeError(f"a producer emits ssegate.producers events, not {event!r}")
        await self._channel.put(event)

    async def text(self, text: str) -> None:
        await self(Text(text))

    async def thinking(self, text: str) -> None:
        await self(Thinking(text))

    async def status(self, stage: str, message: str | None = None, progress: float | None = None) -> None:
        await self(Status(stage, message, progress))

    async def tool_call(self, id: str, name: str, input: Mapping[str, Any]) -> None:
        await self(ToolCall(id, name, input))

    async def data(self, name: str, value: Any) -> None:
        await self(Data(name, value))

    async def usage(self, input_tokens: int | None = None, output_tokens: int | None = None) -> None:
        await self(Usage(input_tokens, output_tokens))


IteratorProducer = Callable[[Generation], AsyncIterator[Event]]
EmitterProducer = Callable[[Generation, Emitter], Awaitable[None]]
ProducerFunction = IteratorProducer | EmitterProducer

_EVENT_TYPES = (Text, Thinking, ToolCall, Status, Data, Usage, Finish)


class Producer:
    """An app's producer as ssegate's gateway runs it (a provider without an upstream of its own).

    Build one with :func:`producer`; ``name`` is what ``POST /v1/generations`` names as
    ``provider``, ``model`` what the generation reports as its model.
    """

    def __init__(self, function: ProducerFunction, *, name: str, model: str = "") -> None:
        if not name or name in ("demo", "anthropic", "openai"):
            raise ValueError(f"a producer needs a name of its own, not {name!r}")
        self.function = function
        self.emits = _takes_emitter(function)
        self.info = ProviderInfo(name=name, default_model=model or name)

    def __repr__(self) -> str:
        return f"Producer({self.info.name!r})"

    def stream(self, request: GenerationRequest) -> AsyncIterator[ProviderEvent]:
        info = CURRENT_GENERATION.get()
        if info is None:  # run outside a gateway (a test calling it directly)
            info = GenerationInfo("", self.info.name, request.model or self.info.default_model, "", {})
        generation = Generation(info.id, request, info.owner, info.metadata)
        return self._provider_events(generation)

    async def aclose(self) -> None:
        """Nothing held: the producer's own resources are its own."""

    async def _provider_events(self, generation: Generation) -> AsyncIterator[ProviderEvent]:
        events: AsyncIterator[Event]
        if self.emits:
            events = _from_emitter(cast(EmitterProducer, self.function), generation)
        else:
            events = cast(IteratorProducer, self.function)(generation)
        count = 0
        reason = "stop"
        try:
            async for event in events:
                if isinstance(event, Finish):
                    reason = event.reason
                    break
                for provider_event in _to_provider_events(event):
                    yield provider_event
                count += 1
                if count % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)
        except UpstreamError:
            raise
        except Exception as exc:
            logger.exception("producer %s failed (generation %s)", self.info.name, generation.id)
            raise UpstreamError(
                "producer_failed", f"the producer failed ({type(exc).__name__})", retryable=False
            ) from exc
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()
        yield Finished(reason)


def producer(name: str, *, model: str = "") -> Callable[[ProducerFunction], Producer]:
    """Decorator: an async generator function ``(Generation) -> events``, or an async function
    ``(Generation, Emitter) -> None``, as a :class:`Producer` called ``name``."""

    def wrap(function: ProducerFunction) -> Producer:
        return Producer(function, name=name, model=model)

    return wrap


async def start(
    gateway: Gateway,
    producer: Producer,
    request: GenerationRequest | str,
    *,
    owner: str = "",
    metadata: Mapping[str, Any] | None = None,
    keep_running: bool = False,
) -> dict[str, str]:
    """Start ``producer`` as a generation (from your own route); its metadata (``id`` ...).

    ``request``: a :class:`GenerationRequest`, or a prompt (one user message). ``metadata``:
    the app's JSON-ready values kept with the generation (``request.metadata`` otherwise).
    """
    if isinstance(request, str):
        request = GenerationRequest(messages=(Message("user", request),))
    if metadata is not None:
        request = dataclasses.replace(request, metadata=dict(metadata))
    return await gateway.start(
        request,
        provider_name=producer.info.name,
        provider=producer,
        owner=owner,
        keep_running=keep_running,
    )


def by_name(producers: Sequence[Producer]) -> dict[str, Producer]:
    """``producers`` by name; a name given twice is a mistake."""
    named: dict[str, Producer] = {}
    for item in producers:
        if not isinstance(item, Producer):
            raise TypeError(f"register producers made with ssegate.producers.producer, not {item!r}")
        if item.info.name in named:
            raise ValueError(f"two producers are called {item.info.name!r}")
        named[item.info.name] = item
    return named


def _takes_emitter(function: ProducerFunction) -> bool:
    if inspect.isasyncgenfunction(function):
        return False
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
    return len(parameters) >= 2


class _Channel:
    """Events from an emitter-style producer's task to the generation's producer: bounded (the
    emitter waits at ``put`` when it is full), closed when that task ends however it ends."""

    def __init__(self, size: int) -> None:
        self._items: deque[Event] = deque()
        self._size = size
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._closed = False

    async def put(self, event: Event) -> None:
        while len(self._items) >= self._size:
            self._writable.clear()
            await self._writable.wait()
        self._items.append(event)
        self._readable.set()

    def close(self, _task: object = None) -> None:
        self._closed = True
        self._readable.set()

    async def get(self) -> Event | None:
        """The next event, or ``None`` once the producer's task has ended and all are read."""
        while not self._items:
            if self._closed:
                return None
            self._readable.clear()
            await self._readable.wait()
        self._writable.set()
        return self._items.popleft()


async def _from_emitter(function: EmitterProducer, generation: Generation) -> AsyncIterator[Event]:
    """An emitter-style producer's events, read from its own task. Closing this (a cancel reaches
    it at its ``await``) cancels that task and waits for it: its ``finally`` has run when the
    generation's producer is done."""
    channel = _Channel(_EMITTER_BUFFER)
    task = asyncio.ensure_future(function(generation, Emitter(channel)))
    task.add_done_callback(channel.close)
    try:
        while (event := await channel.get()) is not None:
            yield event
        await task  # its exception, if it raised
    finally:
        if not task.done():
            task.cancel()
        # Wait for its cleanup, also when the generation is being cancelled.
        await asyncio.gather(task, return_exceptions=True)


def _to_provider_events(event: Event) -> list[ProviderEvent]:
    if isinstance(event, Text | Thinking):
        return [event] if event.text else []
    if isinstance(event, ToolCall):
        arguments = orjson.dumps(dict(event.input)).decode()
        return [
            ToolCallStart(event.id, event.name),
            ToolCallDelta(event.id, arguments),
            ToolCallEnd(event.id),
        ]
    if isinstance(event, Status):
        data: dict[str, Any] = {"stage": event.stage}
        if event.message is not None:
            data["message"] = event.message
        if event.progress is not None:
            if not 0.0 <= event.progress <= 1.0:
                raise ValueError(f"Status progress must be between 0 and 1, not {event.progress}")
            data["progress"] = event.progress
        return [WireEvent("status", data)]
    if isinstance(event, Data):
        # Checked here: an unserialisable value must fail the producer, not the log's writer.
        orjson.dumps(event.value)
        return [WireEvent("data", {"name": event.name, "value": event.value})]
    if isinstance(event, Usage):
        return [event]
    raise TypeError(f"a producer yields ssegate.producers events, not {event!r}")
