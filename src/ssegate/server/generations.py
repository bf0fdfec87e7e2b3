"""Routes for /v1/generations: start, stream, resume, cancel, describe."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ssegate.errors import RequestError
from ssegate.gateway import Gateway, id_created_at, is_generation_id, stream_key
from ssegate.request import GenerationRequest, invalid, parse_request
from ssegate.server.fanout import FanOut
from ssegate.server.http import last_event_id, read_json_body, wants_event_stream
from ssegate.server.idempotency import claim_for, fingerprint, idempotency_key
from ssegate.server.limits import StreamTicket
from ssegate.server.prefix import root_path
from ssegate.server.state import AppState
from ssegate.server.streaming import EventStreamResponse, follow_log

# Fields of the POST body that are the route's, not the request model's.
_ROUTE_FIELDS = frozenset({"provider", "keep_running"})


def parse_generation_body(body: Any, *, max_tokens_limit: int) -> tuple[GenerationRequest, str | None, bool]:
    """Validate a POST /v1/generations body (see ssegate.request); every problem is a 400 naming
    the field. Returns the request, the provider asked for and ``keep_running``."""
    request = parse_request(body, max_tokens_limit=max_tokens_limit, extra_fields=_ROUTE_FIELDS)
    provider = body.get("provider")
    if provider is not None and not isinstance(provider, str):
        raise invalid("provider", "must be a string")
    keep_running = body.get("keep_running", False)
    if not isinstance(keep_running, bool):
        raise invalid("keep_running", "must be a boolean")
    return request, provider or None, keep_running


def _check_model(app: AppState, provider: str, model: str | None) -> None:
    """400 for a model the provider is known not to have (a provider listing no models takes any
    name: the upstream itself answers for it, as an ``error`` event)."""
    info = app.providers.get(provider)
    if model is None or info is None or not info.models or model in info.models:
        return
    raise RequestError(
        400,
        "unknown_model",
        f"provider {provider!r} has no model {model!r}; it has: {', '.join(info.models)}",
        extra={"field": "model"},
    )


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.ssegate
    return state


def _links(generation_id: str, scope: Scope) -> dict[str, str]:
    # Under the prefix ssegate is mounted at (or the proxy's root_path): clients follow these.
    base = f"{root_path(scope)}/v1/generations/{generation_id}"
    return {"id": generation_id, "url": base, "events_url": f"{base}/events", "cancel_url": f"{base}/cancel"}


async def create_generation(request: Request) -> Response:
    app = _state(request)
    body = await read_json_body(request, app.settings.max_body_bytes)
    generation, provider, keep_running = parse_generation_body(body, max_tokens_limit=app.settings.max_tokens)
    # A retry (an Idempotency-Key) or a reconnect (Last-Event-ID) of a start continues its
    # generation instead of starting another (see ssegate.server.idempotency).
    key = idempotency_key(request.headers.get("idempotency-key"))
    after = last_event_id(request)
    claim = None
    if key is not None or after is not None:
        principal = app.authenticate(request, scope="generate")
        claim = claim_for(principal, fingerprint(body), key)
        existing = await app.claims.find(claim)
        if existing is not None:
            return await _repeat(request, app, existing, after)
    principal = await app.admit_generation(request, generation)
    provider = provider or app.settings.default_provider
    _check_model(app, provider, generation.model)
    streamed = wants_event_stream(request)
    if claim is None and streamed:
        # A streamed start is what a generic client's reconnect repeats: remember it by its body.
        claim = claim_for(principal, fingerprint(body), None)
    if claim is not None and not await app.claims.take(claim):
        # A concurrent retry with the same key took it first: its generation is this one.
        existing = await app.claims.find(claim)
        if existing is not None:
            return await _repeat(request, app, existing, after)
    ticket = await app.open_stream(request) if streamed else None
    try:
        meta = await app.gateway.start(
            generation,
            provider_name=provider,
            keep_running=keep_running,
            owner=principal,
        )
        if claim is not None:
            await app.claims.record(claim, meta["id"])
        # Answer once the upstream has answered (for at most start_answer_wait s: a slow first
        # token must not hold the answer): a start it refused (429, 529, 5xx, after the SDK's
        # retries) gets its status class here, not 201/200 and then an error event.
        failed = await refused_start(app, meta["id"])
        if failed is not None:
            raise start_failed(meta["id"], failed)
    except BaseException:
        if ticket is not None:
            ticket.close()
        if claim is not None and claim.explicit:
            await app.claims.release(claim)
        raise
    if ticket is not None:
        return _stream_response(app, meta["id"], None, ticket)
    links = _links(meta["id"], request.scope)
    body_out = _summary(links, meta, app.stream_token(principal, meta["id"]))
    return JSONResponse(body_out, status_code=201, headers={"location": links["url"]})


def _summary(links: dict[str, str], described: dict[str, Any], stream_token: str | None) -> dict[str, Any]:
    """The JSON answer to a start (and to its repetition): where the generation is, and its state."""
    body = {
        **links,
        "state": described["state"],
        "model": described["model"],
        "provider": described["provider"],
    }
    if stream_token is not None:
        body["stream_token"] = stream_token
    return body


def _stream_response(app: AppState, generation_id: str, after: str | None, ticket: StreamTicket) -> Response:
    """The generation's event stream from ``after`` on, held under ``ticket`` (an ASGI app, which
    Starlette's routing calls as it calls a Response)."""
    stream = _StreamGeneration(
        app.gateway,
        generation_id,
        after,
        app.settings.keepalive_interval,
        app.settings.retry_ms,
        ticket,
        app.fanout,
    )
    return stream  # type: ignore[return-value]


