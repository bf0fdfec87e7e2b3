"""Code blocks in answers read as code: monospace lines set close together, as in an editor."""

from __future__ import annotations

from itertools import pairwise

import pytest
from playwright.async_api import Browser

from tests.browser.test_chat_page import browser, open_chat, send, ssegate, wait_for_end

__all__ = ["browser"]

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

# The demo model's answer to this prompt holds a three-line Python code block.
CODE_PROMPT = "Show me some code"

# Where each rendered line of the first code block starts, and the size of its font.
MEASURE = """() => {
  const code = document.querySelector('.msg.assistant .content pre code');
  const range = document.createRange();
  range.selectNodeContents(code);
  const tops = [...new Set([...range.getClientRects()].map((r) => Math.round(r.top * 100) / 100))];
  return { tops, fontSize: parseFloat(getComputedStyle(code).fontSize),
           family: getComputedStyle(code).fontFamily, text: code.textContent };
}"""


async def test_chat_page_sets_code_block_lines_close_together(browser: Browser) -> None:
    async with ssegate() as base_url:
        page = await open_chat(browser, base_url)
        await send(page, CODE_PROMPT)
        assert (await wait_for_end(page))["state"] == "done"
        measured = await page.evaluate(MEASURE)

        assert measured["text"].count("\n") == 3, measured["text"]
        assert "monospace" in measured["family"]
        tops = sorted(measured["tops"])
        assert len(tops) == 3, tops
        pitches = [b - a for a, b in pairwise(tops)]
        # Body text uses 1.6; code at that pitch (or at the body's 25.6 px) looks double-spaced.
        for pitch in pitches:
            assert 1.2 <= pitch / measured["fontSize"] <= 1.55, (pitches, measured["fontSize"])
