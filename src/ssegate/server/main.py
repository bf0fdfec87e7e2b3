"""``ssegate serve``: run the app under uvicorn (uvloop + httptools), one or several processes."""

from __future__ import annotations

import contextlib
import gc
import glob
import logging
import os
import resource
import shutil
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn
from starlette.types import ASGIApp
from uvicorn.importer import import_from_string
from uvicorn.supervisors import Multiprocess

from ssegate import _fast
from ssegate.config import Settings
from ssegate.server.app import App, create_app
from ssegate.server.auth import exposure_problem
from ssegate.server.bounds import BoundedHttp, RequestBounds
from ssegate.server.guard import default_allowed_hosts
from ssegate.server.metrics import MULTIPROC_ENV
from ssegate.server.middleware import configure_access_log


def app_from_env() -> App:
    """A uvicorn factory (``uvicorn --factory ssegate.server.main:app_from_env``): each worker
    process builds its app from the same environment, and owns its process."""
    configure_access_log()
    return freeze_after_startup(create_app(Settings.from_env(), drain_on_signal=True))


def freeze_after_startup(app: App) -> App:
    """Once ``app`` has started, move everything loaded so far (the SDKs, their pydantic models,
    which live as long as the process) out of the garbage collector's full passes, which
    otherwise stall every stream for ~100 ms. For a process that is the server (``ssegate
    serve``): an app mounted in someone else's process leaves their collector alone."""
    started = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        async with started(app) as state:
            gc.collect()
            gc.freeze()
            yield state

    app.router.lifespan_context = lifespan
    return app


def served(app: App) -> ASGIApp:
    """``app`` as ``ssegate serve`` hands it to uvicorn configured with :func:`uvicorn_options`."""
    if _fast.enabled(_fast.SERVED_APP):
        from ssegate._fast.stack import ServedApp

        return ServedApp(app.dispatch)
    return app


def uvicorn_options(bounds: RequestBounds | None = None) -> dict[str, Any]:
    """How ``ssegate serve`` configures uvicorn for :func:`served` apps (the tests' servers too):
    stock uvicorn where the fast paths are off; every request bounded either way."""
    options: dict[str, Any] = {}
    if _fast.enabled(_fast.SERVED_APP):
        from ssegate._fast.stack import UVICORN_OPTIONS

        options.update(UVICORN_OPTIONS)
    protocol: Any
    if _fast.enabled(_fast.SLIM_PROTOCOL):
        from ssegate._fast.protocol import SlimHttpToolsProtocol

        protocol = SlimHttpToolsProtocol
    else:  # what uvicorn's own http="auto" picks (httptools where installed, else h11)
        protocol = import_from_string(uvicorn.config.HTTP_PROTOCOLS["auto"])
    options["http"] = BoundedHttp(protocol, bounds or RequestBounds())
    return options


def request_bounds(settings: Settings) -> RequestBounds:
    # 0: no limit.
    return RequestBounds(
        max_header_bytes=settings.max_header_bytes or sys.maxsize,
        max_headers=settings.max_headers or sys.maxsize,
        header_timeout=settings.header_timeout,
        body_timeout=settings.body_timeout,
    )


