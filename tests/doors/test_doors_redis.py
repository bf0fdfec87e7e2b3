"""Doors over the shared (Redis) event log: two ssegate servers, one generation. The AI SDK door's
chat -> generation mapping lives in the log, so the other server resumes and stops the chat, and
a dialect stream started on one server resumes on the other with Last-Event-ID."""

from __future__ import annotations

import json
import secrets

import httpx
import pytest

from ssegate.config import Settings
from ssegate.server.app import create_app
from tests.doors.conftest import FAST
from tests.support.redis_server import redis_server
from tests.support.servers import serve_asgi
from tests.support.sse import read_stream

__all__ = ["redis_server"]
pytestmark = pytest.mark.redis

SLOW = {"demo_ttft": 0.01, "demo_tokens_per_second": 60.0}


async def test_another_server_resumes_and_stops_the_chat(redis_server: str) -> None:
    settings = Settings(**{**FAST, **SLOW, "provider": "demo", "redis_url": redis_server})
    chat = f"chat-{secrets.token_hex(4)}"
    user = {"id": "u", "role": "user", "parts": [{"type": "text", "text": "tell me a lot /long"}]}
    async with (
        serve_asgi(create_app(settings)) as first_url,
        serve_asgi(create_app(settings)) as second_url,
        httpx.AsyncClient(timeout=10) as http,
    ):
        started = await read_stream(
            http, "POST", f"{first_url}/v1/ui/chat", json_body={"id": chat, "messages": [user]}, max_events=6
        )
        generation_id = started.headers["x-generation-id"]
        replay = await read_stream(http, "GET", f"{second_url}/v1/ui/chat/{chat}/stream", max_events=6)
        rest = await read_stream(
            http,
            "GET",
            f"{second_url}/v1/chat/completions/{generation_id}",
            headers={"accept": "text/event-stream"},
            max_events=3,
        )
        stop = await http.post(f"{second_url}/v1/ui/chat/{chat}/stop")
        after = await http.get(f"{first_url}/v1/ui/chat/{chat}/stream")
        state = (await http.get(f"{first_url}/v1/generations/{generation_id}")).json()
    assert replay.headers["x-generation-id"] == generation_id
    assert [e.data for e in replay.events] == [e.data for e in started.events]  # the same bytes, replayed
    assert json.loads(rest.events[0].data)["id"] == f"chatcmpl-{generation_id}"
    assert stop.status_code == 200
    assert after.status_code == 204
    assert state["state"] == "cancelled"
