"""Front doors: other APIs' routes over the same generations (see :mod:`ssegate.dialects`).

Each door maps its request onto the gateway's, starts the generation exactly as
``POST /v1/generations`` does (auth, limits, the same lifecycle), and answers in its dialect:
streamed, by following the event log through the dialect's encoder (:class:`EncodedStreams`: one
encoding per event and dialect in this process), or whole, by folding the log into an
:class:`~ssegate.dialects.answer.Answer`. Errors are answered in the door's own error shape.

A caught-up streamed viewer joins the live fan-out as a generation's viewers do
(:mod:`ssegate.server.fanout`), in a group per generation and dialect that writes the dialect's
bytes: many viewers of a door cost what many viewers of a generation cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from ssegate.dialects.answer import Answer
from ssegate.dialects.base import (
    KEEPALIVE_LINE,
    Cursor,
    EncodedStream,
    EncodedStreams,
    EncoderFactory,
    GapError,
    WireEvent,
    frame,
    parse_cursor,
)
from ssegate.errors import RequestError, SSEGateError
from ssegate.gateway import is_generation_id, stream_key
from ssegate.log.base import Handoff, LogEntry, ReadResult, parse_id
from ssegate.providers.base import ConfigurationError, GenerationRequest
from ssegate.server.generations import (
    _check_model,
    _known_generation,
    refused_start,
    start_failed,
    start_status,
)
from ssegate.server.http import last_event_id
from ssegate.server.idempotency import claim_for, fingerprint, idempotency_key
from ssegate.server.limits import StreamTicket
from ssegate.server.state import AppState
from ssegate.server.streaming import EventStreamResponse

logger = logging.getLogger("ssegate.doors")

_ENCODED = "doors.encoded_streams"
# A generation's error codes as HTTP statuses, for answers that are not streamed.
_ERROR_STATUS = {
    "rate_limited": 429,
    "upstream_overloaded": 503,
    "upstream_unavailable": 502,
    "upstream_timeout": 504,
    "upstream_disconnected": 502,
    "upstream_lost": 502,
    "upstream_bad_request": 400,
    "upstream_auth": 502,
    "cancelled": 409,
    "internal": 500,
}
INTERRUPTED = {
    "code": "stream_interrupted",
    "message": "the server ended this stream (draining, lifetime or token expiry); the generation "
    "goes on: resume it with Last-Event-ID",
    "retryable": True,
}

ErrorBody = Callable[[int, str, str, str | None], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Door:
    """What a route needs to know of its dialect besides the encoder."""

    name: str
    error_body: ErrorBody  # (status, code, message, field) -> the dialect's error JSON
    error_event: Callable[[dict[str, Any]], WireEvent]  # a failure after the head, in the dialect
    error_status: Callable[[str], int] = lambda code: _ERROR_STATUS.get(code, 502)
    # A start the upstream refused before its first event, answered by the POST itself.
    start_status: Callable[[str], int] = start_status

    def error_response(self, exc: Exception) -> Response:
        if isinstance(exc, RequestError):
            status, code, message, headers = exc.status_code, exc.code, exc.message, exc.headers
            field = exc.extra.get("field")
        elif isinstance(exc, ConfigurationError):
            status, code, message, headers, field = 400, "provider_unavailable", str(exc), {}, None
        elif isinstance(exc, SSEGateError):
            logger.warning("request failed: %s", exc)
            status, code, message, headers, field = exc.status_code, type(exc).__name__, str(exc), {}, None
        else:
            logger.exception("unexpected error in the %s door", self.name)
            status, code, message, headers, field = 500, "internal", "internal server error", {}, None
        return JSONResponse(
            self.error_body(status, code, message, field), status_code=status, headers=headers
        )

    def endpoint(self, handler: Callable[[Request], Awaitable[Any]]) -> Callable[[Request], Awaitable[Any]]:
        """``handler`` with every error it raises answered in this door's shape."""

        async def wrapped(request: Request) -> Any:
            state_of(request).metrics.door_requests[self.name] += 1
            try:
                return await handler(request)
            except Exception as exc:
                return self.error_response(exc)

        wrapped.__name__ = handler.__name__
        return wrapped

    def interrupted(self) -> bytes:
        return b"".join(frame("interrupted", [self.error_event(INTERRUPTED)])).replace(
            b"id: interrupted\n", b""
        )


