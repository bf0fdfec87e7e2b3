"""SIGTERM on a real ``ssegate serve`` process: viewers move to another process without losing an
event, running generations finish within the drain timeout (or end with a clear event), and a
public bind without keys is refused before anything starts."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from ssegate.codec.events import Comment, Event
from tests.multiprocess.processes import SsegateProcess, ssegate_processes
from tests.support.servers import free_port
from tests.support.sse import iter_stream, read_stream

pytestmark = pytest.mark.redis

PACE = {"SSEGATE_DEMO_TTFT": "0.05", "SSEGATE_DEMO_TOKENS_PER_SECOND": "100", "SSEGATE_RETRY_MS": "50"}
LONG = {"messages": [{"role": "user", "content": "/long"}]}  # ~500 tokens: ~5 s at 100/s
_WAIT = 30.0


async def start(process: SsegateProcess, body: dict[str, Any]) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=process.url, timeout=_WAIT) as client:
        response = await client.post("/v1/generations", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def watch_until_the_server_ends_it(
    process: SsegateProcess, url: str, *, signum: int = signal.SIGTERM, after: int = 10
) -> tuple[list[Event], list[str], float]:
    """Read from ``process`` and send it ``signum`` after ``after`` events (to the PID we started).

    Returns what arrived before the stream closed, and the time the signal was sent.
    """
    events: list[Event] = []
    comments: list[str] = []
    signalled_at = 0.0
    async with (
        httpx.AsyncClient(base_url=process.url, timeout=_WAIT) as client,
        client.stream("GET", url) as response,
    ):
        assert response.status_code == 200
        async for item in iter_stream(response):
            if isinstance(item, Comment):
                comments.append(item.text)
                continue
            events.append(item)
            if len(events) == after:
                signalled_at = time.monotonic()
                process.process.send_signal(signum)
    return events, comments, signalled_at


async def readiness_until_gone(process: SsegateProcess) -> list[int]:
    """/readyz's answers until the listener closes (the drain period: generations finishing)."""
    statuses = []
    async with httpx.AsyncClient(base_url=process.url, timeout=2) as client, asyncio.timeout(_WAIT):
        while True:
            try:
                statuses.append((await client.get("/readyz")).status_code)
            except httpx.TransportError:
                return statuses
            await asyncio.sleep(0.05)  # a load balancer's probe, not a busy loop


async def test_sigterm_hands_the_viewer_to_another_process_without_losing_an_event(redis_url: str) -> None:
    env = {**PACE, "SSEGATE_DRAIN_TIMEOUT": "30"}
    async with ssegate_processes(2, redis_url, env) as (a, b):
        created = await start(a, LONG)
        before, comments, _ = await watch_until_the_server_ends_it(a, created["events_url"])
        # The draining process ended the stream itself, cleanly, long before the answer was done.
        assert comments[-1] == "server draining; reconnect"
        assert "done" not in [e.event for e in before]
        # From the signal on, the draining process never says "ready" again, then stops accepting.
        assert set(await readiness_until_gone(a)) <= {503}
        async with httpx.AsyncClient(base_url=b.url, timeout=_WAIT) as client:
            rest = await read_stream(
                client, "GET", created["events_url"], headers={"Last-Event-ID": before[-1].id or ""}
            )
            whole = await read_stream(client, "GET", created["events_url"])
        assert [e.id for e in before + rest.events] == [e.id for e in whole.events]
        # The generation kept running on the draining process until it finished normally.
        assert whole.types[-1] == "done"
        assert whole.data("done")[0]["finish_reason"] == "stop"
        assert a.process.wait(_WAIT) is not None


async def test_sigterm_past_the_drain_timeout_ends_generations_with_a_clear_event(redis_url: str) -> None:
    env = {**PACE, "SSEGATE_DRAIN_TIMEOUT": "0.2"}
    async with ssegate_processes(2, redis_url, env) as (a, b):
        created = await start(a, {**LONG, "keep_running": True})
        a.terminate()
        a.process.wait(_WAIT)
        async with httpx.AsyncClient(base_url=b.url, timeout=_WAIT) as client:
            whole = await read_stream(client, "GET", created["events_url"])
        assert whole.types[-1] == "done"
        assert whole.data("done")[0]["reason"] == "shutdown"
        assert whole.data("done")[0]["finish_reason"] == "cancelled"


