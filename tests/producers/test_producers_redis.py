"""An app's producer in one process, its viewer in another, over a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from ssegate.config import Settings
from ssegate.mount import mount
from tests.producers.agent_server import LEASE_TTL
from tests.support.servers import free_port, serve_asgi
from tests.support.sse import read_stream

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parents[2]
_START_TIMEOUT = 20.0


class AgentProcess:
    """tests/producers/agent_server.py in a child process we started (and stop, by PID)."""

    def __init__(self, redis_url: str, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.producers.agent_server", str(self.port), redis_url],
                cwd=ROOT,
                env={k: v for k, v in os.environ.items() if not k.startswith("SSEGATE_")},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        async with httpx.AsyncClient(base_url=self.url, timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    break
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/sse/healthz")).status_code == 200:
                        return
                await asyncio.sleep(0.05)
        raise AssertionError(f"the agent process did not start:\n{self.log.read_text(errors='replace')}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()


@contextlib.asynccontextmanager
async def agent_process(redis_url: str) -> AsyncIterator[AgentProcess]:
    with tempfile.TemporaryDirectory(prefix="ssegate-agent-") as directory:
        agent = AgentProcess(redis_url, Path(directory) / "agent.log")
        try:
            await agent.wait_ready()
            yield agent
        finally:
            agent.stop()


def viewer_app(redis_url: str) -> FastAPI:
    """Another process's view of the same Redis: a host app without the producer."""
    app = FastAPI()
    mount(app, "/sse", Settings(redis_url=redis_url, lease_ttl=LEASE_TTL, access_log=False))
    return app


async def test_a_viewer_in_another_process_sees_the_producer_and_resumes(redis_url: str) -> None:
    async with (
        agent_process(redis_url) as agent,
        serve_asgi(viewer_app(redis_url)) as viewer_url,
        httpx.AsyncClient(base_url=agent.url, timeout=10) as producing,
        httpx.AsyncClient(base_url=viewer_url, timeout=10) as viewing,
    ):
        created = await producing.post(
            "/sse/v1/generations",
            json={"provider": "counter", "messages": [{"role": "user", "content": "20"}]},
        )
        assert created.status_code == 201, created.text
        events_url = created.json()["events_url"]
        # Watched only from the other process: the producer runs on (not abandoned) and ends done.
        seen = await read_stream(viewing, "GET", events_url)
        assert seen.types[:2] == ["start", "status"]
        assert seen.types[-1] == "done"
        assert seen.text == "".join(f"{i} " for i in range(20))
        cut = seen.events[5].id
        assert cut is not None
        rest = await read_stream(viewing, "GET", events_url, headers={"last-event-id": cut})
        assert [e.id for e in rest.events] == [e.id for e in seen.events[6:]]


async def test_cancel_from_the_viewers_process_stops_the_producer(redis_url: str) -> None:
    async with (
        agent_process(redis_url) as agent,
        serve_asgi(viewer_app(redis_url)) as viewer_url,
        httpx.AsyncClient(base_url=agent.url, timeout=10) as producing,
        httpx.AsyncClient(base_url=viewer_url, timeout=10) as viewing,
    ):
        body = {"provider": "counter", "messages": [{"role": "user", "content": "forever"}]}
        created = (await producing.post("/sse/v1/generations", json=body)).json()
        first = await read_stream(viewing, "GET", created["events_url"], max_events=4)
        assert first.types[:2] == ["start", "status"]
        assert (await viewing.post(created["cancel_url"])).status_code == 202
        # The producing process learns it and stops writing: its state says cancelled, and no
        # event follows the terminal one.
        whole = await read_stream(producing, "GET", created["events_url"])
        assert whole.types[-1] == "done"
        assert whole.data("done")[-1]["finish_reason"] == "cancelled"
        described = (await producing.get(created["url"])).json()
        assert described["state"] == "cancelled"
