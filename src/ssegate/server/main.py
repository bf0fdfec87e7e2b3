"""``ssegate serve``: run the app under uvicorn (uvloop + httptools), one or several processes."""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import socket
import sys
from collections.abc import Awaitable
from typing import Any

import uvicorn
from starlette.types import Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.supervisors import Multiprocess

from ssegate.config import Settings
from ssegate.server.app import App, create_app
from ssegate.server.auth import exposure_problem
from ssegate.server.listener import Server
from ssegate.server.middleware import configure_access_log
from ssegate.server.protocol import SlimHttpToolsProtocol


def app_from_env() -> App:
    """A uvicorn factory (``uvicorn --factory ssegate.server.main:app_from_env``): each worker
    process builds its app from the same environment."""
    configure_access_log()
    return create_app(Settings.from_env(), drain_on_signal=True)


class ServedApp:
    """The app as ``ssegate serve`` hands it to uvicorn: its outermost layers as plain functions.

    Under stock settings uvicorn wraps the app in its proxy-headers middleware, and Starlette's
    ``__call__`` is a coroutine too; both stay on the call stack of every held connection, about
    0.55 KiB of an idle subscriber (bench W3). Here uvicorn's proxy-headers middleware still does
    the rewriting (trusting ``FORWARDED_ALLOW_IPS``, default 127.0.0.1, as uvicorn does), but it
    runs to its end before the app's own first coroutine starts: uvicorn runs with
    ``proxy_headers=False`` and ``interface="asgi3"``.
    """

    def __init__(self, app: App, *, forwarded_allow_ips: str | None = None) -> None:
        self.app = app
        trusted = forwarded_allow_ips or os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
        self._forwarded = ProxyHeadersMiddleware(_answered, trusted_hosts=trusted)  # type: ignore[arg-type]

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] != "lifespan":
            rewrite = self._forwarded(scope, receive, send)  # type: ignore[arg-type]
            try:
                rewrite.send(None)
            except StopIteration:
                pass  # it rewrote the scope and called _answered: the usual, and only, way
            else:  # pragma: no cover - only if a uvicorn release made it wait on something
                rewrite.close()
                raise RuntimeError("uvicorn's proxy-headers middleware suspended")
        return self.app.dispatch(scope, receive, send)


async def _answered(scope: Scope, receive: Receive, send: Send) -> None:
    """The proxy-headers middleware's inner app: nothing, so it completes without suspending."""


# How ``ssegate serve`` configures uvicorn for a ServedApp (the tests' servers use them too).
UVICORN_OPTIONS: dict[str, Any] = {
    "interface": "asgi3",
    "proxy_headers": False,  # ServedApp applies it (see there)
    "http": SlimHttpToolsProtocol,
}


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


def served_app_from_env() -> ServedApp:
    """The factory ``ssegate serve`` gives uvicorn."""
    return ServedApp(app_from_env())


def serve(
    *,
    host: str | None = None,
    port: int | None = None,
    redis_url: str | None = None,
    workers: int | None = None,
    provider: str | None = None,
    allow_public_without_auth: bool | None = None,
) -> None:
    settings = Settings.from_env().with_overrides(
        host=host,
        port=port,
        redis_url=redis_url,
        provider=provider,
        allow_open=allow_public_without_auth or None,
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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # The SDKs' httpx logs a line per upstream request at INFO; the access log already says enough.
    for name in ("httpx", "httpx2"):  # the SDKs' HTTP clients (one is vendored under that name)
        logging.getLogger(name).setLevel(logging.WARNING)
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
        **UVICORN_OPTIONS,
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
    with contextlib.suppress(KeyboardInterrupt):
        Multiprocess(config, sockets=[sock]).run()


def _announce(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class _AnnouncingServer(Server):
    """Says "serving on" once the socket listens: the app's start-up (importing a vendor SDK takes
    seconds) comes first, and a client that connects on the line must not be refused."""

    def __init__(self, config: uvicorn.Config, announcement: str) -> None:
        super().__init__(config)
        self.announcement = announcement

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            _announce(self.announcement)
