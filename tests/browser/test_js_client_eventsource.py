"""ssegate.js on Chromium's native EventSource: a quiet but healthy stream stays open.

EventSource never shows ``:`` keep-alive comments to the page, so an idle timer could only be reset
by events; on a quiet topic it would tear the stream down and reconnect for nothing. The page's
clock is Playwright's fake one so that minutes of quiet pass in a moment; the server, its
keep-alives and the browser's connection are real.
"""

from __future__ import annotations

import httpx
import pytest
from playwright.async_api import Browser

from tests.browser.test_chat_page import browser, ssegate

__all__ = ["browser"]

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

# window.__opens counts connections the client opened; window.__first resolves with the first event.
SUBSCRIBE = """async (url) => {
  const { openEventStream } = await import('/static/ssegate.js');
  window.__opens = 0;
  let opened;
  window.__opened = new Promise((resolve) => { opened = resolve; });
  window.__first = new Promise((resolve) => {
    window.__stream = openEventStream(url, {
      transport: 'eventsource',
      onOpen: () => { window.__opens += 1; opened(); },
      onEvent: (event) => resolve(JSON.parse(event.data)),
    });
  });
}"""


async def test_quiet_topic_with_keep_alives_is_not_reconnected_on_eventsource(browser: Browser) -> None:
    async with ssegate(keepalive_interval=0.05) as base_url:
        page = await browser.new_page()
        await page.clock.install()
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url) if "/v1/topics/" in r.url else None)
        await page.goto(f"{base_url}/healthz")
        await page.evaluate(SUBSCRIBE, "/v1/topics/quiet/events")
        await page.evaluate("window.__opened")

        # Five quiet minutes of page time (with real keep-alives arriving meanwhile).
        await page.clock.run_for(5 * 60 * 1000)
        async with httpx.AsyncClient(base_url=base_url) as client:
            published = await client.post("/v1/topics/quiet/events", json={"data": {"n": 1}})
        assert published.status_code == 201

        assert await page.evaluate("window.__first") == {"n": 1}
        assert await page.evaluate("window.__opens") == 1
        assert requests == [f"{base_url}/v1/topics/quiet/events"]
        assert await page.evaluate("window.__stream.state") == "open"
