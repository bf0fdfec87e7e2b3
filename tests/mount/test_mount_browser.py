"""The chat page in headless Chromium, served from a FastAPI app that mounts ssegate under /sse."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from playwright.async_api import Browser

from ssegate.config import Settings
from ssegate.mount import mount
from tests.browser.test_chat_page import open_chat, send, wait_for_end
from tests.support.browser import chromium
from tests.support.servers import serve_asgi
from tests.support.sse import read_stream

pytestmark = pytest.mark.browser


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as running:
        yield running


async def test_chat_page_under_prefix_streams_and_calls_only_under_it(browser: Browser) -> None:
    app = FastAPI()

    @app.get("/")
    async def home() -> dict[str, str]:
        return {"app": "host"}  # the host owns "/": a page that called the root would break here

    mount(app, "/sse", Settings(demo_ttft=0.02, demo_tokens_per_second=400.0))
    async with serve_asgi(app) as base_url:
        page = await open_chat(browser, f"{base_url}/sse/")
        paths: list[str] = []
        page.on("request", lambda request: paths.append(httpx.URL(request.url).path))
        await send(page, "Hello from the host app /long")
        answer = await wait_for_end(page)
        assert answer["state"] == "done"
        assert answer["text"]
        # Every request the page made (the stream, the providers list) stayed under the prefix.
        assert paths, "the page made no requests"
        assert all(path.startswith("/sse/") for path in paths), paths
        assert any(path == "/sse/v1/generations" for path in paths), paths
        # The page shows what the server logged for the same generation.
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
            logged = await read_stream(client, "GET", f"/sse/v1/generations/{answer['generationId']}/events")
        assert answer["text"] == logged.text
        # The "watch in another tab" link stays under the prefix too.
        watch = await page.get_attribute(".msg.assistant a.watch", "href")
        assert watch is not None
        assert watch.startswith("/sse/?watch=")
