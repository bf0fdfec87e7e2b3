"""SIGTERM on a real ``ssegate serve`` process: viewers move to another process without losing an
event, running generations finish within the drain timeout (or end with a clear event), and a
public bind without keys is refused before anything starts."""

from __future__ import annotations

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
    statuses = []
    async with httpx.AsyncClient(base_url=process.url, timeout=2) as client:
        for _ in range(2000):
            try:
                statuses.append((await client.get("/readyz")).status_code)
            except httpx.TransportError:
                return statuses
    raise AssertionError(f"the draining process kept answering: {statuses[-5:]}")


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


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_stopping_a_single_memory_process_ends_open_streams_cleanly_and_at_once(
    tmp_path: Path, signum: signal.Signals
) -> None:
    # Ctrl-C on `make run` with a browser tab open: the streams end with a clean "reconnect",
    # the process exits without waiting out a generation nobody can read any more, and without
    # a traceback.
    env = {**PACE, "SSEGATE_DEMO_TOKENS_PER_SECOND": "20"}
    process = SsegateProcess(free_port(), None, env, tmp_path / "serve.log")  # memory log
    server = process.process
    try:
        assert await process.wait_ready(), process.output()
        created = await start(process, LONG)
        _, comments, signalled_at = await watch_until_the_server_ends_it(
            process, created["events_url"], signum=signum, after=3
        )
        ended_after = time.monotonic() - signalled_at
        # uvicorn re-raises a caught SIGTERM once shut down, so the exit status names the signal.
        assert server.wait(_WAIT) in (0, -signum)
        exited_after = time.monotonic() - signalled_at
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert comments[-1] == "server draining; reconnect"
    assert ended_after < 2.0
    assert exited_after < 4.0  # uvicorn's graceful-shutdown timeout (5 s) was not needed
    assert "Traceback" not in process.output()
