"""The client commands take their server and key from the environment or a config file, never argv."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ssegate.config import Settings
from ssegate.server.app import create_app
from tests.cli.test_cli import assert_one_line_error, client_env, ssegate, ssegate_stream
from tests.client.fake_gateway import ANSWER, FakeGateway, serve_gateway
from tests.client.scripted import scripted_server
from tests.support.servers import serve_asgi

KEY = "sk-test-0123456789abcdef"


def write_config(home: Path, text: str, mode: int = 0o600) -> Path:
    path = home / "ssegate" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def assert_no_key_in(args: tuple[str, ...]) -> None:
    assert not any(KEY in arg for arg in args), args


async def test_cli_ask_takes_url_and_key_from_the_environment() -> None:
    gateway = FakeGateway(ANSWER)
    args = ("ask", "say hello")
    async with serve_gateway(gateway) as url:
        result = await ssegate(*args, env=client_env(SSEGATE_URL=url, SSEGATE_API_KEY=KEY))
    assert_no_key_in(args)
    assert result.code == 0, result.stderr
    assert result.stdout == "Hello\n"
    assert gateway.authorizations == [f"Bearer {KEY}"]


async def test_cli_ask_takes_url_and_key_from_the_config_file(tmp_path: Path) -> None:
    gateway = FakeGateway(ANSWER)
    async with serve_gateway(gateway) as url:
        write_config(tmp_path, f'url = "{url}"\napi_key = "{KEY}"\n')
        result = await ssegate("ask", "hi", env=client_env(XDG_CONFIG_HOME=str(tmp_path)))
    assert result.code == 0, result.stderr
    assert "warning" not in result.stderr
    assert gateway.authorizations == [f"Bearer {KEY}"]


async def test_cli_flags_beat_the_environment_which_beats_the_config_file(tmp_path: Path) -> None:
    from_file, from_env = FakeGateway(ANSWER), FakeGateway(ANSWER)
    async with serve_gateway(from_file) as file_url, serve_gateway(from_env) as env_url:
        write_config(tmp_path, f'url = "{file_url}"\napi_key = "file-key"\n')
        env = client_env(XDG_CONFIG_HOME=str(tmp_path), SSEGATE_URL=env_url)
        by_env = await ssegate("ask", "hi", env=env)
        by_flag = await ssegate("ask", "hi", "--url", file_url, env=env)
    assert (by_env.code, by_flag.code) == (0, 0)
    # The URL from the environment, the key from the file (the environment set none).
    assert from_env.authorizations == ["Bearer file-key"]
    assert from_file.authorizations == ["Bearer file-key"]


async def test_cli_config_file_named_by_ssegate_config(tmp_path: Path) -> None:
    gateway = FakeGateway(ANSWER)
    path = tmp_path / "elsewhere.toml"
    async with serve_gateway(gateway) as url:
        path.write_text(f'url = "{url}"\napi_key = "{KEY}"\n')
        path.chmod(0o600)
        result = await ssegate("publish", "news", "1", env=client_env(SSEGATE_CONFIG=str(path)))
    assert result.code == 0, result.stderr
    assert gateway.authorizations == [f"Bearer {KEY}"]


async def test_cli_warns_when_others_can_read_the_key_file(tmp_path: Path) -> None:
    gateway = FakeGateway(ANSWER)
    async with serve_gateway(gateway) as url:
        path = write_config(tmp_path, f'url = "{url}"\napi_key = "{KEY}"\n', mode=0o644)
        result = await ssegate("ask", "hi", env=client_env(XDG_CONFIG_HOME=str(tmp_path)))
    assert result.code == 0, result.stderr
    assert f"ssegate: warning: {path} holds an API key and others may read it: chmod 600" in result.stderr
    assert gateway.authorizations == [f"Bearer {KEY}"]


async def test_cli_reports_a_broken_config_file_in_one_line(tmp_path: Path) -> None:
    path = write_config(tmp_path, 'url = "http://127.0.0.1:9"\napi-key = "typo"\n')
    unknown = await ssegate("ask", "hi", env=client_env(XDG_CONFIG_HOME=str(tmp_path)))
    assert_one_line_error(unknown, str(path), "unknown setting api-key")

    path.write_text("url = http://no-quotes\n")
    invalid = await ssegate("ask", "hi", env=client_env(XDG_CONFIG_HOME=str(tmp_path)))
    assert_one_line_error(invalid, str(path), "not valid TOML")

    missing = await ssegate("ask", "hi", env=client_env(SSEGATE_CONFIG=str(tmp_path / "none.toml")))
    assert_one_line_error(missing, "none.toml", "SSEGATE_CONFIG", "does not exist")


async def test_cli_help_says_where_the_key_comes_from() -> None:
    for args in (("--help",), ("ask", "--help"), ("publish", "--help"), ("watch", "--help")):
        result = await ssegate(*args)
        assert result.code == 0
        text = " ".join(result.stdout.split())
        assert "SSEGATE_URL" in text
        assert "SSEGATE_API_KEY" in text
        assert "~/.config/ssegate/config.toml" in text
        assert "No key is ever needed on the command line" in text


async def test_cli_config_shows_the_settings_in_force_without_the_key(tmp_path: Path) -> None:
    path = write_config(tmp_path, 'url = "https://chat.example.com"\n')
    result = await ssegate("config", env=client_env(XDG_CONFIG_HOME=str(tmp_path), SSEGATE_API_KEY=KEY))
    assert result.code == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"config file: {path}",
        f"url: https://chat.example.com (from {path})",
        "api key: ...cdef (from SSEGATE_API_KEY)",
    ]
    assert KEY not in result.stdout


async def test_cli_watch_a_path_on_the_configured_server_sends_the_key_there_only() -> None:
    async def handler(request: Request, n: int) -> Response:
        return ssegate_stream(request, n % 2)  # each watch: the events, then 204 on its reconnect

    async with scripted_server(handler) as (url, seen):
        env = client_env(SSEGATE_URL=url, SSEGATE_API_KEY=KEY)
        on_server = await ssegate("watch", "/stream", env=env)
        # The same server under another name is another origin: the key stays home.
        elsewhere = await ssegate("watch", url.replace("127.0.0.1", "localhost") + "/stream", env=env)
    assert (on_server.code, elsewhere.code) == (0, 0), on_server.stderr + elsewhere.stderr
    assert on_server.stdout == 'message: 1\nHello\ndone: {"finish_reason": "stop"}\n'
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"
    assert "authorization" not in seen[2].headers


async def test_cli_ask_against_the_real_server_shows_thinking_and_tool_calls() -> None:
    # The real server with API keys, its demo model thinking and calling a tool.
    settings = Settings(api_keys=f"cli:{KEY}:generate", demo_ttft=0.0, demo_tokens_per_second=0.0)
    async with serve_asgi(create_app(settings)) as url:
        env = client_env(SSEGATE_URL=url, SSEGATE_API_KEY=KEY)
        readable = await ssegate("ask", "weather in Paris /think /tool", env=env)
        as_json = await ssegate("ask", "weather in Paris /think /tool", "--json", env=env)
        without_key = await ssegate("ask", "hi", env=client_env(SSEGATE_URL=url))

    assert readable.code == 0, readable.stderr
    assert readable.stdout == "I will look that up first.\n"
    side = readable.stderr.splitlines()
    assert side[0].startswith("thinking: ")
    assert len(side[0]) > len("thinking: ")
    tool_lines = [line for line in side if line.startswith("tool call: ")]
    assert len(tool_lines) == 1
    name, _, arguments = tool_lines[0].removeprefix("tool call: ").partition(" ")
    assert name == "search"
    assert json.loads(arguments)["limit"] == 3

    assert as_json.code == 0, as_json.stderr
    assert as_json.stderr == ""
    events: list[dict[str, Any]] = [json.loads(line) for line in as_json.stdout.splitlines()]
    types = [e["event"] for e in events]
    assert types[0] == "start"
    assert types[-1] == "done"
    assert {"thinking", "text", "tool_call"} <= set(types)
    assert {e["data"]["phase"] for e in events if e["event"] == "tool_call"} == {"start", "delta", "end"}

    assert_one_line_error(without_key, "401")


def test_client_env_leaves_no_client_setting_of_the_developer() -> None:
    env = client_env()
    assert "SSEGATE_URL" not in env
    assert "SSEGATE_API_KEY" not in env
    assert env["XDG_CONFIG_HOME"] != os.environ.get("XDG_CONFIG_HOME")
