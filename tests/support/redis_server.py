"""A private, real ``redis-server`` per test (or per worker), on a free port of 127.0.0.1.

By default no persistence (``--save "" --appendonly no``), so :meth:`RedisServer.restart` is
exactly "Redis came back empty", the case the event log must turn into a reset rather than a silent
gap. ``persistent=True`` turns the append-only file on (fsync at every write), so a restart comes
back with every acknowledged write. Import the fixtures into a ``conftest.py`` that needs them.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
import time
from collections.abc import Iterator

import pytest

from tests.support.redis_process import ServerProcess, start_serving
from tests.support.servers import free_port

REDIS_SERVER = "redis-server"
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
        deadline = time.monotonic() + _START_TIMEOUT
        self._server: ServerProcess | None = start_serving(lambda: self._serve_on(free_port()), deadline)
        self.port = self._server.port
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def _serve_on(self, port: int) -> ServerProcess:
        args = ["--port", str(port), "--bind", "127.0.0.1", "--dir", self._dir.name, "--save", ""]
        if self.persistent:  # every acknowledged write survives a kill
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:  # a restart comes back empty, as a cache-only Redis does
            args += ["--appendonly", "no"]
        return ServerProcess(self._binary, args, port)

    def start(self) -> None:
        """Start it again after :meth:`kill`, on the same port (clients reconnect to its URL)."""
        server = self._serve_on(self.port)
        try:
            server.wait_started(time.monotonic() + _START_TIMEOUT)
        except RuntimeError:
            server.kill()
            raise
        self._server = server

    def kill(self) -> None:
        """Stop the server abruptly (SIGKILL): its data is gone, as after a crash."""
        if self._server is not None:
            self._server.kill()
            self._server = None

    def freeze(self) -> None:
        """Stop the server without closing anything (SIGSTOP): commands sent meanwhile wait in its
        socket buffers and run on :meth:`thaw`, after their clients may have given up on them."""
        assert self._server is not None
        self._server.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self._server is not None
        self._server.process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        self.kill()
        self.start()

    def close(self) -> None:
        self.kill()
        self._dir.cleanup()


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
