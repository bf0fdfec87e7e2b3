from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ssegate.codec.encoder import encode_event
from ssegate.codec.events import Event
from tests.client.fake_gateway import ANSWER, FakeGateway, serve_gateway
from tests.client.scripted import numbered, scripted_server, sse


@dataclass
class Finished:
    code: int
    stdout: str
    stderr: str


def client_env(**variables: str) -> dict[str, str]:
    """The test's environment with the client's settings removed, then ``variables`` added.

    The config directory points at an empty temp dir unless XDG_CONFIG_HOME is given, so a
    developer's own ~/.config/ssegate/config.toml never reaches a test.
    """
    env = {k: v for k, v in os.environ.items() if k not in CLIENT_VARIABLES}
    env["XDG_CONFIG_HOME"] = EMPTY_CONFIG_HOME
    env.update(variables)
    return env


CLIENT_VARIABLES = frozenset(
    {"SSEGATE_URL", "SSEGATE_API_KEY", "SSEGATE_CONFIG", "XDG_CONFIG_HOME", "NO_COLOR"}
)
EMPTY_CONFIG_HOME = tempfile.mkdtemp(prefix="ssegate-no-config-")


async def ssegate(*args: str, env: dict[str, str] | None = None) -> Finished:
    """Run the real command (``python -m ssegate``) as a user would, in a child process."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ssegate",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env if env is not None else client_env(),
    )
    stdout, stderr = await proc.communicate()
    assert proc.returncode is not None
    return Finished(proc.returncode, stdout.decode(), stderr.decode())


def assert_one_line_error(result: Finished, *words: str) -> None:
    assert result.code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ssegate: error: ")
    for word in words:
        assert word in lines[0]


def ssegate_stream(request: Request, n: int) -> Response:
    if n > 0:
        return Response(status_code=204)
    done = encode_event(Event(data='{"finish_reason": "stop"}', event="done", id="9"))
    text = [encode_event(Event(data=json.dumps({"delta": d}), event="text", id=d)) for d in ("Hel", "lo")]
    return sse([*numbered(1, 1), *text, done])


async def test_cli_watch_prints_events_and_text_inline_then_exits_0() -> None:
    async def handler(request: Request, n: int) -> Response:
        return ssegate_stream(request, n)

    async with scripted_server(handler) as (url, seen):
        result = await ssegate("watch", f"{url}/stream", "-H", "Authorization: Bearer k1")
    assert result.code == 0, result.stderr
    assert result.stdout == 'message: 1\nHello\ndone: {"finish_reason": "stop"}\n'
    assert seen[0].headers["authorization"] == "Bearer k1"


async def test_cli_watch_json_prints_one_object_per_event_and_resumes_from_an_id() -> None:
    async def handler(request: Request, n: int) -> Response:
        return sse(numbered(5, 6)) if n == 0 else Response(status_code=204)

    async with scripted_server(handler) as (url, seen):
        result = await ssegate("watch", f"{url}/stream", "--json", "--last-event-id", "4")
    assert result.code == 0, result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {"event": "message", "id": "5", "data": 5},
        {"event": "message", "id": "6", "data": 6},
    ]
    assert seen[0].last_event_id == "4"


async def test_cli_watch_reports_an_http_error_in_one_line() -> None:
    async def handler(request: Request, n: int) -> Response:
        return JSONResponse({"code": "not_found"}, status_code=404)

    async with scripted_server(handler) as (url, _):
        result = await ssegate("watch", f"{url}/nothing")
    assert_one_line_error(result, "404", "not_found")
    assert "Traceback" not in result.stderr


async def test_cli_watch_rejects_a_malformed_header_in_one_line() -> None:
    result = await ssegate("watch", "http://127.0.0.1:9/stream", "-H", "no colon here")
    assert_one_line_error(result, "Name: value")


async def test_cli_ask_streams_the_answer_and_sends_the_options() -> None:
    gateway = FakeGateway(ANSWER)
    async with serve_gateway(gateway) as url:
        result = await ssegate("ask", "say hello", "--url", url, "--model", "demo", "--api-key", "k1")
    assert result.code == 0, result.stderr
    assert result.stdout == "Hello\n"
    # Thinking goes aside, so stdout is the answer alone; the key in argv earns a warning.
    assert result.stderr.splitlines() == [
        "ssegate: warning: a key on the command line is visible in `ps` and your shell history; "
        "set SSEGATE_API_KEY or the config file instead",
        "thinking: hmm",
    ]
    assert gateway.started == [{"messages": [{"role": "user", "content": "say hello"}], "model": "demo"}]
    assert gateway.authorizations == ["Bearer k1"]


async def test_cli_ask_json_prints_every_event() -> None:
    async with serve_gateway(FakeGateway(ANSWER)) as url:
        result = await ssegate("ask", "hi", "--url", url, "--json")
    assert result.code == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["event"] for e in events] == ["start", "thinking", "text", "text", "usage", "done"]
    assert events[2] == {"event": "text", "id": "3", "data": {"delta": "Hel"}}


async def test_cli_ask_exits_1_on_an_error_event() -> None:
    failing: list[tuple[str, dict[str, Any]]] = [
        ANSWER[0],
        ("error", {"code": "upstream_error", "message": "the model is down", "retryable": True}),
    ]
    async with serve_gateway(FakeGateway(failing)) as url:
        result = await ssegate("ask", "hi", "--url", url)
    assert_one_line_error(result, "upstream_error", "the model is down")


async def test_cli_ask_ctrl_c_cancels_the_generation_and_exits_130() -> None:
    gateway = FakeGateway(ANSWER, hold_after=3)  # "Hel", then the model keeps thinking
    async with serve_gateway(gateway) as url:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ssegate", "ask", "hi", "--url", url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=client_env(),
        )  # fmt: skip
        assert proc.stdout is not None
        assert await proc.stdout.readexactly(3) == b"Hel"
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(gateway.cancelled.wait(), timeout=20)
        _, stderr = await proc.communicate()
    assert proc.returncode == 130
    assert b"Traceback" not in stderr


async def test_cli_ask_reports_an_unreachable_server_in_one_line() -> None:
    async with serve_gateway(FakeGateway(ANSWER)) as url:
        pass
    result = await ssegate("ask", "hi", "--url", url)
    assert_one_line_error(result, "cannot reach")


async def test_cli_publish_posts_the_event_and_prints_its_id() -> None:
    gateway = FakeGateway(ANSWER)
    async with serve_gateway(gateway) as url:
        result = await ssegate(
            "publish", "news", '{"n": 1}', "--event", "note", "--url", url, "--api-key", "k"
        )
        plain = await ssegate("publish", "news", "just words", "--url", url)
    assert (result.code, result.stdout) == (0, "7\n")
    assert plain.code == 0, plain.stderr
    assert gateway.published == [
        ("news", {"data": {"n": 1}, "event": "note"}),
        ("news", {"data": "just words"}),
    ]
    assert gateway.authorizations == ["Bearer k", None]


async def test_cli_module_does_not_load_the_server_or_the_client_at_import() -> None:
    code = (
        "import sys, ssegate.cli; "
        "print(sorted(m for m in sys.modules if m.startswith(('ssegate.server', 'httpx'))))"
    )
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE)
    stdout, _ = await proc.communicate()
    assert stdout.decode().strip() == "[]"


async def test_cli_serve_help_lists_its_options() -> None:
    result = await ssegate("serve", "--help")
    assert result.code == 0
    for option in ("--host", "--port", "--redis", "--workers", "--provider"):
        assert option in result.stdout