async def _events_of(request: Request, app: AppState, generation_id: str, after: str | None) -> Response:
    """The stream of a known, authorised generation from ``after`` on: 410 once its events are gone."""
    if not await app.gateway.log.exists(stream_key(generation_id)):
        raise RequestError(410, "expired", f"generation {generation_id} has no events any more")
    return _stream_response(app, generation_id, after, await app.open_stream(request))


async def _repeat(request: Request, app: AppState, generation_id: str, after: str | None) -> Response:
    """The answer to a repeated start: the generation it started, as JSON (200, not 201: nothing
    new was made) or its stream from ``after`` (the reconnect's Last-Event-ID)."""
    described = await _known_generation(app, generation_id)
    app.authorize_generation(request, described, scope="subscribe")
    if wants_event_stream(request):
        return await _events_of(request, app, generation_id, after)
    links = _links(generation_id, request.scope)
    stream_token = app.stream_token(app.authenticate(request, scope="generate"), generation_id)
    body_out = _summary(links, described, stream_token)
    headers = {"location": links["url"], "idempotent-replayed": "true"}
    return JSONResponse(body_out, status_code=200, headers=headers)


# The status a start refused before its first event answers with, by error code: what the client
# can act on (wait and retry, fix its request) rather than the upstream's exact status.
_START_STATUS = {
    "rate_limited": 429,
    "upstream_overloaded": 503,
    "upstream_unavailable": 503,
    "upstream_timeout": 504,
    "log_unavailable": 503,
}


def start_status(code: str) -> int:
    """The status of a start refused before its first event, by its error code."""
    return _START_STATUS.get(code, 502)


async def refused_start(app: AppState, generation_id: str) -> dict[str, Any] | None:
    """Wait until a generation just started has its upstream's first event (``None``), at most
    ``start_answer_wait`` s (a slow first token must not hold the answer: ``None`` too), or has
    failed before it: the ``error`` data, for the POST to answer with its status."""
    if app.settings.start_answer_wait <= 0:
        return None
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(app.settings.start_answer_wait):
            return await app.gateway.until_started(generation_id)
    return None


def start_failed(
    generation_id: str, error: dict[str, Any], status_of: Callable[[str], int] = start_status
) -> RequestError:
    """The answer to a POST whose generation failed before the upstream's first event (its stream
    holds the same ``error`` event; ``id`` and ``X-Generation-Id`` name it). ``status_of``: the
    status by error code (a front door's dialect may differ: Anthropic's 529)."""
    code = str(error.get("code", "upstream_error"))
    status = status_of(code)
    headers = {"x-generation-id": generation_id}
    if status in (429, 503, 529):
        headers["retry-after"] = "1"
    extra = {"id": generation_id, "retryable": bool(error.get("retryable", False))}
    return RequestError(status, code, str(error.get("message", "")), headers=headers, extra=extra)


