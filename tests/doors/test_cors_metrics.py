"""CORS and metrics apply to the doors as to ssegate's own API."""

from __future__ import annotations

import httpx

from tests.doors.conftest import ssegate_demo
from tests.support.metrics import total

ORIGIN = "https://app.example"


async def test_a_browser_sdk_passes_the_preflight_and_reads_the_generation_id() -> None:
    async with ssegate_demo(cors_origins=ORIGIN) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        preflight = await http.options(
            "/v1/messages",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,x-api-key,anthropic-version,"
                "anthropic-dangerous-direct-browser-access,x-stainless-os,x-stainless-retry-count,x-evil",
            },
        )
        body = {"model": "demo-1", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
        answer = await http.post("/v1/messages", json=body, headers={"Origin": ORIGIN})
        other = await http.options(
            "/v1/messages",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
    assert preflight.status_code == 204
    allowed = {h.strip().lower() for h in preflight.headers["access-control-allow-headers"].split(",")}
    assert {"x-api-key", "anthropic-version", "anthropic-dangerous-direct-browser-access"} <= allowed
    assert {"x-stainless-os", "x-stainless-retry-count", "content-type"} <= allowed
    assert "x-evil" not in allowed
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    assert "x-generation-id" in answer.headers["access-control-expose-headers"].lower()
    assert other.status_code == 403


async def test_door_requests_are_counted_in_metrics() -> None:
    async with ssegate_demo() as base_url, httpx.AsyncClient(base_url=base_url) as http:
        body = {"model": "demo-1", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        streamed = await http.post("/v1/chat/completions", json=body)
        assert streamed.status_code == 200
        await http.post("/v1/messages", json={"model": "demo-1", "messages": []})
        metrics = (await http.get("/metrics")).text
    assert total(metrics, "ssegate_door_requests_total", door="openai_chat") == 1
    assert total(metrics, "ssegate_door_requests_total", door="anthropic_messages") == 1
    assert total(metrics, "ssegate_streams_total") == 1
    assert total(metrics, "ssegate_generations_started_total", provider="demo", model="demo-1") == 1
