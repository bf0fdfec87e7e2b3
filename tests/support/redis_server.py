"""A private, real ``redis-server`` per test (or per worker), on a free port of 127.0.0.1.

By default no persistence (``--save "" --appendonly no``), so :meth:`RedisServer.restart` is
exactly "Redis came back empty", the case the event log must turn into a reset rather than a silent
gap. ``persistent=True`` turns the append-only file on (fsync at every write), so a restart comes
back with every acknowledged write. Import the fixtures into a ``conftest.py`` that needs them.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator

import pytest

from tests.support.servers import free_port

REDIS_SERVER = "redis-server"
_READY = "Ready to accept connections"
_START_TIMEOUT = 10.0


class RedisServer:
    """One redis-server process we started (and only we stop, by its PID)."""

    def __init__(self, *, persistent: bool = False) -> None:
        self.persistent = persistent
        binary = shutil.which(REDIS_SERVER)
        if binary is None:
            pytest.fail(f"{REDIS_SERVER} is not installed: run `make test`, which installs it", pytrace=False)
        self._binary = binary
        self._dir = tempfile.TemporaryDirectory(prefix="ssegate-redis-")
        self._process: subprocess.Popen[str] | None = None
        self._drainer: threading.Thread | None = None
        for attempt in range(3):  # another worker may take the free port before redis binds it
            self.port = free_port()
            self.url = f"redis://127.0.0.1:{self.port}/0"
            try:
                self.start()
                return
            except RuntimeError:
                if attempt == 2:
                    raise

    def start(self) -> None:
        command = [self._binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self._dir.name]
        if self.persistent:  # every acknowledged write survives a kill
            command += ["--save", "", "--appendonly", "yes", "--appendfsync", "always"]
        else:  # a restart comes back empty, as a cache-only Redis does
            command += ["--save", "", "--appendonly", "no"]
        command += ["--daemonize", "no", "--loglevel", "notice"]
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        ready = threading.Event()
        # Drain the log for the server's whole life: a full pipe would block redis-server.
        drainer = threading.Thread(target=_drain, args=(process, ready), daemon=True)
        drainer.start()
        if not ready.wait(_START_TIMEOUT) or process.poll() is not None:
            _stop(process, drainer)
            raise RuntimeError(f"redis-server on port {self.port} did not start (exit {process.poll()})")
        self._process, self._drainer = process, drainer

    def kill(self) -> None:
        """Stop the server abruptly (SIGKILL): its data is gone, as after a crash."""
        if self._process is not None and self._drainer is not None:
            _stop(self._process, self._drainer)
            self._process = self._drainer = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def close(self) -> None:
        self.kill()
        self._dir.cleanup()


def _stop(process: subprocess.Popen[str], drainer: threading.Thread) -> None:
    process.kill()
    process.wait()
    drainer.join()  # the pipe is at EOF once the process is gone
    assert process.stdout is not None
    process.stdout.close()


def _drain(process: subprocess.Popen[str], ready: threading.Event) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        if _READY in line:
            ready.set()
    ready.set()  # exited (e.g. port taken): the starter sees poll() is not None


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """URL of a redis-server shared by one worker's tests (use unique keys)."""
    server = RedisServer()
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """URL of a redis-server for one test module that starts ssegate processes against it."""
    server = RedisServer()
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of this test alone, which the test may kill and restart."""
    server = RedisServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def persistent_redis() -> Iterator[RedisServer]:
    """A redis-server of this test alone with the append-only file on: a restart keeps its data."""
    server = RedisServer(persistent=True)
    try:
        yield server
    finally:
        server.close()
