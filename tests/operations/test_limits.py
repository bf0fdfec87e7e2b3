"""Limits answer clearly (429 + Retry-After, 413, 503) and a stream's lifetime ends without loss."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import httpx

from ssegate.client import EventSource
from ssegate.codec.events import Comment, Event
from tests.security.harness import LONG_PROMPT, PROMPT, bearer, running, start
from tests.support.metrics import samples
from tests.support.sse import iter_stream, read_stream

SILENT: dict[str, Any] = {"demo_ttft": 30.0, "abandon_grace": 60.0}  # streams stay open with nothing to send


def assert_too_many(response: httpx.Response, code: str) -> None:
    assert response.status_code == 429, response.text
    assert int(response.headers["retry-after"]) >= 1
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]


async def test_the_11th_stream_over_a_limit_of_10_is_429_and_a_closed_one_frees_a_slot() -> None:
    async with running(auth=True, max_streams_per_principal=10, **SILENT) as server:
        created = await start(server, "alice")
        url = created["events_url"]
        async with contextlib.AsyncExitStack() as streams:
            opened = [
                await streams.enter_async_context(server.client.stream("GET", url, headers=bearer("alice")))
                for _ in range(10)
            ]
            assert all(r.status_code == 200 for r in opened)
            assert_too_many(await server.client.get(url, headers=bearer("alice")), "too_many_streams")
            # The limit is per principal: the admin can still watch.
            async with server.client.stream("GET", url, headers=bearer("root")) as other:
                assert other.status_code == 200
            await opened[0].aclose()
            for _ in range(200):  # the server notices the hang-up on its next read
                async with server.client.stream("GET", url, headers=bearer("alice")) as again:
                    if again.status_code == 200:
                        break
                await asyncio.sleep(0.01)
            assert again.status_code == 200


async def test_total_stream_limit_is_429_server_busy() -> None:
    async with running(max_streams_total=2, **SILENT) as server:
        created = await start(server)
        async with (
            server.client.stream("GET", created["events_url"]) as one,
            server.client.stream("GET", created["events_url"]) as two,
        ):
            assert one.status_code == two.status_code == 200
            assert_too_many(await server.client.get(created["events_url"]), "server_busy")


async def test_generation_start_rate_is_429_per_principal() -> None:
    async with running(auth=True, generation_starts_per_minute=3) as server:
        for _ in range(3):
            await start(server, "alice")
        response = await server.client.post("/v1/generations", json=PROMPT, headers=bearer("alice"))
        assert_too_many(response, "rate_limited")
        assert int(response.headers["retry-after"]) <= 60
        await start(server, "bob")  # another principal has its own budget


async def test_prompt_over_the_limit_is_413_and_body_over_the_limit_is_413() -> None:
    async with running(max_prompt_chars=100, max_body_bytes=10_000) as server:
        long_prompt = {
            "messages": [
                {"role": "user", "content": "x" * 60},
                {"role": "assistant", "content": "y" * 30},
                {"role": "user", "content": "z" * 20},
            ]
        }
        response = await server.client.post("/v1/generations", json=long_prompt)
        assert response.status_code == 413
        error = response.json()["error"]
        assert error["code"] == "prompt_too_large"
        assert "100" in error["message"]
        huge = {"messages": [{"role": "user", "content": "x" * 20_000}]}
        response = await server.client.post("/v1/generations", json=huge)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "body_too_large"
        await start(server)  # a prompt within the limit still works


async def test_max_stream_lifetime_ends_streams_cleanly_and_the_client_resumes_without_loss() -> None:
    async with running(max_stream_seconds=0.3, demo_tokens_per_second=300.0) as server:
        created = await start(server, body=LONG_PROMPT)
        url = server.base_url + created["events_url"]
        async with EventSource(url, stop_on=("done", "error"), max_retries=5) as source:
            events = [event async for event in source]
            reconnects = source.reconnects
        assert reconnects >= 1  # the server really ended connections mid-stream
        whole = await read_stream(server.client, "GET", created["events_url"])
        assert [e.id for e in events] == [e.id for e in whole.events]
        assert events[-1].event == "done"


async def test_lifetime_end_sends_retry_before_closing() -> None:
    async with running(max_stream_seconds=0.2, **SILENT) as server:
        created = await start(server)
        async with server.client.stream("GET", created["events_url"]) as response:
            raw = b"".join([chunk async for chunk in response.aiter_raw()])
        assert raw.rstrip(b"\n").endswith(b"retry: 50")  # the server's retry_ms, then a clean end
        assert raw.count(b"retry:") == 2


async def test_drain_refuses_new_work_with_503_and_ends_open_streams_cleanly() -> None:
    async with running(**SILENT, drain_timeout=0.1) as server:
        created = await start(server)
        assert (await server.client.get("/readyz")).status_code == 200
        async with server.client.stream("GET", created["events_url"]) as response:
            items = iter_stream(response)
            async for item in items:
                if isinstance(item, Event):
                    assert item.event == "start"
                    break
            # What the drain does to open streams with a shared log (or to those left at its end
            # with the memory log, whose streams first run to their generation's end).
            server.state.streams.drain(end_open=True)
            rest = [item async for item in items]  # the stream ends by itself
        assert rest == [Comment("server draining; reconnect")]
        ready = await server.client.get("/readyz")
        assert ready.status_code == 503
        refused = await server.client.get(created["events_url"])
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "draining"
        assert (await server.client.post("/v1/generations", json=PROMPT)).status_code == 503


def parse_metrics(text: str) -> dict[str, float]:
    """Each sample name's total over its labels, and ``name{label="value"}`` for each label
    value alone (summed over the other labels), parsed by prometheus_client's own parser."""
    values: dict[str, float] = {}
    for sample in samples(text):
        values[sample.name] = values.get(sample.name, 0.0) + sample.value
        for label, value in sample.labels.items():
            key = f'{sample.name}{{{label}="{value}"}}'
            values[key] = values.get(key, 0.0) + sample.value
    return values


