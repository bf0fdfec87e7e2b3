"""Generation policies a user relies on: a model the provider does not have is refused up front, and
``keep_running`` alone decides whether an unwatched generation finishes or is abandoned."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.server.conftest import ServerFactory

LONG = [{"role": "user", "content": "/long"}]


async def test_a_model_the_provider_does_not_have_is_refused_before_anything_starts(
    ssegate_server: ServerFactory,
) -> None:
    async with ssegate_server() as client:
        response = await client.post(
            "/v1/generations",
            json={"messages": [{"role": "user", "content": "hi"}], "model": "gpt-nonexistent"},
        )
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "unknown_model"
        assert error["field"] == "model"
        assert "demo-1" in error["message"]  # says which models there are
        # The provider's own model name is accepted.
        ok = await client.post("/v1/generations", json={"messages": LONG, "model": "demo-1"})
        assert ok.status_code == 201, ok.text


async def final_state(client: httpx.AsyncClient, generation_id: str) -> dict[str, Any]:
    for _ in range(800):
        described: dict[str, Any] = (await client.get(f"/v1/generations/{generation_id}")).json()
        if described["state"] in {"done", "error", "cancelled"}:
            return described
        await asyncio.sleep(0.025)
    raise AssertionError(f"generation {generation_id} never ended: {described}")


@pytest.mark.parametrize(("keep_running", "state"), [(True, "done"), (False, "cancelled")])
async def test_keep_running_decides_whether_a_generation_nobody_watches_finishes(
    ssegate_server: ServerFactory, keep_running: bool, state: str
) -> None:
    # Nobody ever watches; the graces are far shorter than the ~500-token answer (~1.3 s here).
    graces = {"abandon_grace": 0.05, "first_viewer_grace": 0.05}
    async with ssegate_server(**graces) as client:
        response = await client.post("/v1/generations", json={"messages": LONG, "keep_running": keep_running})
        assert response.status_code == 201, response.text
        described = await final_state(client, response.json()["id"])
    assert described["state"] == state
    assert described["finish_reason"] == ("stop" if keep_running else "cancelled")
