from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from tests.server.conftest import ssegate_server
from tests.support.servers import free_port

__all__ = ["redis_server", "redis_url", "ssegate_server"]

REDIS_SERVER = shutil.which("redis-server")


@contextlib.asynccontextmanager
async def redis_server() -> AsyncIterator[str]:
    """A private redis-server (no persistence) on a free port; yields its URL."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (make test installs it)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="ssegate-redis-") as workdir:
        proc = await asyncio.create_subprocess_exec(
            REDIS_SERVER,
            *("--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
            *("--dir", workdir),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}/0"
        try:
            client = aioredis.Redis.from_url(url)
            try:
                for _ in range(500):
                    with contextlib.suppress(OSError, aioredis.ConnectionError):
                        if await client.ping():
                            break
                    await asyncio.sleep(0.01)
            finally:
                await client.aclose()
            yield url
        finally:
            proc.terminate()
            await proc.wait()


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    async with redis_server() as url:
        yield url
