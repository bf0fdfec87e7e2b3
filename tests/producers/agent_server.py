"""A host app with its own producers, run as a separate process:
``python -m tests.producers.agent_server PORT REDIS_URL [WEBHOOK_URL]``. Tests start it, drive it
over HTTP and may SIGKILL it."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from fastapi import FastAPI

from ssegate.config import Settings
from ssegate.mount import mount
from ssegate.producers import Generation, Status, Text, producer

# Short leases: a killed process is noticed within about a second.
LEASE_TTL = 1.0


@producer("counter")
async def counter(generation: Generation) -> AsyncIterator[Any]:
    """Counts to the number in the prompt, one every 20 ms; "forever" never ends."""
    yield Status("counting")
    limit = 10**9 if generation.prompt == "forever" else int(generation.prompt)
    for i in range(limit):
        await asyncio.sleep(0.02)
        yield Text(f"{i} ")


def build(redis_url: str, webhook: str | None = None) -> FastAPI:
    app = FastAPI()
    settings = Settings(
        redis_url=redis_url,
        lease_ttl=LEASE_TTL,
        abandon_grace=30.0,
        access_log=False,
        finish_webhook_url=webhook,
        finish_webhook_secret="test-secret" if webhook else None,
    )
    mount(app, "/sse", settings, producers=[counter])
    return app


if __name__ == "__main__":
    port, redis_url = int(sys.argv[1]), sys.argv[2]
    webhook = sys.argv[3] if len(sys.argv) > 3 else None
    uvicorn.run(build(redis_url, webhook), host="127.0.0.1", port=port, log_level="warning")