class ListeningServer(uvicorn.Server):
    """uvicorn's server, accepting as the ``accept`` shortcut does where it is on."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if _fast.enabled(_fast.ACCEPT):
            from ssegate._fast.accept import startup

            await startup(self, sockets)
        else:
            await super().startup(sockets)


# uvicorn's exit status when the app could not start (what uvicorn.run exits with).
_STARTUP_FAILURE = 3
# Files a server holds besides its streams' sockets: listening socket, Redis, logs, imports.
_FILES_BESIDE_STREAMS = 64


def raise_open_files_limit(needed: int) -> str | None:
    """Raise this process's open-files limit (its workers inherit it) from the soft to the hard one.

    Every held stream is a socket, and a running generation holds one more to the upstream; the
    usual soft limit of 1024 would refuse connections long before ``SSEGATE_MAX_STREAMS_TOTAL``
    (Go's runtime does the same at start-up, for the same reason). Returns what to warn about when
    even the hard limit is below ``needed``.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard and hard != resource.RLIM_INFINITY:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard != resource.RLIM_INFINITY and hard < needed:
        return (
            f"open files are limited to {hard} (ulimit -Hn) but SSEGATE_MAX_STREAMS_TOTAL needs about "
            f"{needed}: connections past the limit are refused"
        )
    return None


def served_app_from_env() -> ASGIApp:
    """The factory ``ssegate serve`` gives uvicorn."""
    return served(app_from_env())


def serve(
    *,
    host: str | None = None,
    port: int | None = None,
    redis_url: str | None = None,
    workers: int | None = None,
    provider: str | None = None,
    allow_public_without_auth: bool | None = None,
    allowed_hosts: str | None = None,
    **bounds: float | None,
) -> None:
    """``bounds``: ``max_header_bytes``, ``max_headers``, ``header_timeout``, ``body_timeout``."""
    settings = Settings.from_env().with_overrides(
        host=host,
        port=port,
        redis_url=redis_url,
        provider=provider,
        allow_open=allow_public_without_auth or None,
        allowed_hosts=allowed_hosts,
        **bounds,
    )
    workers = workers or 1
    problem = exposure_problem(settings, workers=workers)
    if problem:
        sys.exit(f"ssegate: {problem}")
    if settings.redis_url and (settings.api_keys or settings.api_keys_file) and not settings.token_secret:
        print(
            "ssegate: warning: no SSEGATE_TOKEN_SECRET: a stream token works only where it was made",
            file=sys.stderr,
        )
    if workers > 1 and not settings.redis_url:
        sys.exit("ssegate: --workers > 1 needs --redis URL: processes share streams only through Redis")
    # Before uvicorn starts: its workers inherit the limit.
    low_limit = raise_open_files_limit(settings.max_streams_total + _FILES_BESIDE_STREAMS)
    # Workers are separate processes: hand them the resolved settings through the environment.
    if settings.redis_url:
        os.environ["SSEGATE_REDIS_URL"] = settings.redis_url
    if settings.provider:
        os.environ["SSEGATE_PROVIDER"] = settings.provider
    if settings.allowed_hosts is None:
        local = not (settings.api_keys or settings.api_keys_file)
        settings = settings.with_overrides(
            allowed_hosts=default_allowed_hosts(local=local, bound_to=settings.host)
        )
    if settings.allowed_hosts is not None:
        os.environ["SSEGATE_ALLOWED_HOSTS"] = settings.allowed_hosts
    # The app's own read of a body times out with the same setting as the connection's.
    os.environ["SSEGATE_BODY_TIMEOUT"] = str(settings.body_timeout)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # The SDKs' httpx logs a line per upstream request at INFO; the access log already says enough.
    for name in ("httpx", "httpx2"):  # the SDKs' HTTP clients (one is vendored under that name)
        logging.getLogger(name).setLevel(logging.WARNING)
    _fast.announce()  # once, here: the workers inherit the decision's inputs, not the warning
    announcement = (
        f"ssegate: serving on http://{settings.host}:{settings.port} "
        f"(log: {'redis' if settings.redis_url else 'memory'}, "
        f"default provider: {settings.default_provider})"
    )
    if low_limit:  # said with the announcement: a start-up that fails says only why it failed
        announcement = f"ssegate: warning: {low_limit}\n{announcement}"
    # What uvicorn.run does, with the announcement made once a client can connect.
    config = uvicorn.Config(
        "ssegate.server.main:served_app_from_env",
        factory=True,
        **uvicorn_options(request_bounds(settings)),
        host=settings.host,
        port=settings.port,
        workers=workers,
        loop="uvloop",
        access_log=False,
        timeout_graceful_shutdown=5,
        log_level="warning",
        root_path=(settings.root_path or "").rstrip("/"),
    )
    if workers == 1:
        server = _AnnouncingServer(config, announcement)
        with contextlib.suppress(KeyboardInterrupt):
            server.run()
        if not server.started:
            sys.exit(_STARTUP_FAILURE)
        return
    # Several workers share a socket this process binds first: a client that connects while they
    # start waits in its listen queue.
    sock = config.bind_socket()
    _announce(announcement)
    with metrics_directory(), contextlib.suppress(KeyboardInterrupt):
        Multiprocess(config, sockets=[sock]).run()


@contextlib.contextmanager
def metrics_directory() -> Iterator[str]:
    """The workers' shared metrics files (prometheus_client's multiprocess mode), so that any
    worker's /metrics answers for all of them: ``PROMETHEUS_MULTIPROC_DIR`` if set (emptied of
    the last run's files first), else a directory of this run's own, removed at the end."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        os.makedirs(given, exist_ok=True)
        for stale in glob.glob(os.path.join(given, "*.db")):  # a last run's values are not this one's
            os.remove(stale)
        yield given
        return
    path = tempfile.mkdtemp(prefix="ssegate-metrics-")
    os.environ[MULTIPROC_ENV] = path  # the workers, started after this, inherit it
    try:
        yield path
    finally:
        del os.environ[MULTIPROC_ENV]
        shutil.rmtree(path, ignore_errors=True)


def _announce(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class _AnnouncingServer(ListeningServer):
    """Says "serving on" once the socket listens: the app's start-up (importing a vendor SDK takes
    seconds) comes first, and a client that connects on the line must not be refused."""

    def __init__(self, config: uvicorn.Config, announcement: str) -> None:
        super().__init__(config)
        self.announcement = announcement

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            _announce(self.announcement)
