"""Starts that are safe to retry: Idempotency-Key and a reconnect's Last-Event-ID on POST
/v1/generations continue the generation they started instead of starting another."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

from tests.server.conftest import ServerFactory, ssegate_server
from tests.support.metrics import total
from tests.support.redis_server import redis_server
from tests.support.sse import read_stream

__all__ = ["redis_server", "ssegate_server"]

QUESTION = {"messages": [{"role": "user", "content": "Tell me about retries"}]}
STREAM = {"accept": "text/event-stream"}


def key() -> dict[str, str]:
    return {"idempotency-key": f"q-{uuid.uuid4()}"}


async def started(client: httpx.AsyncClient) -> int:
    return int(total((await client.get("/metrics")).text, "ssegate_generations_started_total"))


async def test_the_same_key_and_body_is_the_same_generation(ssegate_server: ServerFactory) -> None:
    headers = key()
    async with ssegate_server() as client:
        first = await client.post("/v1/generations", json=QUESTION, headers=headers)
        again = await client.post("/v1/generations", json=QUESTION, headers=headers)
        # The same JSON written differently is the same body.
        spaced = await client.post(
            "/v1/generations",
            content=b'{ "messages" : [ {"content": "Tell me about retries", "role": "user"} ] }',
            headers={**headers, "content-type": "application/json"},
        )
        assert await started(client) == 1

    assert first.status_code == 201
    assert (again.status_code, spaced.status_code) == (200, 200)
    assert again.json()["id"] == spaced.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["events_url"] == first.json()["events_url"]


async def test_the_same_key_with_another_body_is_409(ssegate_server: ServerFactory) -> None:
    headers = key()
    async with ssegate_server() as client:
        first = await client.post("/v1/generations", json=QUESTION, headers=headers)
        other = {"messages": [{"role": "user", "content": "Something else"}]}
        refused = await client.post("/v1/generations", json=other, headers=headers)
        assert await started(client) == 1

    assert refused.status_code == 409
    error = refused.json()["error"]
    assert error["code"] == "idempotency_key_reused"
    assert error["generation_id"] == first.json()["id"]


async def test_different_keys_are_different_generations(ssegate_server: ServerFactory) -> None:
    async with ssegate_server() as client:
        one = await client.post("/v1/generations", json=QUESTION, headers=key())
        two = await client.post("/v1/generations", json=QUESTION, headers=key())
        assert await started(client) == 2
    assert one.json()["id"] != two.json()["id"]


async def test_a_bad_key_is_a_400(ssegate_server: ServerFactory) -> None:
    async with ssegate_server() as client:
        response = await client.post("/v1/generations", json=QUESTION, headers={"idempotency-key": "x" * 300})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_idempotency_key"


async def test_concurrent_retries_with_one_key_make_one_generation(ssegate_server: ServerFactory) -> None:
    headers = key()
    async with ssegate_server() as client:
        answers = await asyncio.gather(
            *(client.post("/v1/generations", json=QUESTION, headers=headers) for _ in range(5))
        )
        assert await started(client) == 1
    assert sorted(a.status_code for a in answers) == [200, 200, 200, 200, 201]
    assert len({a.json()["id"] for a in answers}) == 1


async def test_a_streamed_retry_with_the_key_gets_the_same_stream(ssegate_server: ServerFactory) -> None:
    headers = {**key(), **STREAM}
    async with ssegate_server() as client:
        first = await read_stream(client, "POST", "/v1/generations", headers=headers, json_body=QUESTION)
        again = await read_stream(client, "POST", "/v1/generations", headers=headers, json_body=QUESTION)
        assert await started(client) == 1
    assert first.headers["x-generation-id"] == again.headers["x-generation-id"]
    assert [e.id for e in again.events] == [e.id for e in first.events]
    assert again.text == first.text


async def resume_by_post(
    client: httpx.AsyncClient, headers: dict[str, str], cut_after: int
) -> tuple[list[Any], list[Any], str, str]:
    """Read ``cut_after`` events of a streamed start, hang up, POST again with Last-Event-ID."""
    cut = await read_stream(
        client, "POST", "/v1/generations", headers=headers, json_body=QUESTION, max_events=cut_after
    )
    last = cut.events[-1].id
    assert last
    rest = await read_stream(
        client, "POST", "/v1/generations", headers={**headers, "last-event-id": last}, json_body=QUESTION
    )
    assert rest.status == 200
    return cut.events, rest.events, cut.headers["x-generation-id"], rest.headers["x-generation-id"]


async def test_a_reconnect_that_repeats_the_post_continues_the_generation(
    ssegate_server: ServerFactory,
) -> None:
    # No key: a generic client's reconnect repeats its POST with the Last-Event-ID it got to.
    async with ssegate_server(demo_tokens_per_second=100.0) as client:
        before, after, first_id, second_id = await resume_by_post(client, STREAM, cut_after=5)
        assert await started(client) == 1

    assert first_id == second_id
    ids = [e.id for e in before + after]
    assert len(ids) == len(set(ids))  # nothing twice
    assert after[-1].event == "done"
    assert before[0].event == "start"
    assert "start" not in [e.event for e in after]  # continued, not started over


async def test_the_key_works_across_processes_on_one_redis(
    ssegate_server: ServerFactory, redis_server: str
) -> None:
    headers = key()
    async with ssegate_server(redis_url=redis_server) as one, ssegate_server(redis_url=redis_server) as two:
        first = await one.post("/v1/generations", json=QUESTION, headers=headers)
        again = await two.post("/v1/generations", json=QUESTION, headers=headers)
        other = await two.post(
            "/v1/generations", json={"messages": [{"role": "user", "content": "no"}]}, headers=headers
        )
        assert await started(one) + await started(two) == 1
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert other.status_code == 409
