"""``ssegate serve`` says it is serving only once a client can connect.

With a vendor key configured, the app's start-up imports the vendor SDK first (seconds); a script
or a person that connects as soon as the line appears must not be refused.
"""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.servers import free_port

_WAIT = 60.0


@dataclass
class Serving:
    port: int
    pid: int
    lines: list[str]  # its stderr up to and with the "serving on" line


@asynccontextmanager
async def serving(
    env: dict[str, str], preexec_fn: Callable[[], None] | None = None, args: Sequence[str] = ()
) -> AsyncIterator[Serving]:
    """``python -m ssegate serve`` (with ``args``) until it has announced itself; stopped (by its
    PID) on exit."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ssegate", "serve", "--port", str(port), *args,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        stderr=asyncio.subprocess.PIPE, preexec_fn=preexec_fn,
    )  # fmt: skip
    assert process.stderr is not None
    try:
        lines: list[str] = []
        while not (lines and lines[-1].startswith("ssegate: serving on")):
            line = (await asyncio.wait_for(process.stderr.readline(), _WAIT)).decode()
            assert line, f"ssegate serve ended before announcing itself: {lines}"
            lines.append(line.rstrip("\n"))
        yield Serving(port, process.pid, lines)
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), _WAIT)


async def test_serve_announces_itself_once_it_accepts_connections() -> None:
    env = {
        "ANTHROPIC_API_KEY": "test",
        "SSEGATE_ANTHROPIC_BASE_URL": "http://127.0.0.1:9",  # never called: the SDK is only loaded
    }
    async with serving(env) as server:
        assert f"http://127.0.0.1:{server.port}" in server.lines[-1]
        async with httpx.AsyncClient(timeout=_WAIT) as client:
            response = await client.get(f"http://127.0.0.1:{server.port}/healthz")  # at once: no retry
    assert response.status_code == 200


def _limits_of(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-files line in /proc/<pid>/limits")


async def _serve_with_open_files_limit(soft: int, hard: int, max_streams: int) -> tuple[list[str], int]:
    """``ssegate serve`` started under these limits: its stderr lines up to its announcement (a
    warning comes just before it) and its open-files soft limit while it serves."""
    env = {"SSEGATE_MAX_STREAMS_TOTAL": str(max_streams)}

    def lowered() -> None:  # in the child, before it runs Python
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    async with serving(env, lowered) as server:
        return server.lines, _limits_of(server.pid)[0]


async def test_serve_lifts_its_open_files_limit_to_the_hard_one() -> None:
    # A soft limit of 256 would refuse the 250th viewer; the hard one here allows 5,000 streams.
    hard = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 20_000)
    lines, soft = await _serve_with_open_files_limit(256, hard, max_streams=hard // 4)
    assert soft == hard
    assert not any("open files" in line for line in lines)


async def test_serve_warns_when_even_the_hard_open_files_limit_is_too_low() -> None:
    lines, soft = await _serve_with_open_files_limit(256, 1024, max_streams=10_000)
    assert soft == 1024
    warning = next(line for line in lines if "open files" in line)
    assert warning.startswith("ssegate: warning: open files are limited to 1024")
    assert "SSEGATE_MAX_STREAMS_TOTAL" in warning


async def test_serve_on_a_taken_port_says_so_and_exits() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ssegate", "serve", "--port", str(port),
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, stderr = await asyncio.wait_for(process.communicate(), _WAIT)
    assert process.returncode == 3  # uvicorn's exit status for a server that could not start
    assert "address already in use" in stderr.decode().lower()
    assert "serving on" not in stderr.decode()


async def test_serve_out_of_file_descriptors_pauses_accepting_and_serves_again() -> None:
    def few_files() -> None:  # in the child, before it runs Python
        resource.setrlimit(resource.RLIMIT_NOFILE, (96, 96))

    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ssegate", "serve", "--port", str(port),
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SSEGATE_MAX_STREAMS_TOTAL": "10"},
        stderr=asyncio.subprocess.PIPE, preexec_fn=few_files,
    )  # fmt: skip
    assert process.stderr is not None
    clients: list[socket.socket] = []
    try:
        line = ""
        while not line.startswith("ssegate: serving on"):
            line = (await asyncio.wait_for(process.stderr.readline(), _WAIT)).decode()
            assert line, "ssegate serve ended before announcing itself"
        # More idle connections than it has descriptors left: the kernel queues the rest.
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(120)]
        while "not accepting for" not in line:
            line = (await asyncio.wait_for(process.stderr.readline(), _WAIT)).decode()
            assert line, "ssegate serve ended instead of pausing"
        assert "Too many open files" in line
        for client in clients:
            client.close()
        clients = []
        async with httpx.AsyncClient(timeout=_WAIT) as client:
            response = await client.get(f"http://127.0.0.1:{port}/healthz")
        assert response.status_code == 200
        assert process.returncode is None
    finally:
        for client in clients:
            client.close()
        process.terminate()
        await asyncio.wait_for(process.wait(), _WAIT)
