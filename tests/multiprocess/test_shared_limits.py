"""Limits hold across processes: two workers on one Redis enforce the configured start rate, not
twice it."""

from __future__ import annotations

import httpx
import pytest

from tests.multiprocess.processes import ssegate_processes

pytestmark = pytest.mark.redis

RATE = 4


async def test_two_workers_accept_the_configured_start_rate_not_twice_it(redis_url: str) -> None:
    env = {"SSEGATE_GENERATION_STARTS_PER_MINUTE": str(RATE), "SSEGATE_DEMO_TTFT": "0"}
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    async with ssegate_processes(2, redis_url, env) as workers:
        statuses: list[int] = []
        refusals: list[httpx.Response] = []
        for n in range(3 * RATE):  # alternate, as a round-robin load balancer would
            async with httpx.AsyncClient(base_url=workers[n % 2].url, timeout=10) as client:
                response = await client.post("/v1/generations", json=body)
            statuses.append(response.status_code)
            if response.status_code == 429:
                refusals.append(response)

    assert statuses.count(201) == RATE, statuses
    assert statuses.count(429) == 2 * RATE, statuses
    for refused in refusals:
        assert refused.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