def state_of(request: Request) -> AppState:
    state: AppState = request.app.state.ssegate
    return state


def encoded_streams(app: AppState) -> EncodedStreams:
    streams = app.extras.get(_ENCODED)
    if streams is None:
        streams = app.extras[_ENCODED] = EncodedStreams()
    assert isinstance(streams, EncodedStreams)
    return streams


def resolve_provider(app: AppState, model: str | None, provider: str | None) -> tuple[str, str | None]:
    """``(provider, model)`` for a door's request. A door's clients name only a model, so:
    ``provider/model`` picks the provider; a provider's own name picks its default model; a model a
    provider lists picks that provider; anything else goes to the default provider as it is."""
    if provider:
        return provider, model
    if model:
        head, slash, rest = model.partition("/")
        if slash and head in app.providers:
            return head, rest or None
        if model in app.providers:
            return model, None
        for name, info in app.providers.items():
            if model in info.models:
                return name, model
    return app.settings.default_provider, model


@dataclass(frozen=True, slots=True)
class Started:
    """A door's POST: the generation it started (or, repeated with the same ``Idempotency-Key``,
    the one the first attempt started: ``replayed``) and its stream slot when streaming."""

    generation_id: str
    owner: str
    ticket: StreamTicket | None
    replayed: bool = False


async def start_generation(
    request: Request,
    app: AppState,
    generation: GenerationRequest,
    provider: str | None,
    *,
    stream: bool,
    body: Any,
    status_of: Callable[[str], int] = start_status,
) -> Started:
    """Start as ``POST /v1/generations`` does: admit (auth, drain, rate, size), check the model,
    take a stream slot when streaming. A retry carrying the first attempt's ``Idempotency-Key``
    (and body) gets that attempt's generation instead of a new one (a different body: 409). No
    key, no claim: a door's client repeating a body means a new answer (the AI SDK's regenerate).
    A start the upstream refuses before its first event raises the :class:`RequestError` the
    door answers with (``status_of`` its status by error code), as ``POST /v1/generations``
    does: a vendor SDK then raises its typed error (``RateLimitError``), not a stream error."""
    key = idempotency_key(request.headers.get("idempotency-key"))
    claim = None
    if key is not None:
        claim = claim_for(app.authenticate(request, scope="generate"), fingerprint(body), key)
        existing = await app.claims.find(claim)
        if existing is not None:
            return await _replay(request, app, existing, stream=stream)
    principal = await app.admit_generation(request, generation)
    provider_name, model = resolve_provider(app, generation.model, provider)
    if model != generation.model:
        generation = dataclasses.replace(generation, model=model)
    _check_model(app, provider_name, generation.model)
    if claim is not None and not await app.claims.take(claim):
        existing = await app.claims.find(claim)  # a concurrent retry took the key first
        if existing is not None:
            return await _replay(request, app, existing, stream=stream)
    ticket = await app.open_stream(request) if stream else None
    try:
        meta = await app.gateway.start(generation, provider_name=provider_name, owner=principal)
        if claim is not None:
            await app.claims.record(claim, meta["id"])
        failed = await refused_start(app, meta["id"])
        if failed is not None:
            raise start_failed(meta["id"], failed, status_of)
    except BaseException:
        if ticket is not None:
            ticket.close()
        if claim is not None:
            await app.claims.release(claim)
        raise
    return Started(meta["id"], principal, ticket)


async def _replay(request: Request, app: AppState, generation_id: str, *, stream: bool) -> Started:
    described = await known_generation(request, app, generation_id)
    ticket = await app.open_stream(request) if stream else None
    return Started(generation_id, str(described.get("owner", "")), ticket, replayed=True)


