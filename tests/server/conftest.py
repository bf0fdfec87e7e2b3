from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest

from ssegate.config import Settings
from ssegate.server.app import create_app
from tests.support.redis_server import redis_server
from tests.support.servers import serve_asgi

__all__ = ["redis_server"]  # a real Redis for the fan-out's pull mode

# Fast, deterministic demo pacing so streams take a fraction of a second.
FAST = {"demo_ttft": 0.01, "demo_tokens_per_second": 400.0}

ServerFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def ssegate_server() -> ServerFactory:
    """``async with ssegate_server(**settings) as client``: a real server and a client bound to it."""

    @asynccontextmanager
    async def run(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        settings = Settings(**{**FAST, **overrides})
        async with (
            serve_asgi(create_app(settings)) as base_url,
            httpx.AsyncClient(base_url=base_url, timeout=10) as client,
        ):
            yield client

    return run
