"""The Python examples of docs/producers.md and docs/mounting.md run as written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from ssegate.config import Settings
from ssegate.server.app import create_app
from tests.docs.markdown import blocks
from tests.support.servers import serve_asgi
from tests.support.sse import read_stream

DOCS = Path(__file__).resolve().parents[2] / "docs"


def python_blocks(page: str) -> list[str]:
    return [block.text for block in blocks((DOCS / page).read_text()) if block.info == "python"]


def run(source: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    exec(compile(source, "<docs example>", "exec"), namespace)
    return namespace


async def test_the_producers_written_in_the_docs_stream() -> None:
    first, second = python_blocks("producers.md")[:2]
    producers = [run(first)["my_agent"], run(second)["callback_agent"]]
    app = create_app(Settings(), producers=producers)
    async with serve_asgi(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        body = {"provider": "my-agent", "messages": [{"role": "user", "content": "What is SSE?"}]}
        got = await read_stream(
            client, "POST", "/v1/generations", json_body=body, headers={"accept": "text/event-stream"}
        )
        assert got.types[-1] == "done"
        assert got.text == "Server-Sent Events stream text."
        assert {"status", "tool_call", "data", "thinking", "usage"} <= set(got.types)
        body["provider"] = "callback-agent"
        got = await read_stream(
            client, "POST", "/v1/generations", json_body=body, headers={"accept": "text/event-stream"}
        )
        assert got.types[-1] == "done"
        assert got.text == "Hello"


async def test_the_one_line_mount_of_the_docs_serves_both_apps() -> None:
    app = run(python_blocks("mounting.md")[0])["app"]
    async with serve_asgi(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        assert (await client.get("/api/hello")).json() == {"hello": "world"}
        body = {"messages": [{"role": "user", "content": "hi"}], "provider": "demo"}
        created = await client.post("/sse/v1/generations", json=body)
        assert created.status_code == 201
        assert created.headers["location"].startswith("/sse/v1/generations/")
