"""``ssegate serve``: run the app under uvicorn (uvloop + httptools), one or several processes."""

from __future__ import annotations

import logging
import os
import sys

import uvicorn
from starlette.applications import Starlette

from ssegate.config import Settings
from ssegate.server.app import create_app
from ssegate.server.auth import exposure_problem
from ssegate.server.middleware import configure_access_log


def app_from_env() -> Starlette:
    """The uvicorn factory: each worker process builds its app from the same environment."""
    configure_access_log()
    return create_app(Settings.from_env(), drain_on_signal=True)


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
    # Workers are separate processes: hand them the resolved settings through the environment.
    if settings.redis_url:
        os.environ["SSEGATE_REDIS_URL"] = settings.redis_url
    if settings.provider:
        os.environ["SSEGATE_PROVIDER"] = settings.provider
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # The SDKs' httpx logs a line per upstream request at INFO; the access log already says enough.
    for name in ("httpx", "httpx2"):  # the SDKs' HTTP clients (one is vendored under that name)
        logging.getLogger(name).setLevel(logging.WARNING)
    print(
        f"ssegate: serving on http://{settings.host}:{settings.port} "
        f"(log: {'redis' if settings.redis_url else 'memory'}, "
        f"default provider: {settings.default_provider})",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(
        "ssegate.server.main:app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        timeout_graceful_shutdown=5,
        log_level="warning",
    )