def test_serve_refuses_a_public_bind_without_keys_in_one_line() -> None:
    env = {"PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "ssegate", "serve", "--host", "0.0.0.0", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=_WAIT,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("ssegate: refusing to serve 0.0.0.0 without API keys")
    assert "--allow-public-without-auth" in lines[0]


def test_serve_refuses_bad_key_configuration_in_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ssegate", "serve", "--port", str(free_port())],
        env={"PATH": "/usr/bin:/bin", "SSEGATE_API_KEYS": "web:k:flying"},
        capture_output=True,
        text=True,
        timeout=_WAIT,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "unknown scope 'flying'" in result.stderr


async def test_ctrl_c_on_a_memory_process_ends_generations_with_an_event_the_viewer_gets_and_exits_0(
    tmp_path: Path,
) -> None:
    # Ctrl-C on `make run` with a browser tab open: the generation ends at once with
    # done {reason: "shutdown"}, which the tab receives (its events exist only in this process),
    # and the process exits 0 without a traceback, without waiting out uvicorn's graceful timeout.
    env = {**PACE, "SSEGATE_DEMO_TOKENS_PER_SECOND": "20"}
    process = SsegateProcess(free_port(), None, env, tmp_path / "serve.log")  # memory log
    server = process.process
    try:
        assert await process.wait_ready(), process.output()
        created = await start(process, LONG)
        events, _, signalled_at = await watch_until_the_server_ends_it(
            process, created["events_url"], signum=signal.SIGINT, after=3
        )
        ended_after = time.monotonic() - signalled_at
        status = server.wait(_WAIT)
        exited_after = time.monotonic() - signalled_at
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert events[-1].event == "done"
    assert '"reason":"shutdown"' in events[-1].data
    assert ended_after < 2.0
    assert status == 0
    assert exited_after < 4.0  # uvicorn's graceful-shutdown timeout (5 s) was not needed
    assert "Traceback" not in process.output()


async def test_sigterm_on_a_memory_process_keeps_listening_while_the_generation_finishes_then_exits_0(
    tmp_path: Path,
) -> None:
    # Issue 26, failure 8: the listener stays open for the drain (readyz 503, not "connection
    # refused"), new work is refused with 503 + Retry-After, the running generation finishes and
    # its viewer gets every event to `done`, and the exit status is 0, not 143.
    env = {**PACE, "SSEGATE_DEMO_TOKENS_PER_SECOND": "150", "SSEGATE_DRAIN_TIMEOUT": "30"}
    process = SsegateProcess(free_port(), None, env, tmp_path / "serve.log")  # memory log
    server = process.process
    try:
        assert await process.wait_ready(), process.output()
        created = await start(process, LONG)
        async with httpx.AsyncClient(base_url=process.url, timeout=_WAIT) as client:
            watching = asyncio.create_task(
                watch_until_the_server_ends_it(process, created["events_url"], after=3)
            )
            for _ in range(1000):  # until the signal (sent by the watcher) lands: 20 s at most
                if (ready := await client.get("/readyz")).status_code != 200:
                    break
                await asyncio.sleep(0.02)
            refused = await client.post("/v1/generations", json=LONG)
            statuses = await readiness_until_gone(process)
            events, comments, _ = await watching
        status = server.wait(_WAIT)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert ready.status_code == 503
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "draining"
    assert refused.headers["retry-after"]
    assert set(statuses) == {503}
    assert len(statuses) > 3  # the listener stayed open while the generation ran
    assert events[-1].event == "done"
    assert json.loads(events[-1].data)["finish_reason"] == "stop"
    assert "server draining; reconnect" not in comments
    assert status == 0
    assert "Traceback" not in process.output()


async def test_sigterm_on_a_memory_process_past_the_drain_timeout_ends_the_generation_for_its_viewer(
    tmp_path: Path,
) -> None:
    env = {**PACE, "SSEGATE_DEMO_TOKENS_PER_SECOND": "20", "SSEGATE_DRAIN_TIMEOUT": "0.5"}
    process = SsegateProcess(free_port(), None, env, tmp_path / "serve.log")  # memory log
    server = process.process
    try:
        assert await process.wait_ready(), process.output()
        created = await start(process, LONG)
        events, _, _ = await watch_until_the_server_ends_it(process, created["events_url"], after=3)
        status = server.wait(_WAIT)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert events[-1].event == "done"
    assert json.loads(events[-1].data)["reason"] == "shutdown"
    assert status == 0