class _StreamGeneration:
    """ASGI app: the generation's event stream from ``after`` on (204 if it already ended there)."""

    def __init__(
        self,
        gateway: Gateway,
        generation_id: str,
        after: str | None,
        keepalive: float,
        retry_ms: int,
        ticket: StreamTicket,
        fanout: FanOut | None = None,
    ) -> None:
        self.ticket = ticket
        self.fanout = fanout
        self.gateway = gateway
        self.generation_id = generation_id
        self.after = after
        self.keepalive = keepalive
        self.retry_ms = retry_ms

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._stream(scope, receive, send)
        finally:
            self.ticket.close()

    async def _stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = stream_key(self.generation_id)
        log = self.gateway.log
        # The first read goes out with the viewer's heartbeat, not after it (over Redis: one round
        # trip less before the first token).
        reading = asyncio.ensure_future(log.read(key, self.after))
        try:
            async with self.gateway.viewing(self.generation_id):
                first = await reading
                if first.closed and not first.entries and not first.reset:
                    await Response(status_code=204)(scope, receive, send)
                    return
                links = _links(self.generation_id, scope)
                response = EventStreamResponse(
                    follow_log(
                        log, key, self.after, first, keepalive=self.keepalive, outage=self.gateway.outage
                    ),
                    retry_ms=self.retry_ms,
                    headers=[("x-generation-id", self.generation_id), ("location", links["events_url"])],
                    ticket=self.ticket,
                    fanout=self.fanout,
                )
                await response(scope, receive, send)
        finally:
            if not reading.done():  # the heartbeat failed first: nobody reads its outcome
                reading.cancel()
            elif not reading.cancelled():
                reading.exception()  # retrieved (raised above, or a heartbeat's failure came first)


async def _known_generation(app: AppState, generation_id: str) -> dict[str, Any]:
    described = await app.gateway.describe(generation_id) if is_generation_id(generation_id) else None
    if described is not None:
        return described
    if is_generation_id(generation_id):
        age = time.time() - id_created_at(generation_id)
        if age >= 0 and age > app.settings.generation_retention.max_age:
            raise RequestError(
                410, "expired", f"generation {generation_id} has expired and its events are gone"
            )
    raise RequestError(404, "not_found", f"no generation with id {generation_id!r}")


async def generation_events(request: Request) -> Response:
    app = _state(request)
    generation_id = request.path_params["generation_id"]
    after = last_event_id(request)
    described = await _known_generation(app, generation_id)
    app.authorize_generation(request, described, scope="subscribe")
    return await _events_of(request, app, generation_id, after)


async def cancel_generation(request: Request) -> Response:
    app = _state(request)
    generation_id = request.path_params["generation_id"]
    described = await _known_generation(app, generation_id)
    app.authorize_generation(request, described, scope="generate")
    await app.gateway.cancel(generation_id)
    described = await _known_generation(app, generation_id)
    return JSONResponse({"id": generation_id, "state": described["state"]}, status_code=202)


async def describe_generation(request: Request) -> Response:
    app = _state(request)
    generation_id = request.path_params["generation_id"]
    described = await _known_generation(app, generation_id)
    app.authorize_generation(request, described, scope="subscribe")
    described.pop("owner", None)
    return JSONResponse({**described, **_links(generation_id, request.scope)})


# The routes whose response is usually a held event stream (see ssegate._fast.stack).
stream_routes = [
    Route("/v1/generations", create_generation, methods=["POST"]),
    Route("/v1/generations/{generation_id}/events", generation_events, methods=["GET"]),
]
routes = [
    Route("/v1/generations/{generation_id}", describe_generation, methods=["GET"]),
    *stream_routes,
    Route("/v1/generations/{generation_id}/cancel", cancel_generation, methods=["POST"]),
]
