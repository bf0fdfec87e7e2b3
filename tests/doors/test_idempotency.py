"""A door's POST repeated with the same Idempotency-Key gets the first attempt's generation (its
stream from Last-Event-ID when streamed) instead of starting a new, paid one."""

from __future__ import annotations

import httpx
import openai

from tests.doors.conftest import ssegate_demo
from tests.support.metrics import total
from tests.support.sse import read_stream

USER = [{"role": "user", "content": "tell me more /long"}]


async def test_a_retried_start_resumes_the_first_attempts_stream() -> None:
    body = {"model": "demo-1", "messages": USER, "stream": True}
    key = {"idempotency-key": "retry-1"}
    async with ssegate_demo() as base_url, httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        first = await read_stream(
            http, "POST", "/v1/chat/completions", json_body=body, headers=key, max_events=15
        )
        generation_id = first.headers["x-generation-id"]
        retry = await read_stream(
            http,
            "POST",
            "/v1/chat/completions",
            json_body=body,
            headers={**key, "last-event-id": first.events[-1].id},
        )
        whole = await read_stream(
            http, "GET", f"/v1/chat/completions/{generation_id}", headers={"accept": "text/event-stream"}
        )
        other_body = await http.post(
            "/v1/chat/completions", json={**body, "messages": [{"role": "user", "content": "x"}]}, headers=key
        )
        without_key = await read_stream(http, "POST", "/v1/chat/completions", json_body=body, max_events=1)
    assert retry.headers["x-generation-id"] == generation_id
    assert retry.headers["idempotent-replayed"] == "true"
    assert [e.data for e in first.events + retry.events] == [e.data for e in whole.events]
    assert other_body.status_code == 409
    assert other_body.json()["error"]["code"] == "idempotency_key_reused"
    assert without_key.headers["x-generation-id"] != generation_id  # same body, no key: a new answer


async def test_the_openai_sdk_with_an_idempotency_key_gets_one_generation() -> None:
    async with ssegate_demo() as base_url:
        async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0) as client:
            headers = {"Idempotency-Key": "sdk-1"}
            one = await client.chat.completions.create(model="demo-1", messages=USER, extra_headers=headers)  # type: ignore[arg-type]
            two = await client.chat.completions.create(model="demo-1", messages=USER, extra_headers=headers)  # type: ignore[arg-type]
        async with httpx.AsyncClient(base_url=base_url) as http:
            metrics = (await http.get("/metrics")).text
    assert one.id == two.id
    assert one.choices[0].message.content == two.choices[0].message.content
    assert total(metrics, "ssegate_generations_started_total") == 1
