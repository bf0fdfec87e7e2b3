"""Every ```sh block of the README runs, in order, against a real ``ssegate serve`` (the demo model).

The convention (docs/development.md): ```sh blocks are run, ```console blocks are shown only
(``make run``, ``make test``); ``localhost:8000`` in a block means the server under test.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ssegate.codec import Event, EventStreamParser
from tests.docs.markdown import Block, blocks
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
RUNNABLE = [block for block in blocks(README) if block.info == "sh"]
_WAIT = 30.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``ssegate serve`` on a free port with a fast demo model; its ``host:port``."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "stderr"
    coverage = {name: value for name, value in os.environ.items() if name.startswith("COVERAGE_")}
    env = {
        **coverage,  # make test measures the server too
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "SSEGATE_DEMO_TTFT": "0",
        "SSEGATE_DEMO_TOKENS_PER_SECOND": "5000",
        "SSEGATE_ACCESS_LOG": "0",
    }
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "ssegate", "serve", "--port", str(port)], env=env, stderr=stderr
        )
    try:
        deadline = time.monotonic() + _WAIT
        while "ssegate: serving on" not in log.read_text():
            assert process.poll() is None, f"ssegate serve ended: {log.read_text()}"
            assert time.monotonic() < deadline, f"ssegate serve did not start: {log.read_text()}"
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(_WAIT)


def _run(block: Block, address: str, tmp_path: Path) -> tuple[int, str]:
    """The block under ``bash -e -o pipefail``; its exit status and output. Background jobs it
    leaves running (a subscriber's ``curl -N … &``) are stopped with it."""
    script = block.text.replace("localhost:8000", address).replace("127.0.0.1:8000", address)
    out = tmp_path / f"block-{block.line}.out"
    with out.open("w") as output:
        process = subprocess.Popen(
            ["bash", "-e", "-o", "pipefail", "-c", script],
            cwd=ROOT, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            status = process.wait(_WAIT)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            process.wait(_WAIT)
    return status, out.read_text()


def test_the_readme_has_runnable_examples_and_no_unmarked_shell() -> None:
    assert len(RUNNABLE) >= 2
    assert [block.line for block in blocks(README) if block.info in {"bash", "shell", "zsh", ""}] == []


@pytest.mark.parametrize("block", RUNNABLE, ids=lambda block: f"README.md:{block.line}")
def test_readme_example_runs(block: Block, server: str, tmp_path: Path) -> None:
    status, output = _run(block, server, tmp_path)
    assert status == 0, f"README.md:{block.line} exited {status}:\n{output}"
    assert output.strip(), f"README.md:{block.line} printed nothing"
    assert '"error":' not in output, output  # curl -s prints a 4xx's JSON body and exits 0
    assert "event: error" not in output, output


def test_the_first_generation_example_streams_a_whole_answer(server: str, tmp_path: Path) -> None:
    first = RUNNABLE[0]
    assert "/v1/generations" in first.text
    status, output = _run(first, server, tmp_path)
    assert status == 0
    events = [item for item in EventStreamParser().feed(output.encode()) if isinstance(item, Event)]
    assert events[0].event == "start"
    assert "".join(json.loads(event.data)["delta"] for event in events if event.event == "text")
    assert events[-1].event == "done"  # the whole answer, and then the stream ended by itself


def test_the_server_under_test_is_the_one_the_examples_reach(server: str) -> None:
    assert httpx.get(f"http://{server}/healthz", timeout=_WAIT).json() == {"status": "ok"}
