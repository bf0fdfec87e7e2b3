"""``ssegate serve --workers 2``: any worker's /metrics answers for both (prometheus_client's
multiprocess mode), read with prometheus_client's own parser; the Grafana dashboard asks only for
what it has; a killed worker's live gauges stop counting, its counts stay."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.multiprocess.processes import SsegateProcess, ssegate_processes
from tests.multiprocess.test_workers import on_worker, workers_of
from tests.support.metrics import samples, total
from tests.support.promql import dashboard_exprs, problems
from tests.support.sse import read_stream

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc"),
]

ENV = {"SSEGATE_DEMO_TTFT": "0", "SSEGATE_DEMO_TOKENS_PER_SECOND": "2000"}
DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "ssegate.json"
# Started on each worker: the counts differ, so a sum that double-counted one would show.
STARTS = (3, 2)
_WAIT = 20.0


async def scrape(server: SsegateProcess) -> str:
    """/metrics from whichever worker the kernel hands a new connection to."""
    async with httpx.AsyncClient(base_url=server.url, timeout=_WAIT) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return response.text


async def scrape_until(server: SsegateProcess, ready: str, check: object) -> str:
    """Scrape until ``check(text)`` holds (another worker's hot-path counts reach the shared files
    within a second), at most _WAIT s."""
    deadline = time.monotonic() + _WAIT
    while True:
        text = await scrape(server)
        if check(text):  # type: ignore[operator]
            return text
        assert time.monotonic() < deadline, f"{ready} never held:\n{text}"
        await asyncio.sleep(0.1)


def pids(text: str, name: str = "process_resident_memory_bytes") -> set[int]:
    return {int(s.labels["pid"]) for s in samples(text) if s.name == name}


async def test_two_workers_metrics_add_up_with_bounded_labels(redis_url: str) -> None:
    args = ["--workers", "2", "--provider", "demo"]
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    async with ssegate_processes(1, redis_url, ENV, args) as (server,), workers_of(server) as workers:
        order = list(workers)
        ids: list[str] = []
        for worker, count in zip(order, STARTS, strict=True):
            async with on_worker(server, workers, worker) as client:
                for _ in range(count):
                    created = await client.post("/v1/generations", json=body)
                    assert created.status_code == 201, created.text
                    ids.append(created.json()["id"])
                    done = await read_stream(client, "GET", created.json()["events_url"])
                    assert done.types[-1] == "done"
                # A random path is counted as route "unmatched", never as itself.
                assert (await client.get(f"/nothing/{uuid.uuid4()}")).status_code == 404
        # An upstream failure on one worker, a front-door request on the other.
        async with on_worker(server, workers, order[0]) as client:
            failing = {"messages": [{"role": "user", "content": "/error please"}]}
            failed = await client.post("/v1/generations", json=failing)
            assert failed.status_code in (201, 502, 503, 529), failed.text
        async with on_worker(server, workers, order[1]) as client:
            door = {"model": "demo-1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
            assert (await client.post("/v1/messages", json=door)).status_code == 200
        n = sum(STARTS) + 2  # the failed one and the door's

        def counted(text: str) -> bool:
            return total(text, "ssegate_generations_started_total") == n and pids(text) == set(workers)

        for worker in order:  # each worker answers for both
            async with on_worker(server, workers, worker) as client:
                deadline = time.monotonic() + _WAIT
                while not counted(text := (await client.get("/metrics")).text):
                    assert time.monotonic() < deadline, text
                    await asyncio.sleep(0.1)
        assert total(text, "ssegate_generations_started_total", provider="demo", model="demo-1") == n
        created = {"route": "/v1/generations", "method": "POST", "code": "201"}
        answered_201 = sum(STARTS) + (failed.status_code == 201)
        assert total(text, "ssegate_http_responses_total", **created) == answered_201
        assert total(text, "ssegate_upstream_errors_total", provider="demo") == 1
        assert total(text, "ssegate_door_requests_total", door="anthropic_messages") == 1
        assert total(text, "ssegate_http_responses_total", route="unmatched", code="404") == len(order)
        assert total(text, "ssegate_time_to_first_token_seconds_count") >= sum(STARTS)
        assert total(text, "ssegate_generations_finished_total", state="done", finish_reason="length") >= 1
        assert total(text, "python_info") == 1  # the platform, once
        # Bounded: no label value is an id or a path; routes are templates.
        values = {v for s in samples(text) for v in s.labels.values()}
        assert not [v for v in values if v.startswith("/nothing") or any(i in v for i in ids)]
        routes = {s.labels["route"] for s in samples(text) if "route" in s.labels}
        assert routes <= {
            "/v1/generations",
            "/v1/generations/{generation_id}/events",
            "/metrics",
            "/healthz",
            "/v1/messages",
            "unmatched",
        }
        assert problems(dashboard_exprs(DASHBOARD), samples(text)) == []

        # A worker killed (no clean-up runs in it): its live gauges go, its counts stay.
        victim = order[0]
        os.kill(victim, signal.SIGKILL)
        after = await scrape_until(server, "the killed worker's gauges gone", lambda t: victim not in pids(t))
        assert total(after, "ssegate_generations_started_total") == n
