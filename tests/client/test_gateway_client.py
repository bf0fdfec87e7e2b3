from __future__ import annotations

import json

import pytest
from starlette.requests import Request
from starlette.responses import Response

from ssegate.client import GatewayClient, GatewayEvent
from ssegate.errors import ClientError, HTTPStatusError
from tests.client.fake_gateway import ANSWER, GENERATION_ID, FakeGateway, serve_gateway
from tests.client.scripted import scripted_server, sse


async def test_gateway_client_starts_a_generation_with_a_prompt_and_api_key() -> None:
    gateway = FakeGateway(ANSWER)
    async with serve_gateway(gateway) as url, GatewayClient(url, api_key="k1") as client:
        started = await client.start_generation(prompt="hi", model="demo", max_tokens=5)
    assert started["id"] == GENERATION_ID
    assert started["events_url"] == f"/v1/generations/{GENERATION_ID}/events"
    assert gateway.started == [
        {"messages": [{"role": "user", "content": "hi"}], "model": "demo", "max_tokens": 5}
    ]
    assert gateway.authorizations == ["Bearer k1"]


async def test_gateway_client_follow_yields_typed_events_until_done() -> None:
    gateway = FakeGateway([*ANSWER, ("text", {"delta": "never sent after done"})])
    async with serve_gateway(gateway) as url, GatewayClient(url) as client:
        events = [event async for event in client.follow(GENERATION_ID)]
    assert [e.type for e in events] == ["start", "thinking", "text", "text", "usage", "done"]
    assert events[2] == GatewayEvent(type="text", id="3", data={"delta": "Hel"})
    assert events[-1].terminal


async def test_gateway_client_follow_resumes_after_a_last_event_id() -> None:
    gateway = FakeGateway(ANSWER)
    async with serve_gateway(gateway) as url, GatewayClient(url) as client:
        events = [event async for event in client.follow(GENERATION_ID, last_event_id="3")]
    assert [e.data for e in events][:1] == [{"delta": "lo"}]


async def test_gateway_client_cancel_ends_a_held_generation() -> None:
    gateway = FakeGateway(ANSWER, hold_after=3)
    async with serve_gateway(gateway) as url, GatewayClient(url) as client:
        seen = []
        async for event in client.follow(GENERATION_ID):
            seen.append(event)
            if event.id == "3":
                await client.cancel(GENERATION_ID)
    assert seen[-1] == GatewayEvent(type="done", id="4", data={"finish_reason": "cancelled"})


async def test_gateway_client_state_raises_http_status_error_for_an_unknown_id() -> None:
    async with serve_gateway(FakeGateway(ANSWER)) as url, GatewayClient(url) as client:
        assert (await client.state(GENERATION_ID))["status"] == "done"
        with pytest.raises(HTTPStatusError) as caught:
            await client.state("nope")
    assert caught.value.status == 404
    assert "no such generation" in caught.value.body


async def test_gateway_client_publish_returns_the_new_event_id() -> None:
    gateway = FakeGateway(ANSWER)
    async with serve_gateway(gateway) as url, GatewayClient(url) as client:
        event_id = await client.publish("news", {"n": 1}, event="note")
    assert event_id == "7"
    assert gateway.published == [("news", {"data": {"n": 1}, "event": "note"})]


async def test_gateway_client_reports_an_unreachable_server_as_a_client_error() -> None:
    async with serve_gateway(FakeGateway(ANSWER)) as url:
        pass
    async with GatewayClient(url) as client:
        with pytest.raises(ClientError, match="cannot reach"):
            await client.start_generation(prompt="hi")


async def test_gateway_client_start_generation_needs_exactly_one_of_messages_and_prompt() -> None:
    async with GatewayClient("http://127.0.0.1:9") as client:
        with pytest.raises(ValueError, match="exactly one"):
            await client.start_generation()


async def test_gateway_client_a_dropped_connection_is_never_an_error_event() -> None:
    # The first connection drops after one event; the second ends with ssegate's `error` event. Only
    # the server's word is an event (``failed``); the drop is a silent resume after id 1.
    failure = {"code": "upstream_error", "message": "the model is down", "retryable": True}

    async def handler(request: Request, n: int) -> Response:
        if n == 0:
            return sse([b"retry: 10\n\n", b'event: text\nid: 1\ndata: {"delta": "Hel"}\n\n'])
        return sse([f"event: error\nid: 2\ndata: {json.dumps(failure)}\n\n".encode()])

    async with scripted_server(handler) as (url, seen), GatewayClient(url) as gateway:
        events = [event async for event in gateway.follow("g1")]

    assert [(e.type, e.data, e.failed) for e in events] == [
        ("text", {"delta": "Hel"}, False),
        ("error", failure, True),
    ]
    assert [s.last_event_id for s in seen] == [None, "1"]
