"""The ASGI application: ``create_app(settings)``; its lifespan owns every resource."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from ssegate import _fast
from ssegate.config import Settings
from ssegate.errors import RequestError, SSEGateError
from ssegate.finish import FinishNotifier, OnFinish, Webhook
from ssegate.gateway import Gateway, process_identity
from ssegate.log import open_event_log
from ssegate.log.appender import OutagePolicy
from ssegate.log.base import WindowCounter
from ssegate.producers import Producer, by_name
from ssegate.providers import ProviderConfig, ProviderRegistry, available_providers
from ssegate.providers.base import ConfigurationError
from ssegate.server import auth, door_routes, generations, topics
from ssegate.server.auth import Authenticator
from ssegate.server.drain import drain_on_sigterm
from ssegate.server.fanout import SERVER_SEND, FanOut
from ssegate.server.guard import LocalGuard, parse_hosts
from ssegate.server.http import error_response
from ssegate.server.limits import OpenStreams, SlotSource, StartRate
from ssegate.server.metrics import CONTENT_TYPE, MeasuredProvider, Metrics
from ssegate.server.middleware import AccessLogMiddleware, CORSMiddleware, parse_origins
from ssegate.server.prefix import PrincipalHook, PrincipalMiddleware, chat_page, root_path
from ssegate.server.state import AppState

logger = logging.getLogger("ssegate.server")

STATIC_DIR = resources.files("ssegate") / "static"
TerminalCallback = Callable[[str, str, dict[str, Any]], None]


class App(Starlette):
    """Starlette, plus: the server's own ``send`` kept in the scope for the live fan-out (which
    writes under the middleware; see :mod:`ssegate.server.fanout`), and the event-stream routes
    served on the short path of :mod:`ssegate._fast.stack` (where that shortcut is on)."""

    stream_routes: Sequence[Route] = ()

    def build_middleware_stack(self) -> ASGIApp:
        if not _fast.enabled(_fast.HELD_STREAMS):
            return super().build_middleware_stack()
        from ssegate._fast.stack import HeldStreams, StreamEndpoint

        handlers = {k: v for k, v in self.exception_handlers.items() if isinstance(k, type)}
        short: ASGIApp = StreamEndpoint(handlers)
        for cls, args, kwargs in reversed(self.user_middleware):
            short = cls(short, *args, **kwargs)
        return HeldStreams(super().build_middleware_stack(), short, self.stream_routes)

    def dispatch(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """Starlette.__call__'s work as a plain function: a server that calls this directly
        (``ssegate serve``) keeps no frame of this layer on a held connection."""
        scope["app"] = self
        scope[SERVER_SEND] = send
        if self.middleware_stack is None:
            self.middleware_stack = self.build_middleware_stack()
        return self.middleware_stack(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.dispatch(scope, receive, send)


def create_app(
    settings: Settings | None = None,
    *,
    drain_on_signal: bool = False,
    principal: PrincipalHook | None = None,
    producers: Sequence[Producer] = (),
    on_finish: OnFinish | Sequence[OnFinish] = (),
) -> App:
    """The app. ``drain_on_signal``: SIGTERM drains (set by ``ssegate serve``, not in tests).
    ``principal``: the host app's auth decides who each request is (see :mod:`ssegate.mount`).
    ``producers``: the app's own producers, run by ``POST /v1/generations`` with their name as
    ``provider`` (see :mod:`ssegate.producers`). ``on_finish``: called once with each finished
    generation (see :mod:`ssegate.finish`; ``SSEGATE_FINISH_WEBHOOK_URL`` posts it too).

    Raises :class:`ssegate.auth.AuthConfigError` for a malformed API key configuration.
    """
    settings = settings or Settings.from_env()
    own_producers = by_name(producers)
    finish_hooks = [on_finish] if callable(on_finish) else list(on_finish)
    authenticator = Authenticator.from_settings(settings)
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(_host: Starlette) -> AsyncIterator[None]:
        # The state goes on ssegate's own app, not on whichever app runs this lifespan: mounted in
        # a host app, the host's lifespan runs it (ssegate.mount) and requests reach this app.
        log = open_event_log(settings.redis_url)
        registry = ProviderRegistry(ProviderConfig.from_settings(settings))
        # Build the configured providers now: importing a vendor SDK takes about a second, which
        # would otherwise stall every open stream when the first generation starts.
        provider_infos = {name: registry.get(name).info for name in available_providers(registry.config)}
        for producer in own_producers.values():
            registry.register(producer)
            provider_infos[producer.info.name] = producer.info
        # Models named as metric labels: the configured and known ones (others are "other").
        for info in provider_infos.values():
            metrics.models.update([info.default_model, *info.models])
        metrics.models.update(filter(None, [settings.model]))
        metrics.models.update(m.strip() for m in (settings.metrics_models or "").split(",") if m.strip())
        metrics.models.discard("")
        syncing = None
        if metrics.multiprocess_dir is not None:  # other workers read this one's values from files
            syncing = asyncio.get_running_loop().create_task(metrics.sync_forever())
        measured: dict[str, MeasuredProvider] = {}

        def measured_provider(name: str) -> MeasuredProvider:
            # One wrapper per provider, made once: it asks at construction whether its provider
            # can push (an isinstance() against a runtime-checkable Protocol, 32 us here).
            provider = measured.get(name)
            if provider is None:
                provider = measured[name] = MeasuredProvider(registry.get(name), metrics)
            return provider

        gateway = Gateway(
            log,
            measured_provider,
            retention=settings.generation_retention,
            abandon_grace=settings.abandon_grace,
            first_viewer_grace=settings.first_viewer_grace,
            lease_ttl=settings.lease_ttl,
            outage=OutagePolicy(limit=settings.log_outage_limit, buffer=settings.log_outage_buffer),
            start_timeout=settings.upstream_start_timeout,
        )
        gateway.on_terminal = metrics.on_terminal
        finishing = FinishNotifier(log, finish_hooks, finish_webhook(settings))
        if finishing.active:
            gateway.on_terminal = _both(metrics.on_terminal, finishing.on_terminal)
        streams = OpenStreams(
            per_principal=settings.max_streams_per_principal,
            total=settings.max_streams_total,
            max_seconds=settings.max_stream_seconds,
            stall_seconds=settings.viewer_stall_timeout,
            retry_ms=settings.retry_ms,
            metrics=metrics,
            # Over Redis, stream limits count every process's streams (a lease per process).
            shared=log.slots() if isinstance(log, SlotSource) else None,
            process=process_identity(),
            lease_ttl=settings.lease_ttl,
        )
        renewing = None
        if streams.shared is not None:
            renewing = asyncio.get_running_loop().create_task(streams.renew_forever())
        state = AppState(
            settings=settings,
            log=log,
            gateway=gateway,
            auth=authenticator,
            metrics=metrics,
            streams=streams,
            starts=StartRate(
                settings.generation_starts_per_minute,
                metrics,
                log if isinstance(log, WindowCounter) else None,
            ),
            providers=provider_infos,
            fanout=FanOut(
                log,
                keepalive=settings.keepalive_interval,
                coalesce=settings.coalesce_ms / 1000,
                metrics=metrics,
            ),
        )
        app.state.ssegate = state
        undo_signal = drain_on_sigterm(_drainer(state)) if drain_on_signal else None
        try:
            await gateway.__aenter__()
            yield
        finally:
            # Draining with a shared log: running generations get drain_timeout to finish (their
            # viewers follow them from other processes). Otherwise nobody could ever read the rest:
            # they end at once with done {reason: "shutdown"}.
            shared = settings.redis_url is not None
            await gateway.aclose(drain_timeout=settings.drain_timeout if state.draining and shared else 0.0)
            await finishing.aclose(grace=settings.finish_webhook_timeout)  # it reads the log
            await state.fanout.aclose()
            if renewing is not None:
                renewing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewing
            await streams.aclose()  # before the log closes: it gives this process's slots back
            if undo_signal is not None:
                undo_signal()
            await registry.aclose()
            await log.aclose()
            if syncing is not None:
                syncing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await syncing
            metrics.close()

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        state: AppState = request.app.state.ssegate
        if state.draining:  # load balancers stop routing here at once
            return JSONResponse({"status": "draining"}, status_code=503, headers={"retry-after": "1"})
        await state.log.exists("readyz-probe")  # raises LogError (503) when the log is unreachable
        return JSONResponse({"status": "ready"})

    async def metrics_page(request: Request) -> Response:
        state: AppState = request.app.state.ssegate
        state.authenticate(request, scope="metrics")
        return Response(state.metrics.render(), headers={"content-type": CONTENT_TYPE})

    async def providers(request: Request) -> Response:
        state: AppState = request.app.state.ssegate
        default = settings.default_provider
        return JSONResponse(
            [
                {"name": name, "default_model": info.default_model, "default": name == default}
                for name, info in state.providers.items()
            ]
        )

    async def index(request: Request) -> Response:
        # The page names its files and API from wherever ssegate is mounted (prefix, root_path).
        page = chat_page(root_path(request.scope))
        # A watch link's URL holds a stream token: the page never sends it on as a Referer.
        return HTMLResponse(page, headers={"cache-control": "no-cache", "referrer-policy": "no-referrer"})

    routes: list[Any] = [
        Route("/", index, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_page, methods=["GET"]),
        *auth.routes,
        Route("/v1/providers", providers, methods=["GET"]),
        *generations.routes,
        *topics.routes,
        *door_routes.routes,
        # follow_symlink: in a source checkout ssegate.js and sse-parser.js link to the npm package's
        # files (clients/js), one copy for both; a built wheel holds the files themselves.
        Mount("/static", app=StaticFiles(directory=str(STATIC_DIR), follow_symlink=True), name="static"),
    ]
    # Local mode: no keys and no host app deciding who is who; everyone who reaches it may act.
    local = not authenticator.enabled and principal is None
    app = App(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(AccessLogMiddleware, metrics=metrics, log=settings.access_log),
            Middleware(CORSMiddleware, origins=parse_origins(settings.cors_origins)),
            Middleware(
                LocalGuard,
                hosts=parse_hosts(settings.allowed_hosts),
                check_origin=local,
                origins=parse_origins(settings.cors_origins),
            ),
            *([Middleware(PrincipalMiddleware, hook=principal)] if principal is not None else []),
        ],
        exception_handlers={
            RequestError: _request_error,
            ConfigurationError: _configuration_error,
            SSEGateError: _ssegate_error,
            HTTPException: _http_exception,
            Exception: _unexpected_error,
        },
    )
    app.stream_routes = [*generations.stream_routes, *topics.stream_routes, *door_routes.stream_routes]
    return app


def _drainer(state: AppState) -> Callable[[signal.Signals], Awaitable[None]]:
    """What SIGTERM does before the server stops listening (docs/operations-reliability.md)."""

    async def drain(signum: signal.Signals) -> None:
        settings = state.settings
        shared = settings.redis_url is not None
        state.begin_drain()  # readyz 503, new streams 503; shared log: viewers resume elsewhere
        # Running generations finish (Ctrl-C on a memory log: at once), or end with a terminal
        # event that their viewers here still receive.
        wait = settings.drain_timeout if shared or signum == signal.SIGTERM else 0.0
        await state.gateway.settle(wait)
        await state.streams.until_closed(_DRAIN_FLUSH)
        state.streams.drain(end_open=True)  # what is left (topic subscribers): "reconnect"
        await state.streams.until_closed(_DRAIN_FLUSH)

    return drain


# How long the drain waits for streams to send their last events before the listener closes.
_DRAIN_FLUSH = 2.0


def finish_webhook(settings: Settings) -> Webhook | None:
    if not settings.finish_webhook_url:
        return None
    return Webhook(
        settings.finish_webhook_url,
        settings.finish_webhook_secret,
        attempts=settings.finish_webhook_attempts,
        timeout=settings.finish_webhook_timeout,
    )


def _both(first: TerminalCallback, second: TerminalCallback) -> TerminalCallback:
    def both(generation_id: str, state: str, data: dict[str, Any]) -> None:
        first(generation_id, state, data)
        second(generation_id, state, data)

    return both


async def _request_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestError)
    return error_response(exc)


async def _configuration_error(request: Request, exc: Exception) -> Response:
    return error_response(RequestError(400, "provider_unavailable", str(exc)))


async def _ssegate_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SSEGateError)
    logger.warning("request failed: %s", exc)
    # The plain code (log_unavailable), never the class name; a 503 says when to come back.
    headers = {"retry-after": "1"} if exc.status_code == 503 else None
    return error_response(RequestError(exc.status_code, exc.code, str(exc), headers=headers))


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(
        RequestError(exc.status_code, code, str(exc.detail), headers=dict(exc.headers or {}))
    )


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    logger.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(RequestError(500, "internal", "internal server error"))