async def metrics_when(server: Any, ready: Any) -> dict[str, float]:
    deadline = time.monotonic() + 10
    while True:
        response = await server.client.get("/metrics")
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        values = parse_metrics(response.text)
        if ready(values) or time.monotonic() > deadline:
            return values
        await asyncio.sleep(0.01)


async def test_metrics_expose_counters_after_traffic() -> None:
    async with running() as server:
        before = parse_metrics((await server.client.get("/metrics")).text)
        assert before["ssegate_events_sent_total"] == 0
        created = await start(server)
        whole = await read_stream(server.client, "GET", created["events_url"])
        failed = await start(server, body={"messages": [{"role": "user", "content": "/error please"}]})
        await read_stream(server.client, "GET", failed["events_url"])
        live = await start(server, body={"messages": [{"role": "user", "content": "/long /slow"}]})
        async with server.client.stream("GET", live["events_url"]) as response:
            assert response.status_code == 200
            during = parse_metrics((await server.client.get("/metrics")).text)
            assert during["ssegate_streams_open"] == 1
            assert during["ssegate_generations_running"] == 1
        await server.client.post(live["cancel_url"])
        values = await metrics_when(
            server,
            lambda v: (
                v['ssegate_generations_finished_total{state="error"}'] >= 1
                and v['ssegate_generations_finished_total{state="done"}'] >= 1
            ),
        )
        assert values["ssegate_events_sent_total"] >= len(whole.events)
        assert values["ssegate_bytes_sent_total"] >= len(whole.raw or b"") + 100
        assert values["ssegate_streams_total"] >= 3
        assert values["ssegate_generations_started_total"] == 3
        assert values['ssegate_generations_finished_total{state="done"}'] == 1
        assert values['ssegate_generations_finished_total{state="error"}'] == 1
        assert values['ssegate_upstream_errors_total{code="upstream_overloaded"}'] == 1
        assert values["ssegate_time_to_first_token_seconds_count"] >= 2
        assert values['ssegate_time_to_first_token_seconds_bucket{le="+Inf"}'] >= 2
        assert values["ssegate_generation_tokens_per_second_count"] >= 1
        assert values["ssegate_output_tokens_total"] > 0
        assert values['ssegate_http_responses_total{code="201"}'] == 3
        assert "ssegate_lagging_viewers" in values
