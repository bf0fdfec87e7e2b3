"""The useChat example (examples/ai_sdk_chat), built here with its pinned npm packages and driven in
real Chromium against ssegate's AI SDK door: a reload mid-answer resumes, Stop stops the upstream."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from ssegate.config import Settings
from ssegate.server.app import create_app
from tests.fakes._upstream import Faults
from tests.fakes.fake_openai import FakeOpenAI, OpenAIScript
from tests.support.browser import chromium
from tests.support.servers import serve_asgi

pytestmark = pytest.mark.browser

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ai_sdk_chat"
TOKENS = tuple(f" tok{n}" for n in range(120))
FULL = "".join(TOKENS)
ASSISTANT = "#messages [data-role=assistant]"
_WAIT = 20_000  # ms


@pytest.fixture(scope="module")
def built_example() -> Path:
    """``npm ci`` (when needed) and the example's own build: dist/index.html + dist/app.js."""
    if shutil.which("npm") is None:
        pytest.fail("npm is needed: run scripts/setup.sh test", pytrace=False)
    if not (EXAMPLE / "node_modules" / "@ai-sdk" / "react").is_dir():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=EXAMPLE, check=True, timeout=300
        )
    subprocess.run(["node", "build.mjs"], cwd=EXAMPLE, check=True, timeout=120)
    return EXAMPLE / "dist"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as running:
        yield running


async def open_chat(browser: Browser, page_url: str, fake: FakeOpenAI) -> tuple[Page, str]:
    page = await browser.new_page()
    await page.goto(page_url)
    await page.fill("#prompt", "count for me")
    await page.click("#send")
    await page.wait_for_function(
        f"document.querySelector('{ASSISTANT}')?.textContent.length > 30", timeout=_WAIT
    )
    return page, await page.inner_text(ASSISTANT)


@contextlib.asynccontextmanager
async def serve_example(dist: Path, fake: FakeOpenAI) -> AsyncIterator[str]:
    pages = Starlette(routes=[Mount("/", StaticFiles(directory=str(dist), html=True))])
    async with serve_asgi(pages) as page_origin:
        settings = Settings(
            provider="openai",
            openai_api_key="sk-test",
            openai_base_url=f"{fake.url}/v1",
            cors_origins=page_origin,
            abandon_grace=5.0,
        )
        async with serve_asgi(create_app(settings)) as server:
            yield f"{page_origin}/?server={server}"


async def test_reload_mid_answer_resumes_the_same_answer(built_example: Path, browser: Browser) -> None:
    async with (
        FakeOpenAI(OpenAIScript(text=TOKENS, faults=Faults(interval=0.03))) as fake,
        serve_example(built_example, fake) as page_url,
    ):
        page, before = await open_chat(browser, page_url + "#chat-reload", fake)
        assert 0 < len(before) < len(FULL)
        await page.reload()
        await page.wait_for_function(
            f"document.querySelector('{ASSISTANT}')?.textContent === {FULL!r}", timeout=_WAIT
        )
        await page.wait_for_selector("#status[data-status=ready]", timeout=_WAIT)
        assert await page.locator(ASSISTANT).count() == 1
        assert await page.inner_text("#messages [data-role=user]") == "count for me"
    assert len(fake.requests) == 1  # the reload did not start another generation


async def test_stop_stops_the_upstream(built_example: Path, browser: Browser) -> None:
    async with (
        FakeOpenAI(OpenAIScript(text=TOKENS * 3, faults=Faults(interval=0.03))) as fake,
        serve_example(built_example, fake) as page_url,
    ):
        page, _ = await open_chat(browser, page_url + "#chat-stop", fake)
        async with page.expect_response(lambda r: r.url.endswith("/stop")) as stop_answer:
            await page.click("#stop")
        answer = await stop_answer.value
        # The Stop endpoint ended the generation at once (abandonment would take the 5 s grace)...
        assert answer.status == 200
        assert (await answer.json())["state"] == "cancelled"
        # ... and the upstream call is closed (no more tokens paid for).
        await asyncio.wait_for(fake.client_closed_early.wait(), 10)
        await page.wait_for_selector("#status[data-status=ready]", timeout=_WAIT)
        stopped = await page.inner_text(ASSISTANT)
        await asyncio.sleep(0.3)  # the fake would have sent ~10 more tokens by now
        assert await page.inner_text(ASSISTANT) == stopped
        assert (FULL * 3).startswith(stopped)
        assert len(stopped) < len(FULL)
        await page.reload()  # nothing runs any more: the chat resumes nothing
        await page.wait_for_selector("#status[data-status=ready]", timeout=_WAIT)
        assert await page.locator(ASSISTANT).count() == 0
    assert fake.completed == 0
