"""Limits hold across processes: two workers on one Redis enforce the configured start rate, not
twice it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.multiprocess.processes import ssegate_processes

pytestmark = pytest.mark.redis

RATE = 4


async def test_two_workers_accept_the_configured_start_rate_not_twice_it(redis_url: str) -> None:
    # A principal of this run's own: the Redis Cluster is shared by the worker's tests, and the
    # window counts every start of the principal's within the minute, whichever test made it.
    principal = f"rate-{uuid.uuid4().hex[:12]}"
    env = {
        "SSEGATE_GENERATION_STARTS_PER_MINUTE": str(RATE),
        "SSEGATE_DEMO_TTFT": "0",
        "SSEGATE_API_KEYS": f"{principal}:k-{principal}:generate",
    }
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    headers = {"authorization": f"Bearer k-{principal}"}
    async with ssegate_processes(2, redis_url, env) as workers:
        statuses: list[int] = []
        refusals: list[httpx.Response] = []
        for n in range(3 * RATE):  # alternate, as a round-robin load balancer would
            async with httpx.AsyncClient(base_url=workers[n % 2].url, timeout=10, headers=headers) as client:
                response = await client.post("/v1/generations", json=body)
            statuses.append(response.status_code)
            if response.status_code == 429:
                refusals.append(response)

    assert statuses.count(201) == RATE, statuses
    assert statuses.count(429) == 2 * RATE, statuses
    for refused in refusals:
        assert refused.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 60


@contextlib.asynccontextmanager
async def held_stream(url: str, topic: str) -> AsyncIterator[httpx.Response]:
    """A topic stream held open (topics never end by themselves) until the block ends."""
    async with (
        httpx.AsyncClient(base_url=url, timeout=10) as client,
        client.stream("GET", f"/v1/topics/{topic}/events") as response,
    ):
        yield response


async def status_of_one_more(url: str, topic: str) -> tuple[int, str]:
    async with held_stream(url, topic) as response:
        if response.status_code == 200:
            return 200, ""
        body = await response.aread()
        return response.status_code, json.loads(body)["error"]["code"]


async def until_accepted(url: str, topic: str, within: float) -> float:
    """Seconds until one more stream is accepted (a slot was freed), at most ``within``."""
    started = time.monotonic()
    while (status := await status_of_one_more(url, topic))[0] != 200:
        assert status == (429, "server_busy"), status
        assert time.monotonic() - started < within, "the slot never freed"
        await asyncio.sleep(0.1)  # a lease running out is a time, not an event
    return time.monotonic() - started


async def test_two_workers_hold_the_configured_number_of_streams_not_twice_it(redis_url: str) -> None:
    limit = 3
    env = {"SSEGATE_MAX_STREAMS_PER_PRINCIPAL": str(limit), "SSEGATE_MAX_STREAMS_TOTAL": "0"}
    async with ssegate_processes(2, redis_url, env) as workers, contextlib.AsyncExitStack() as held:
        for n in range(limit):  # alternate, as a round-robin load balancer would
            response = await held.enter_async_context(held_stream(workers[n % 2].url, "t"))
            assert response.status_code == 200
        for worker in workers:  # full on both: the limit counts every process's streams
            assert await status_of_one_more(worker.url, "t") == (429, "too_many_streams")
        await held.aclose()  # every stream closed: their slots are given back
        async with contextlib.AsyncExitStack() as again:
            for n in range(limit):
                deadline = time.monotonic() + 10
                while True:  # the give-back is sent when the stream closes; poll for it, bounded
                    response = await again.enter_async_context(held_stream(workers[n % 2].url, "t"))
                    if response.status_code == 200:
                        break
                    assert time.monotonic() < deadline, response.status_code
                    await asyncio.sleep(0.05)


async def test_a_killed_workers_stream_slots_free_themselves_within_a_lease(redis_url: str) -> None:
    lease = 1.5
    env = {
        "SSEGATE_MAX_STREAMS_TOTAL": "2",
        "SSEGATE_MAX_STREAMS_PER_PRINCIPAL": "0",
        "SSEGATE_LEASE_TTL": str(lease),
    }
    async with (
        ssegate_processes(2, redis_url, env) as (doomed, survivor),
        held_stream(doomed.url, "a") as first,
        held_stream(survivor.url, "b") as second,
    ):
        assert (first.status_code, second.status_code) == (200, 200)
        assert await status_of_one_more(survivor.url, "c") == (429, "server_busy")
        doomed.kill()  # SIGKILL: it gives nothing back
        # Its slot frees once its lease runs out (the survivor's own stream stays counted).
        waited = await until_accepted(survivor.url, "c", within=lease + 10)
        assert waited <= lease + 5
        assert await status_of_one_more(survivor.url, "c") == (200, "")
        async with held_stream(survivor.url, "d") as third:
            assert third.status_code == 200
            assert await status_of_one_more(survivor.url, "e") == (429, "server_busy")
