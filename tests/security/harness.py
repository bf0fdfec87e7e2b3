"""A real ssegate server on a real socket for the security and operations tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.applications import Starlette

from ssegate.config import Settings
from ssegate.server.app import create_app
from ssegate.server.state import AppState
from tests.support.servers import serve_asgi

# Fast demo pacing: streams take a fraction of a second.
FAST = {"demo_ttft": 0.01, "demo_tokens_per_second": 400.0, "retry_ms": 50}
PROMPT = {"messages": [{"role": "user", "content": "Tell me about event streams"}]}
LONG_PROMPT = {"messages": [{"role": "user", "content": "/long"}]}
# name -> (key, scopes)
KEYS = {
    "alice": ("alice-key-0123456789", "generate,subscribe"),
    "bob": ("bob-key-0123456789", "generate,subscribe"),
    "reader": ("reader-key-0123456789", "subscribe:news/*"),
    # generate alone: starts generations and, as their owner, reads and resumes them
    "writer": ("writer-key-0123456789", "generate"),
    "ops": ("ops-key-0123456789", "metrics"),
    "root": ("root-key-0123456789", "admin"),
}
SECRET = "test-secret-that-is-long-enough-for-hs256"


def api_keys_setting() -> str:
    return ";".join(f"{name}:{key}:{scopes}" for name, (key, scopes) in KEYS.items())


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name][0]}"}


@dataclass
class Running:
    client: httpx.AsyncClient
    base_url: str
    app: Starlette

    @property
    def state(self) -> AppState:
        state: AppState = self.app.state.ssegate
        return state


@asynccontextmanager
async def running(*, auth: bool = False, **overrides: Any) -> AsyncIterator[Running]:
    """A server with the fast demo model; ``auth`` configures :data:`KEYS` and :data:`SECRET`."""
    values: dict[str, Any] = {**FAST, **overrides}
    if auth:
        values.setdefault("api_keys", api_keys_setting())
        values.setdefault("token_secret", SECRET)
    app = create_app(Settings(**values))
    async with serve_asgi(app) as base_url, httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        yield Running(client, base_url, app)


async def start(
    server: Running, who: str | None = None, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    response = await server.client.post(
        "/v1/generations", json=body or PROMPT, headers=bearer(who) if who else None
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created