async def known_generation(request: Request, app: AppState, generation_id: str) -> dict[str, Any]:
    """The generation (404/410 if unknown or gone, 404 if another principal's)."""
    described = await _known_generation(app, generation_id)
    app.authorize_generation(request, described, scope="subscribe")
    if not await app.gateway.log.exists(stream_key(generation_id)):
        raise RequestError(410, "expired", f"generation {generation_id} has no events any more")
    return described


def resume_cursor(request: Request) -> Cursor:
    value = last_event_id(request)
    cursor = parse_cursor(value)
    if cursor is None:
        raise RequestError(
            400, "invalid_last_event_id", f"Last-Event-ID {value!r} is not an event id of this stream"
        )
    return cursor


@dataclass(frozen=True, slots=True)
class DialectView:
    """A dialect's bytes for the live fan-out (a :class:`~ssegate.log.base.WireView`): the shared
    encoding of one generation in one dialect; viewers with the same ``key`` share a group."""

    key: str
    encoded: EncodedStream
    keepalive: bytes = KEEPALIVE_LINE  # a lone comment line: see ssegate.dialects.base

    def wire(self, entry: LogEntry) -> bytes:
        return b"".join(self.encoded.add(entry))


class DialectStream:
    """ASGI app: a generation's events in a dialect, from ``cursor`` on (204 if there is nothing
    more to send). Counts as a viewer for the generation's lifecycle while it is open."""

    def __init__(
        self,
        app: AppState,
        door: Door,
        generation_id: str,
        key: str,
        factory: EncoderFactory,
        cursor: Cursor,
        ticket: StreamTicket,
        headers: list[tuple[str, str]],
    ) -> None:
        self.app = app
        self.door = door
        self.generation_id = generation_id
        self.key = key
        self.factory = factory
        self.cursor = cursor
        self.ticket = ticket
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        encoded_all = encoded_streams(self.app)
        encoded = encoded_all.acquire(self.generation_id, self.key, self.factory)
        try:
            async with self.app.gateway.viewing(self.generation_id):
                await self._stream(encoded, scope, receive, send)
        finally:
            encoded_all.release(self.generation_id, self.key)
            self.ticket.close()

    async def _stream(self, encoded: EncodedStream, scope: Scope, receive: Receive, send: Send) -> None:
        log = self.app.gateway.log
        key = stream_key(self.generation_id)
        first = await catch_up(log, key, encoded, self.cursor)
        if first is None:
            response: Any = JSONResponse(
                self.door.error_body(
                    409, "cannot_resume", "Last-Event-ID names no retained event of this generation", None
                ),
                status_code=409,
            )
        elif first.closed and not first.entries and self.cursor.partial is None:
            response = Response(status_code=204)
        else:
            view = DialectView(self.key, encoded)
            response = EventStreamResponse(
                follow_dialect(
                    log, key, view, self.cursor, first, keepalive=self.app.settings.keepalive_interval
                ),
                retry_ms=self.app.settings.retry_ms,
                headers=self.headers,
                ticket=self.ticket,
                fanout=self.app.fanout,
                opening=KEEPALIVE_LINE,
                final=self.door.interrupted(),
            )
        await response(scope, receive, send)


async def catch_up(log: Any, key: str, encoded: EncodedStream, cursor: Cursor) -> ReadResult | None:
    """Encode the log up to the cursor (an encoder's state depends on every event before), then
    make the first read after it. ``None``: the cursor is not in the log (trimmed, from another
    epoch of the stream, never made)."""
    target = cursor.after
    if target is not None:
        parsed = parse_id(target)
        if parsed is None:
            return None
        seq = parsed[1]
        try:
            while encoded.next_seq <= seq:
                result = await log.read(key, encoded.last_id)
                if result.reset or not result.entries:
                    return None
                for entry in result.entries:
                    if entry.seq > seq:
                        break
                    encoded.add(entry)
        except GapError:
            return None
    result = await log.read(key, target)
    return None if result.reset else result


