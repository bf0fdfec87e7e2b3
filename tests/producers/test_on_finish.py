"""The on-finish hook and webhook: once per generation, however it ended, with the assembled answer.

Hooks record into lists; the webhook receiver is a real HTTP server on a port of its own that
checks each body's signature. Counts are checked after the server has shut down (its pending hooks
waited for), so a second, late call would be seen.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ssegate.config import Settings
from ssegate.finish import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    FinishedGeneration,
    sign,
    verify_signature,
)
from ssegate.mount import gateway_of
from ssegate.producers import start
from ssegate.server.app import App, create_app
from tests.producers.test_producers import ALL, PROBE, ask, generate, my_agent
from tests.support.servers import serve_asgi
from tests.support.sse import read_stream

SECRET = "test-secret"
_WAIT = 10.0


class Receiver:
    """A webhook endpoint: answers from ``script`` (then 200s), keeps every delivery it accepted."""

    def __init__(self, script: list[int] | None = None) -> None:
        self.script = list(script or [])
        self.attempts: list[dict[str, Any]] = []
        self.accepted: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()

    async def endpoint(self, request: Request) -> Response:
        body = await request.body()
        headers = request.headers
        good = verify_signature(SECRET, body, headers.get(TIMESTAMP_HEADER), headers.get(SIGNATURE_HEADER))
        self.attempts.append({"delivery": headers.get(DELIVERY_HEADER), "signed": good})
        status = self.script.pop(0) if self.script else 200
        if status == 200 and good:
            self.accepted.append(orjson.loads(body))
            self.arrived.set()
        return Response(status_code=status if good else 401)

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        async with serve_asgi(Starlette(routes=[Route("/hook", self.endpoint, methods=["POST"])])) as url:
            yield f"{url}/hook"


@contextlib.asynccontextmanager
async def server(
    hooked: list[FinishedGeneration], **settings: Any
) -> AsyncIterator[tuple[App, httpx.AsyncClient]]:
    def hook(finished: FinishedGeneration) -> None:
        hooked.append(finished)

    app = create_app(Settings(**{"abandon_grace": 30.0, **settings}), producers=ALL, on_finish=hook)
    async with serve_asgi(app) as url, httpx.AsyncClient(base_url=url, timeout=_WAIT) as client:
        yield app, client


async def test_a_finished_generation_comes_once_with_its_whole_answer() -> None:
    hooked: list[FinishedGeneration] = []
    async with server(hooked) as (app, client):
        meta = await start(gateway_of(app), my_agent, "Say hi", owner="local", metadata={"conversation": 42})
        got = await read_stream(client, "GET", f"/v1/generations/{meta['id']}/events")
        assert got.types[-1] == "done"
    assert len(hooked) == 1
    finished = hooked[0]
    assert finished.id == meta["id"]
    assert finished.state == "done"
    assert finished.finish_reason == "stop"
    assert finished.text == "Hello, world"
    assert finished.thinking == "the user wants a greeting"
    assert [(c.id, c.name, c.input) for c in finished.tool_calls] == [("call_1", "search", {"q": "Say hi"})]
    assert finished.data == [{"name": "citations", "value": [{"title": "SSE", "url": "https://example.com"}]}]
    assert finished.usage == {"input_tokens": 12, "output_tokens": 3}
    assert finished.metadata == {"conversation": 42}
    assert (finished.provider, finished.model, finished.owner) == ("my-agent", "agent-1", "local")
    assert finished.complete
    assert finished.events == len(got.events)
    assert finished.created_at is not None
    assert finished.finished_at is not None
    assert finished.duration is not None
    assert 0 <= finished.duration < _WAIT


async def test_once_after_an_error_a_cancel_and_an_abandon() -> None:
    hooked: list[FinishedGeneration] = []
    async with server(hooked, abandon_grace=0.3, first_viewer_grace=0.3) as (_, client):
        failed = await generate(client, "broken")
        assert failed.types[-1] == "error"
        cancelled = (await client.post("/v1/generations", json=ask("stuck"))).json()
        await asyncio.wait_for(PROBE.started.wait(), _WAIT)
        await client.post(cancelled["cancel_url"])
        await client.post(cancelled["cancel_url"])  # twice: still one end
        abandoned = (await client.post("/v1/generations", json=ask("stuck"))).json()
        # Nobody watches it (asking for its state does not count): abandoned within the grace.
        for _ in range(200):
            if (await client.get(abandoned["url"])).json()["state"] == "cancelled":
                break
            await asyncio.sleep(0.05)
        ended = await read_stream(client, "GET", abandoned["events_url"])
        assert ended.data("done")[-1]["reason"] == "abandoned"
    by_id = {finished.id: finished for finished in hooked}
    assert len(hooked) == len(by_id) == 3
    error = by_id[failed.headers["x-generation-id"]]
    assert error.state == "error"
    assert error.error is not None
    assert error.error["code"] == "producer_failed"
    assert error.text == "half an answer"
    assert (by_id[cancelled["id"]].state, by_id[cancelled["id"]].reason) == ("cancelled", "cancelled")
    assert (by_id[abandoned["id"]].state, by_id[abandoned["id"]].reason) == ("cancelled", "abandoned")
    assert by_id[abandoned["id"]].finish_reason == "cancelled"


async def test_the_webhook_is_signed_and_retried_until_it_is_taken() -> None:
    receiver = Receiver(script=[503, 500])
    async with receiver.serving() as hook_url:
        hooked: list[FinishedGeneration] = []
        settings = {"finish_webhook_url": hook_url, "finish_webhook_secret": SECRET}
        async with server(hooked, **settings) as (_, client):
            got = await generate(client, "my-agent")
            await asyncio.wait_for(receiver.arrived.wait(), _WAIT)
        generation_id = got.headers["x-generation-id"]
        assert [a["delivery"] for a in receiver.attempts] == [generation_id] * 3
        assert all(a["signed"] for a in receiver.attempts)
        assert len(receiver.accepted) == 1
        body = receiver.accepted[0]
        assert body["id"] == generation_id
        assert body["text"] == "Hello, world"
        assert body["tool_calls"][0]["name"] == "search"
        assert len(hooked) == 1  # the app's hook and the webhook both, once


async def test_the_webhook_gives_up_after_its_attempts() -> None:
    receiver = Receiver(script=[500] * 10)
    async with receiver.serving() as hook_url:
        settings = {
            "finish_webhook_url": hook_url,
            "finish_webhook_secret": SECRET,
            "finish_webhook_attempts": 3,
        }
        async with server([], **settings) as (_, client):
            await generate(client, "my-agent")
            for _ in range(200):
                if len(receiver.attempts) >= 3:
                    break
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        assert len(receiver.attempts) == 3
        assert receiver.accepted == []


def test_signatures_verify_only_with_the_secret_and_recently() -> None:
    body = b'{"id": "x"}'
    signature = sign(SECRET, "1000", body)
    assert verify_signature(SECRET, body, "1000", signature, now=1010)
    assert not verify_signature("other", body, "1000", signature, now=1010)
    assert not verify_signature(SECRET, body + b" ", "1000", signature, now=1010)
    assert not verify_signature(SECRET, body, "1000", signature, now=5000)  # replayed later
    assert not verify_signature(SECRET, body, None, signature)
