"""The chat page against a server with API keys: the key field, its 401 messages, the watch link.

The key is typed into the page's "API key" field; the watch link carries a stream token for that
one answer (never the key), and opens the answer live in a tab that has no key.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from ssegate.codec import Event, EventStreamParser
from tests.browser.test_chat_page import (
    LAST_ANSWER,
    LONG_PROMPT,
    browser,
    open_chat,
    send,
    ssegate,
    wait_for_end,
    wait_for_text,
)

__all__ = ["browser"]

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

KEY = "web-key-0123456789"


@contextlib.asynccontextmanager
async def keyed_server(**overrides: float) -> AsyncIterator[str]:
    async with ssegate(api_keys=f"web:{KEY}:generate,subscribe", **overrides) as base_url:
        yield base_url


async def server_text(base_url: str, generation_id: str) -> str:
    """The answer's text as the server's log holds it, read with the key."""
    parser = EventStreamParser()
    events: list[Event] = []
    headers = {"Authorization": f"Bearer {KEY}"}
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=20, headers=headers) as client,
        client.stream("GET", f"/v1/generations/{generation_id}/events") as response,
    ):
        assert response.status_code == 200
        async for chunk in response.aiter_bytes():
            events += [item for item in parser.feed(chunk) if isinstance(item, Event)]
            if events and events[-1].event in ("done", "error"):
                break
    return "".join(json.loads(e.data)["delta"] for e in events if e.event == "text")


async def use_key(page: Page, key: str) -> None:
    if not await page.is_visible("#api-key"):
        await page.click("#key-panel summary")
    await page.fill("#api-key", key)
    await page.press("#api-key", "Enter")


async def error_text(page: Page) -> str:
    # The last answer's explanation, once painted (the state flips a frame earlier).
    error = page.locator(".msg.assistant").last.locator(".error")
    await expect(error).not_to_be_empty(timeout=5000)
    return await error.text_content() or ""


async def test_chat_page_asks_for_the_key_and_explains_a_wrong_one(browser: Browser) -> None:
    async with keyed_server() as base_url:
        page = await open_chat(browser, base_url)
        await send(page, "hello")
        assert (await wait_for_end(page))["state"] == "error"
        assert "needs an API key" in await error_text(page)
        # The 401 opened the key field and put the cursor in it.
        assert await page.is_visible("#api-key")
        assert await page.evaluate("document.activeElement.id") == "api-key"
        assert await page.get_attribute("#api-key", "type") == "password"

        await use_key(page, "not-the-key")
        await send(page, "hello")
        assert (await wait_for_end(page))["state"] == "error"
        text = await error_text(page)
        assert "did not accept this API key" in text
        assert "invalid_api_key" in text


async def test_chat_page_with_the_key_chats_and_shares_a_watch_link(browser: Browser) -> None:
    async with keyed_server(demo_tokens_per_second=120.0) as base_url:
        page = await open_chat(browser, base_url)
        watcher = await browser.new_page()
        await use_key(page, KEY)
        assert await page.text_content("#key-panel summary") == "API key · set"
        async with page.expect_request("**/v1/generations") as started:
            await send(page, LONG_PROMPT)
        assert (await (await started.value).all_headers())["authorization"] == f"Bearer {KEY}"
        await wait_for_text(page, 50)

        href = await page.get_attribute(".msg.assistant .watch", "href")
        assert href is not None
        assert "#token=" in href
        assert KEY not in href
        await watcher.goto(base_url + href)
        await watcher.wait_for_function(f"{LAST_ANSWER}?.state === 'streaming'")
        author, watched = await wait_for_end(page), await wait_for_end(watcher)

        assert author["state"] == "done"
        assert author["text"] == await server_text(base_url, author["generationId"])
        assert watched["text"] == author["text"]
        # A second message in the same conversation works with the key too, and so does a reload.
        await send(page, "and again")
        assert (await wait_for_end(page))["state"] == "done"
        await page.reload()
        await page.wait_for_function("window.__ssegate !== undefined")
        assert await page.text_content("#key-panel summary") == "API key · set"
        assert len(await page.evaluate("window.__ssegate.answers()")) == 2