async def follow_dialect(
    log: Any, key: str, view: DialectView, cursor: Cursor, first: ReadResult, *, keepalive: float
) -> AsyncGenerator[bytes | Handoff, str | None]:
    """One chunk of dialect bytes per wake-up (see :func:`ssegate.server.streaming.follow_log`);
    caught up (past any partly seen entry), it offers itself to the live fan-out in ``view``'s
    group, and goes on from where that sends it back."""
    encoded = view.encoded
    result = first
    after = cursor.after
    partial, skip = cursor.partial, cursor.skip
    while True:
        parts: list[bytes] = []
        try:
            for entry in result.entries:
                framed = encoded.add(entry)
                if entry.id == partial:
                    framed = framed[skip:]
                    partial = None
                parts.extend(framed)
        except GapError:
            logger.warning("stream %s lost history under a dialect viewer; ending its stream", key)
            return
        if parts:
            yield b"".join(parts)
        if result.entries:
            after = result.entries[-1].id
        if result.closed:
            return
        if after is not None and partial is None:
            resumed = yield Handoff(key, after, view)
            if resumed is not None:
                after = resumed
        result = await log.read(key, after, wait=keepalive)
        if result.reset:
            return
        if not (result.entries or result.closed):
            yield KEEPALIVE_LINE


class CollectedAnswer:
    """ASGI app: wait for the generation's end (as a viewer), then answer ``render(answer)``; if the
    client hangs up first, stop waiting (the gateway cancels the generation after its grace)."""

    def __init__(
        self,
        app: AppState,
        door: Door,
        generation_id: str,
        render: Callable[[Answer], dict[str, Any]],
        headers: dict[str, str],
    ) -> None:
        self.app = app
        self.door = door
        self.generation_id = generation_id
        self.render = render
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with self.app.gateway.viewing(self.generation_id):
            collecting = asyncio.create_task(self._collect())
            hangup = asyncio.create_task(_until_disconnect(receive))
            try:
                await asyncio.wait({collecting, hangup}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                hangup.cancel()
                if not collecting.done():
                    collecting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await hangup
            if not collecting.done() or collecting.cancelled():
                with contextlib.suppress(asyncio.CancelledError):
                    await collecting
                return  # nobody to answer
            answer = collecting.result()
        if answer.error is not None:
            code = str(answer.error.get("code") or "upstream_error")
            status = self.door.error_status(code)
            body = self.door.error_body(status, code, str(answer.error.get("message") or code), None)
            response = JSONResponse(body, status_code=status, headers=self.headers)
        else:
            response = JSONResponse(self.render(answer), headers=self.headers)
        await response(scope, receive, send)

    async def _collect(self) -> Answer:
        log = self.app.gateway.log
        key = stream_key(self.generation_id)
        answer = Answer()
        after: str | None = None
        while True:
            result = await log.read(key, after, wait=self.app.settings.keepalive_interval)
            for entry in result.entries:
                data = orjson.loads(entry.data) if entry.data else {}
                answer.add(entry.event, data if isinstance(data, dict) else {})
            if result.entries:
                after = result.entries[-1].id
            if result.closed:
                return answer


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def generation_id_from(value: str, prefix: str) -> str:
    """The ssegate generation id in a dialect's id (``chatcmpl-<id>``, ``msg_<id>``, or bare)."""
    generation_id = value.removeprefix(prefix)
    if not is_generation_id(generation_id):
        raise RequestError(404, "not_found", f"no generation with id {value!r}")
    return generation_id


def models_list(app: AppState) -> dict[str, Any]:
    """``GET /v1/models``: every configured provider's models, as OpenAI lists them."""
    data = []
    for name, info in app.providers.items():
        for model in info.models or (info.default_model,):
            data.append({"id": model, "object": "model", "created": 0, "owned_by": name})
        data.append({"id": name, "object": "model", "created": 0, "owned_by": name})
    return {"object": "list", "data": data}
