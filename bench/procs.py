"""Start and stop the servers under test: our own child processes only, addressed by PID."""

from __future__ import annotations

import contextlib
import http.client
import os
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

# A loaded 2-core machine took over 30 s to start two workers over Redis (imports, multiprocess
# metrics); a server that never listens still fails, later.
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 8.0
# After the first worker answers, the others may still be importing (about a second here).
WORKER_SETTLE_S = 1.5


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _raise_fd_limit() -> None:
    # Runs in the child before exec: 10,000 subscribers need 10,000 descriptors.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (nginx workers, uvicorn children), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout:.0f} s")


def wait_for_workers(
    proc: subprocess.Popen[bytes], port: int, workers: int, timeout: float = READY_TIMEOUT_S
) -> None:
    """A multi-process server listens before its workers run: wait until ``workers`` child
    processes exist and ``/readyz`` answers 200, then give their start-up time to finish."""
    deadline = time.monotonic() + timeout
    while len(descendants(proc.pid)) < 1 + workers or not _answers(port, "/readyz"):
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} while its workers started")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{workers} workers not ready on 127.0.0.1:{port} after {timeout:.0f} s")
        time.sleep(0.1)
    time.sleep(WORKER_SETTLE_S)


def _answers(port: int, path: str) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process we started, then SIGKILL it and any children it left behind."""
    if proc.poll() is None:
        family = descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            for pid in family:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.wait(STOP_TIMEOUT_S)


@contextlib.contextmanager
def running(
    argv: Sequence[str],
    port: int,
    *,
    env: Mapping[str, str] | None = None,
    log: Path,
    cwd: Path | None = None,
    ready_timeout: float = READY_TIMEOUT_S,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` until the block ends; ready once 127.0.0.1:``port`` accepts connections."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            preexec_fn=_raise_fd_limit,
        )
    try:
        wait_for_port(port, proc, ready_timeout)
        time.sleep(0.3)  # let start-up work (imports, JIT warm-up) finish before measuring memory
        yield proc
    finally:
        stop(proc)
