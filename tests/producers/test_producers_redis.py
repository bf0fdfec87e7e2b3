"""An app's producer in one process, its viewer in another, over a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
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

from ssegate.codec.events import Event
from ssegate.config import Settings
from ssegate.finish import FinishedGeneration
from ssegate.mount import mount
from tests.producers.agent_server import LEASE_TTL
from tests.producers.test_on_finish import SECRET, Receiver
from tests.support.servers import free_port, serve_asgi
from tests.support.sse import iter_stream, read_stream

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parents[2]
_START_TIMEOUT = 20.0


class AgentProcess:
    """tests/producers/agent_server.py in a child process we started (and stop, by PID)."""

    def __init__(self, redis_url: str, log: Path, webhook: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.producers.agent_server", str(self.port), redis_url]
                + ([webhook] if webhook else []),
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
async def agent_process(redis_url: str, webhook: str | None = None) -> AsyncIterator[AgentProcess]:
    with tempfile.TemporaryDirectory(prefix="ssegate-agent-") as directory:
        agent = AgentProcess(redis_url, Path(directory) / "agent.log", webhook)
        try:
            await agent.wait_ready()
            yield agent
        finally:
            agent.stop()


def viewer_app(
    redis_url: str, hooked: list[FinishedGeneration] | None = None, webhook: str | None = None
) -> FastAPI:
    """Another process's view of the same Redis: a host app without the producer."""
    app = FastAPI()
    settings = Settings(
        redis_url=redis_url,
        lease_ttl=LEASE_TTL,
        access_log=False,
        finish_webhook_url=webhook,
        finish_webhook_secret=SECRET if webhook else None,
    )
    mount(app, "/sse", settings, on_finish=(hooked.append if hooked is not None else ()))
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


FOREVER = {"provider": "counter", "messages": [{"role": "user", "content": "forever"}]}


async def test_cancelled_from_another_process_the_hook_runs_there_once(redis_url: str) -> None:
    receiver = Receiver()
    hooked: list[FinishedGeneration] = []
    async with receiver.serving() as hook_url:
        async with (
            agent_process(redis_url, hook_url) as agent,
            serve_asgi(viewer_app(redis_url, hooked, hook_url)) as viewer_url,
            httpx.AsyncClient(base_url=agent.url, timeout=10) as producing,
            httpx.AsyncClient(base_url=viewer_url, timeout=10) as viewing,
        ):
            created = (await producing.post("/sse/v1/generations", json=FOREVER)).json()
            first = await read_stream(viewing, "GET", created["events_url"], max_events=4)
            assert first.types[:2] == ["start", "status"]
            await viewing.post(created["cancel_url"])
            await asyncio.wait_for(receiver.arrived.wait(), 10)
            agent.stop()  # a graceful stop runs whatever hook it still had: none may come
        # Both processes are down now, their pending hooks done.
        assert len(hooked) == 1
        assert hooked[0].id == created["id"]
        assert (hooked[0].state, hooked[0].reason) == ("cancelled", "cancelled")
        assert hooked[0].text.startswith("0 1 ")
        assert [body["id"] for body in receiver.accepted] == [created["id"]]


async def test_a_killed_producer_is_finished_once_by_the_process_that_notices(redis_url: str) -> None:
    """Two other processes watch it; both notice the lease expire; exactly one ends it and calls
    its hook (the log's atomic terminal append decides which)."""
    receiver = Receiver()
    hooked: list[list[FinishedGeneration]] = [[], []]
    async with receiver.serving() as hook_url:
        async with (
            agent_process(redis_url, hook_url) as agent,
            serve_asgi(viewer_app(redis_url, hooked[0], hook_url)) as first_url,
            serve_asgi(viewer_app(redis_url, hooked[1], hook_url)) as second_url,
            httpx.AsyncClient(base_url=agent.url, timeout=10) as producing,
        ):
            created = (await producing.post("/sse/v1/generations", json=FOREVER)).json()
            watching = [asyncio.Event(), asyncio.Event()]

            async def watch(url: str, index: int) -> list[Event]:
                seen: list[Event] = []
                async with (
                    httpx.AsyncClient(base_url=url, timeout=10) as client,
                    client.stream("GET", created["events_url"]) as response,
                ):
                    async for item in iter_stream(response):
                        if isinstance(item, Event):
                            seen.append(item)
                            if len(seen) == 5:
                                watching[index].set()
                            if item.event in ("done", "error"):
                                break
                return seen

            viewers = [asyncio.create_task(watch(url, i)) for i, url in enumerate((first_url, second_url))]
            await asyncio.wait_for(asyncio.gather(*(w.wait() for w in watching)), 10)
            agent.kill()  # SIGKILL: no cleanup, no hook in that process
            endings = await asyncio.wait_for(asyncio.gather(*viewers), 15)
            for seen in endings:
                assert seen[-1].event == "error"
                assert json.loads(seen[-1].data)["code"] == "upstream_lost"
            assert endings[0][-1].id == endings[1][-1].id  # one terminal event, seen by both
            await asyncio.wait_for(receiver.arrived.wait(), 10)
        # Both viewer processes have stopped: their pending hooks ran (or never existed).
        finished_all = hooked[0] + hooked[1]
        assert len(finished_all) == 1
        finished = finished_all[0]
        assert finished.id == created["id"]
        assert finished.state == "error"
        assert finished.error is not None
        assert finished.error["code"] == "upstream_lost"
        assert finished.text.startswith("0 1 2 ")
        assert [body["id"] for body in receiver.accepted] == [created["id"]]
