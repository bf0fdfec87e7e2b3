"""Chromium's own EventSource with a topic stream token in its URL: the one credential it can send."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, Page

from tests.browser.test_chat_page import browser
from tests.security.test_topic_auth import minted, publish_as, topic_server

__all__ = ["browser"]

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

# window.__opened resolves with "open" once the stream is open, or "closed" when the browser gives
# up on the URL (an HTTP error closes an EventSource for good); window.__first with the first message.
LISTEN = """(url) => {
  const source = new EventSource(url);
  window.__opened = new Promise((resolve) => {
    source.onopen = () => resolve("open");
    source.onerror = () => { if (source.readyState === EventSource.CLOSED) resolve("closed"); };
  });
  window.__first = new Promise((resolve) => {
    source.onmessage = (e) => { source.close(); resolve({data: JSON.parse(e.data), id: e.lastEventId}); };
  });
}"""


async def listen(page: Page, url: str) -> None:
    await page.evaluate(LISTEN, url)


async def test_event_source_with_a_topic_token_receives_its_topic_only(browser: Browser) -> None:
    async with topic_server() as server:
        token = await minted(server.client, "alice", ["news/*"])
        page = await browser.new_page()
        await page.goto(f"{server.base_url}/healthz")
        await listen(page, f"/v1/topics/news/today/events?token={token}")
        assert await page.evaluate("window.__opened") == "open"
        published = await publish_as(server.client, "backend", "news/today", {"headline": "hi"})
        assert published.status_code == 201
        assert await page.evaluate("window.__first") == {
            "data": {"headline": "hi"},
            "id": published.json()["id"],
        }

        await listen(page, f"/v1/topics/sport/today/events?token={token}")
        assert await page.evaluate("window.__opened") == "closed"
        # The same URL without the token is refused too: the token is what opened the stream.
        await listen(page, "/v1/topics/news/today/events")
        assert await page.evaluate("window.__opened") == "closed"
