"""Real ``ssegate serve`` processes sharing one Redis, which tests may SIGKILL (by PID, ours only)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import httpx

from tests.support.servers import free_port

_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 5.0
# A free port can be taken by another test between our probe and the server's bind: try again.
_START_ATTEMPTS = 3
# Inherited settings would make the processes depend on the machine running the tests.
_INHERITED_PREFIXES = ("SSEGATE_", "ANTHROPIC_", "OPENAI_", "REDIS_URL")


class SsegateProcess:
    """One ``python -m ssegate serve`` child; its stderr goes to a file for failure messages."""

    def __init__(
        self,
        port: int,
        redis_url: str | None,
        env: Mapping[str, str],
        log_path: Path,
        args: Sequence[str] = (),
    ) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        clean = {k: v for k, v in os.environ.items() if not k.startswith(_INHERITED_PREFIXES)}
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ssegate", "serve", "--port", str(port)]
                + (["--redis", redis_url] if redis_url else [])
                + list(args),
                env={**clean, **env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would: no cleanup runs in the process."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def terminate(self) -> None:
        """SIGTERM: a graceful shutdown starts; :meth:`stop` waits for it."""
        if self.process.poll() is None:
            self.process.terminate()

    def stop(self) -> None:
        self.terminate()
        try:
            self.process.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()

    async def wait_ready(self) -> bool:
        """True once /healthz answers; False if the process exited first (e.g. its port was taken)."""
        deadline = time.monotonic() + _START_TIMEOUT
        async with httpx.AsyncClient(base_url=self.url, timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    return False
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/healthz")).status_code == 200:
                        return True
                await asyncio.sleep(0.05)
        raise AssertionError(f"ssegate on port {self.port} did not become ready:\n{self.output()}")


@contextlib.asynccontextmanager
async def ssegate_processes(
    count: int, redis_url: str, env: Mapping[str, str], args: Sequence[str] = ()
) -> AsyncIterator[list[SsegateProcess]]:
    """Start ``count`` servers on one Redis (``args``: more ``serve`` options); every one we
    started is stopped when the block ends."""
    started: list[SsegateProcess] = []
    with tempfile.TemporaryDirectory(prefix="ssegate-procs-") as directory:
        try:
            # In parallel: each process spends most of a second importing.
            ready = await asyncio.gather(
                *(
                    _start_one(Path(directory) / f"server{i}.log", redis_url, env, started, args)
                    for i in range(count)
                )
            )
            yield ready
        finally:
            for process in started:
                process.terminate()  # all at once: they shut down in parallel
            for process in started:
                process.stop()


async def _start_one(
    log_path: Path,
    redis_url: str,
    env: Mapping[str, str],
    started: list[SsegateProcess],
    args: Sequence[str] = (),
) -> SsegateProcess:
    for _ in range(_START_ATTEMPTS):
        process = SsegateProcess(free_port(), redis_url, env, log_path, args)
        started.append(process)
        if await process.wait_ready():
            return process
    raise AssertionError(f"ssegate did not start after {_START_ATTEMPTS} attempts:\n{process.output()}")
