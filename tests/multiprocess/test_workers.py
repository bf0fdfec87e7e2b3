"""``ssegate serve --workers 2 --redis URL``: one port, two worker processes on one real Redis.

The kernel hands each connection to either worker. The test keeps one keep-alive connection on
each worker (it finds out which worker holds a connection from /proc, the server is not changed),
then starts generations and resumes them part by part on alternating workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from ssegate.codec.events import Event
from tests.multiprocess.processes import SsegateProcess, ssegate_processes
from tests.support.sse import Received, iter_stream

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc"),
]

WORKERS = 2
ENV = {
    "SSEGATE_DEMO_TTFT": "0.05",
    # /long is ~500 tokens: about 2.5 s, so the first parts are read while it is still running.
    "SSEGATE_DEMO_TOKENS_PER_SECOND": "200",
    "SSEGATE_DRAIN_TIMEOUT": "1",
}
LONG = {"messages": [{"role": "user", "content": "/long"}], "keep_running": True}
PART = 60  # events per request before the client hangs up and resumes
_WAIT = 20.0


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (ppid is [1], start time is [19])."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def worker_pids(supervisor: int) -> dict[int, str]:
    """The supervisor's worker processes (not multiprocessing's resource tracker), PID -> start
    time, so that a PID reused later is never mistaken for one of ours."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _stat(int(entry.name))
        if stat is None or int(stat[1]) != supervisor:
            continue
        with contextlib.suppress(OSError):
            if b"spawn_main" in (entry / "cmdline").read_bytes():
                found[int(entry.name)] = stat[19]
    return found


def worker_holding(server_port: int, client_port: int, workers: dict[int, str]) -> int | None:
    """Which worker holds the server end of our connection from ``client_port``."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, remote = fields[1].rsplit(":", 1)[1], fields[2].rsplit(":", 1)[1]
                if int(local, 16) == server_port and int(remote, 16) == client_port:
                    inodes.add(f"socket:[{fields[9]}]")
    for pid in workers:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return pid
    return None


def served_by(response: httpx.Response, process: SsegateProcess, workers: dict[int, str]) -> int | None:
    client_port = response.extensions["network_stream"].get_extra_info("client_addr")[1]
    return worker_holding(process.port, client_port, workers)


@contextlib.asynccontextmanager
async def workers_of(process: SsegateProcess) -> AsyncIterator[dict[int, str]]:
    """The server's workers once both run; on exit the server stops and no worker outlives it."""
    deadline = time.monotonic() + _WAIT
    workers = worker_pids(process.process.pid)
    try:
        while len(workers) < WORKERS:
            assert time.monotonic() < deadline, f"workers {workers}:\n{process.output()}"
            await asyncio.sleep(0.05)  # nothing to await for a process to appear: look again
            workers = worker_pids(process.process.pid)
        yield workers
    finally:
        process.stop()
        # The supervisor stops its workers on SIGTERM; should one outlive it, end it here
        # (ours: the same PID and the same start time as when we found it).
        for pid, started in workers.items():
            stat = _stat(pid)
            if stat is not None and stat[19] == started:
                os.kill(pid, signal.SIGKILL)


@contextlib.asynccontextmanager
async def on_worker(
    process: SsegateProcess, workers: dict[int, str], wanted: int
) -> AsyncIterator[httpx.AsyncClient]:
    """A client whose one keep-alive connection the kernel gave to worker ``wanted``: new
    connections until one lands there."""
    deadline = time.monotonic() + _WAIT
    while True:
        assert time.monotonic() < deadline, f"no connection reached worker {wanted}:\n{process.output()}"
        client = httpx.AsyncClient(
            base_url=process.url, timeout=_WAIT, limits=httpx.Limits(max_connections=1)
        )
        try:
            response = await client.get("/healthz")
            assert response.status_code == 200
            if served_by(response, process, workers) == wanted:
                yield client
                return
        finally:
            await client.aclose()


async def read_events(
    client: httpx.AsyncClient,
    process: SsegateProcess,
    workers: dict[int, str],
    url: str,
    after: str | None = None,
    limit: int | None = None,
) -> tuple[Received, int | None]:
    """The events after ``after`` (at most ``limit``, then hang up) and the worker that served them."""
    headers = {"Last-Event-ID": after} if after else {}
    async with client.stream("GET", url, headers=headers) as response:
        received = Received(status=response.status_code, headers=response.headers)
        worker = served_by(response, process, workers)
        if response.status_code != 200:
            received.raw = await response.aread()
            return received, worker
        async for item in iter_stream(response):
            if isinstance(item, Event):
                received.events.append(item)
                if len(received.events) == limit:
                    break
    return received, worker


async def test_two_workers_serve_generations_and_resume_exactly_wherever_requests_land(
    redis_url: str,
) -> None:
    serve_args = ["--workers", str(WORKERS), "--provider", "demo"]
    async with (
        ssegate_processes(1, redis_url, ENV, serve_args) as (server,),
        workers_of(server) as workers,
    ):
        order = list(workers)
        for starter in order:  # each worker starts one generation
            async with on_worker(server, workers, starter) as client:
                response = await client.post("/v1/generations", json=LONG)
            assert response.status_code == 201, response.text
            assert response.json()["provider"] == "demo"
            events_url = response.json()["events_url"]
            parts: list[Received] = []
            after: str | None = None
            while not parts or parts[-1].types[-1:] != ["done"]:
                assert len(parts) < 50, [p.types[-3:] for p in parts]
                # Alternate: each part is read from the other worker than the one before.
                wanted = order[len(parts) % WORKERS]
                async with on_worker(server, workers, wanted) as client:
                    part, worker = await asyncio.wait_for(
                        read_events(client, server, workers, events_url, after, PART), _WAIT
                    )
                assert worker == wanted
                assert part.status == 200, part.raw
                assert part.events, "a resume before the end brings events"
                parts.append(part)
                after = part.events[-1].id
            resumed = [e for part in parts for e in part.events]
            # Once it has ended, each worker has the same whole stream: the parts, exactly.
            for worker in order:
                async with on_worker(server, workers, worker) as client:
                    whole, _ = await asyncio.wait_for(read_events(client, server, workers, events_url), _WAIT)
                assert [(e.id, e.event, e.data) for e in resumed] == [
                    (e.id, e.event, e.data) for e in whole.events
                ]
            assert len(parts) >= 3  # so both workers served parts of it
            assert resumed[0].event == "start"
            assert [e.event for e in resumed].count("done") == 1
            assert len({e.id for e in resumed}) == len(resumed)
            assert "".join(p.text for p in parts).strip()
