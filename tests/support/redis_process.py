"""One ``redis-server`` process of the tests' own: started, known to serve, killed by its PID.

Used by the single server (:mod:`tests.support.redis_server`), the cluster and the Sentinel setup.
Its log is drained for its whole life (a full pipe would block redis-server); the last lines are
quoted if it does not start.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TypeVar

import redis

_READY = "Ready to accept connections"
# A port free_port() found free may be taken (by another test's client socket, say) before the
# server binds it: it exits at once, and is started again on fresh ports (seen in a CI run).
_START_ATTEMPTS = 4


class ServerProcess:
    """One ``redis-server`` process we started (and only we stop, by its PID), with any arguments."""

    def __init__(self, binary: str, args: list[str], port: int, ready: str = _READY) -> None:
        self.port = port
        self._ready_line = ready  # what the server logs once it serves (a sentinel says another thing)
        command = [binary, *args, "--daemonize", "no", "--loglevel", "notice"]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._ready = threading.Event()  # set when it serves, or when its log ends (it exited)
        self._serving = False
        self._log_tail: deque[str] = deque(maxlen=5)  # for the error if it does not start
        # Drain the log for the server's whole life: a full pipe would block redis-server.
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._log_tail.append(line.rstrip())
            if self._ready_line in line:
                self._serving = True
                self._ready.set()
        self._ready.set()

    def wait_started(self, deadline: float) -> None:
        """Until the server logs that it accepts connections (raises if it exited or took too long)."""
        self._ready.wait(max(0.0, deadline - time.monotonic()))
        if not self._serving or self.process.poll() is not None:
            said = " | ".join(self._log_tail)
            exit_code = self.process.poll()
            raise RuntimeError(f"redis-server on port {self.port} did not start (exit {exit_code}): {said}")

    def client(self) -> redis.Redis[str]:
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=5.0)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._drainer.join()
        if self.process.stdout is not None:
            self.process.stdout.close()


Server = TypeVar("Server", bound=ServerProcess)


def start_serving(make: Callable[[], Server], deadline: float) -> Server:
    """``make()``'s server once it serves; made again (fresh ports) if it exited before that."""
    for attempt in range(_START_ATTEMPTS):
        server = make()
        try:
            server.wait_started(deadline)
        except RuntimeError:
            try:
                server.process.wait(timeout=1.0)
                exited_by_itself = True
            except subprocess.TimeoutExpired:
                exited_by_itself = False
            server.kill()
            if exited_by_itself and attempt + 1 < _START_ATTEMPTS:
                continue  # most likely its port was taken meanwhile
            raise
        return server
    raise AssertionError("unreachable")
