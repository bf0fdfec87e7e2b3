"""The chat page when ssegate itself refuses to start an answer: the person reads why, at once.

The refusal is the server's own (a 429 over ``generation_starts_per_minute``, a 413 over
``max_prompt_chars``); sending the same POST again would only earn the same answer, so the page
must not retry it, and must not call it a network problem.
"""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Browser, expect

from tests.browser.test_chat_page import LAST_ANSWER, browser, open_chat, send, ssegate, wait_for_end

__all__ = ["browser"]

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]


async def test_chat_page_explains_its_own_rate_limit_at_once(browser: Browser) -> None:
    async with ssegate(generation_starts_per_minute=1) as base_url:
        page = await open_chat(browser, base_url)
        posts: list[str] = []
        page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
        await send(page, "hello")
        assert (await wait_for_end(page))["state"] == "done"

        await send(page, "and again")
        # Within a few seconds, not after a minute of retries.
        await page.wait_for_function(f"{LAST_ANSWER}.state === 'error'", timeout=5000)
        error = page.locator(".msg.assistant").last.locator(".error")
        # The state flips before the explanation is painted (next frame): wait for the words.
        await expect(error).to_contain_text("too many answers in a short time", timeout=5000)
        text = await error.text_content() or ""
        assert re.search(r"Try again in \d+ s\.", text), text  # the wait the server asked for
        assert "rate_limited" in text
        assert "cannot be reached" not in text
        assert posts == [f"{base_url}/v1/generations"] * 2, "the refused POST is not sent again"
        assert await page.text_content("#conn-text") == "Error"
        # The refused message is back in the box, ready to send again, and sending is possible.
        assert await page.input_value("#prompt") == "and again"
        assert await page.is_enabled("#send")


async def test_chat_page_explains_a_prompt_over_the_limit(browser: Browser) -> None:
    async with ssegate(max_prompt_chars=20) as base_url:
        page = await open_chat(browser, base_url)
        await send(page, "a message that is longer than twenty characters")
        answer = await wait_for_end(page)

        assert answer["state"] == "error"
        error = page.locator(".msg.assistant").last.locator(".error")
        await expect(error).to_contain_text("too long", timeout=5000)
        text = await error.text_content() or ""
        assert "prompt_too_large" in text
