"""The AI SDK door, driven by the npm ``ai`` package in Node (``DefaultChatTransport`` and
``readUIMessageStream``, as ``useChat`` uses them), in front of each provider."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from ssegate.config import Settings
from ssegate.dialects.answer import Answer
from ssegate.server.app import create_app
from tests.doors.conftest import ServerFactory, Upstream, native_answer, ssegate_demo, tool_script
from tests.fakes._upstream import Faults
from tests.fakes.fake_openai import FakeOpenAI, OpenAIScript
from tests.support.servers import serve_asgi

JS = Path(__file__).parent / "js"
_WAIT = 30.0


async def drive(command: str, **options: Any) -> dict[str, Any]:
    """Run ``ui_client.mjs <command>`` and return its JSON answer."""
    if shutil.which("node") is None or not (JS / "node_modules" / "ai").is_dir():
        pytest.fail(
            "node and tests/doors/js/node_modules are needed: run scripts/setup.sh test", pytrace=False
        )
    process = await asyncio.create_subprocess_exec(
        "node",
        str(JS / "ui_client.mjs"),
        command,
        json.dumps(options),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), _WAIT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    assert "error" not in result, result["error"] + err.decode()
    return result


def ui_parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    """A UIMessage's parts as comparable values (no ids or states)."""
    out: list[dict[str, Any]] = []
    for part in message["parts"]:
        kind = part["type"]
        if kind in ("text", "reasoning"):
            out.append({"type": kind, "text": part["text"]})
        elif kind.startswith("tool-"):
            out.append({"type": "tool", "id": part["toolCallId"], "name": kind[5:], "input": part["input"]})
    return out


def expected_parts(answer: Answer) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for block in answer.blocks:
        if block.tool is not None:
            out.append(
                {"type": "tool", "id": block.tool.id, "name": block.tool.name, "input": block.tool.input()}
            )
        else:
            out.append({"type": "text" if block.kind == "text" else "reasoning", "text": block.text})
    return out


async def test_ui_message_equals_the_providers_answer(
    upstream: Upstream, ssegate_in_front: ServerFactory
) -> None:
    prompt = "What is the weather in Paris? /think /tool"
    if upstream.fake is not None:
        upstream.then(tool_script(upstream.name), tool_script(upstream.name))
    async with ssegate_in_front() as base_url:
        produced = await native_answer(base_url, prompt)
        result = await drive("send", base=base_url, chatId="chat-1", prompt=prompt)
    assert ui_parts(result["message"]) == expected_parts(produced)
    assert any(part["type"] == "tool" for part in expected_parts(produced))
    chunks = result["chunks"]
    assert chunks[:2] == ["start", "start-step"]
    assert chunks[-2:] == ["finish-step", "finish"]
    assert "tool-input-delta" in chunks
    assert "tool-input-available" in chunks


async def test_plain_text_and_reasoning(upstream: Upstream, ssegate_in_front: ServerFactory) -> None:
    prompt = "Say hello /think"
    async with ssegate_in_front() as base_url:
        produced = await native_answer(base_url, prompt)
        result = await drive("send", base=base_url, chatId="chat-2", prompt=prompt)
    assert ui_parts(result["message"]) == expected_parts(produced)
    assert [p["type"] for p in ui_parts(result["message"])] == ["reasoning", "text"]


def _slow(count: int, interval: float) -> OpenAIScript:
    return OpenAIScript(text=tuple(f" tok{n}" for n in range(count)), faults=Faults(interval=interval))


def _settings(fake: FakeOpenAI, **overrides: Any) -> Settings:
    return Settings(
        provider="openai", openai_api_key="sk-test", openai_base_url=f"{fake.url}/v1", **overrides
    )


async def test_reconnect_resumes_mid_answer_with_nothing_lost_or_repeated() -> None:
    full = "".join(f" tok{n}" for n in range(80))
    async with (
        FakeOpenAI(_slow(80, 0.03)) as fake,
        serve_asgi(create_app(_settings(fake))) as base_url,
    ):
        result = await drive("resume", base=base_url, chatId="chat-r", prompt="count", cutAfter=12)
    assert result["message"] is not None, "the chat's generation was running: reconnect found it"
    assert 0 < len(result["before"]) < len(full)
    assert full.startswith(result["before"])  # the first reader saw a part of the answer...
    text = "".join(p["text"] for p in ui_parts(result["message"]) if p["type"] == "text")
    assert text == full  # ... and the reconnected one the whole answer, once
    assert result["chunks"][0] == "start"
    assert result["chunks"][-1] == "finish"
    assert len(fake.requests) == 1  # one upstream call for both readers


async def test_stop_cancels_the_upstream_and_the_reader_gets_abort() -> None:
    async with (
        FakeOpenAI(_slow(400, 0.05)) as fake,
        serve_asgi(create_app(_settings(fake))) as base_url,
    ):
        result = await drive("stop", base=base_url, chatId="chat-s", prompt="count", stopAfter=6)
        await asyncio.wait_for(fake.client_closed_early.wait(), 10)
        generation_id = result["stopped"]["body"]["id"]
        async with httpx.AsyncClient(base_url=base_url) as http:
            state = (await http.get(f"/v1/generations/{generation_id}")).json()
            after = await drive("empty", base=base_url, chatId="chat-s")
    assert result["stopped"]["status"] == 200
    assert result["chunks"][-1] == "abort"
    assert "finish" not in result["chunks"]
    assert "".join(f" tok{n}" for n in range(400)).startswith(result["text"])
    assert state["state"] == "cancelled"
    assert after["resumed"] is None  # nothing running: 204, as useChat expects


async def test_a_chat_with_nothing_running_answers_204() -> None:
    async with ssegate_demo() as base_url:
        assert (await drive("empty", base=base_url, chatId="never-used"))["resumed"] is None
        async with httpx.AsyncClient(base_url=base_url) as http:
            stop = await http.post("/v1/ui/chat/never-used/stop")
    assert stop.status_code == 204


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {"id": "c", "messages": [{"id": "1", "role": "user", "parts": [{"type": "file", "url": "x"}]}]},
            "messages[0].parts[0].mediaType",
        ),
        ({"messages": [{"id": "1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}]}, "id"),
        ({"id": "c", "messages": [{"id": "1", "role": "tool", "parts": []}]}, "messages[0].role"),
        ({"id": "c", "messages": [], "frequency_penalty": 1}, "frequency_penalty"),
    ],
)
async def test_bad_requests_answer_400_naming_the_field(body: dict[str, Any], field: str) -> None:
    async with ssegate_demo() as base_url, httpx.AsyncClient(base_url=base_url) as http:
        response = await http.post("/v1/ui/chat", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["field"] == field


async def test_the_answer_says_it_is_a_ui_message_stream_v1() -> None:
    body = {"id": "c-h", "messages": [{"id": "1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}]}
    async with ssegate_demo() as base_url, httpx.AsyncClient(base_url=base_url) as http:
        response = await http.post("/v1/ui/chat", json=body)
    assert response.status_code == 200
    assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-generation-id"]
    assert response.text.rstrip().endswith("data: [DONE]")
