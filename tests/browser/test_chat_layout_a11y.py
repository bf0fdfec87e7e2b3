"""The chat page from 320 px to wide screens, by keyboard and for screen readers, in real Chromium.

Layout: at each width and in each state (empty, streaming with Stop shown, a finished answer with
thinking and a tool call) no control sticks out of the screen, no button's words wrap or are cut,
and the message box's placeholder stays on its one line (the issue's 390 px screenshot had it
wrapped and clipped beside Stop and Send). Screenshots at 390 and 1280 px are written to
``$SSEGATE_SCREENSHOTS`` (or the test's temp dir) for a person to look at.

Accessibility: axe-core (the pinned npm package in tests/browser/axe, injected by Playwright) finds
no serious or critical violation in any state, light or dark; the tab order follows the page; the
skip link and Stop leave the focus where a keyboard user needs it; the streaming answer is a
polite live region, busy until it is complete.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from tests.browser.test_chat_page import LAST_ANSWER, browser, open_chat, send, ssegate, wait_for_end
from tests.support.npm import ROOT, node_modules

__all__ = ["browser"]

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

AXE_PROJECT = ROOT / "tests" / "browser" / "axe"
SLOW = {"demo_tokens_per_second": 40.0}  # an answer streams for seconds: time to look at it
WIDTHS = [320, 390, 1280]

# Every problem a person would see: a control off the screen, words wrapped or cut in a button,
# a placeholder on two lines in its one-line box, a page that scrolls sideways.
LAYOUT_PROBLEMS = """() => {
  const problems = [];
  const width = document.documentElement.clientWidth;
  if (document.documentElement.scrollWidth > width) {
    problems.push(`the page scrolls sideways (${document.documentElement.scrollWidth} > ${width})`);
  }
  const name = (c) => c.id || c.getAttribute('aria-label') || c.textContent.trim().slice(0, 30) || c.tagName;
  for (const c of document.querySelectorAll('button, textarea, input, a[href], summary')) {
    if (!c.checkVisibility({ visibilityProperty: true }) || c.closest('.visually-hidden')) continue;
    if (c.classList.contains('skip') && document.activeElement !== c) continue;  // shown on focus
    const box = c.getBoundingClientRect();
    if (box.width === 0 || box.height === 0) continue;
    if (box.left < -0.5 || box.right > width + 0.5) problems.push(`${name(c)} sticks out`);
    if (c.scrollWidth > c.clientWidth + 1) problems.push(`${name(c)} cuts its content`);
    if (c.matches('button, summary')) {
      const range = document.createRange();
      range.selectNodeContents(c);
      const lines = [...range.getClientRects()].filter((r) => r.width > 0).map((r) => Math.round(r.bottom));
      if (new Set(lines).size > 1) problems.push(`${name(c)} wraps onto ${new Set(lines).size} lines`);
    }
    if (c.tagName === 'TEXTAREA' && c.value === '' && c.placeholder) {
      // The whole placeholder must fit on its line: not wrapped (and clipped), not cut short.
      const style = getComputedStyle(c);
      const pen = document.createElement('canvas').getContext('2d');
      pen.font = `${style.fontStyle} ${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
      const room = c.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
      const needed = pen.measureText(c.placeholder).width;
      if (needed > room || c.scrollHeight > c.clientHeight + 1) {
        problems.push(`the placeholder of ${name(c)} does not fit (${Math.round(needed)} > ${room})`);
      }
    }
  }
  return problems;
}"""

RUN_AXE = """async () => {
  const result = await axe.run(document, { resultTypes: ['violations'] });
  return result.violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
}"""


def screenshot_dir(tmp_path: Path) -> Path:
    directory = Path(os.environ.get("SSEGATE_SCREENSHOTS") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


async def open_at(browser: Browser, base_url: str, width: int, **context: Any) -> Page:
    height = 800 if width > 800 else 720
    return await open_chat(browser, base_url, viewport={"width": width, "height": height}, **context)


async def streaming(page: Page, prompt: str) -> None:
    await send(page, prompt)
    await page.wait_for_function(f"({LAST_ANSWER}?.text.length ?? 0) > 80")


@pytest.mark.parametrize("width", WIDTHS)
async def test_chat_page_layout_has_no_clipped_control(browser: Browser, width: int, tmp_path: Path) -> None:
    shots = screenshot_dir(tmp_path)
    async with ssegate(**SLOW) as base_url:
        page = await open_at(browser, base_url, width)
        problems = {"empty": await page.evaluate(LAYOUT_PROBLEMS)}

        await streaming(page, "Write a long answer /long")
        assert await page.is_visible("#stop")
        problems["streaming"] = await page.evaluate(LAYOUT_PROBLEMS)
        if width != 320:
            await page.screenshot(path=shots / f"chat-streaming-{width}.png")
        await page.click("#stop")
        await wait_for_end(page)

        await send(page, "Look up the weather /think /tool")
        await wait_for_end(page)
        await page.click(".msg.assistant:last-child .thinking summary")  # open the thinking too
        problems["answered"] = await page.evaluate(LAYOUT_PROBLEMS)
        if width != 320:
            await page.screenshot(path=shots / f"chat-answered-{width}.png")

    assert problems == {"empty": [], "streaming": [], "answered": []}
    if width != 320:
        assert (shots / f"chat-streaming-{width}.png").stat().st_size > 0


async def test_chat_page_layout_check_sees_a_wrapped_placeholder(browser: Browser) -> None:
    # The check above must be able to fail: squeeze the box as the old layout did.
    async with ssegate() as base_url:
        page = await open_at(browser, base_url, 390)
        await page.add_style_tag(content="#prompt { flex: 0 0 110px; }")
        problems = await page.evaluate(LAYOUT_PROBLEMS)
    assert any("placeholder" in problem for problem in problems), problems


@pytest.fixture(scope="module")
def axe_source() -> str:
    return (node_modules(AXE_PROJECT) / "axe-core" / "axe.min.js").read_text()


async def axe_violations(page: Page, axe_source: str) -> list[str]:
    if not await page.evaluate("typeof axe !== 'undefined'"):
        await page.add_script_tag(content=axe_source)
    violations: list[str] = await page.evaluate(RUN_AXE)
    return violations


@pytest.mark.parametrize(("width", "scheme"), [(390, "light"), (1280, "dark")])
async def test_chat_page_has_no_serious_accessibility_violation(
    browser: Browser, axe_source: str, width: int, scheme: str
) -> None:
    async with ssegate(**SLOW) as base_url:
        # bypass_csp: axe is injected as an inline script, which a strict policy would refuse.
        page = await open_at(browser, base_url, width, color_scheme=scheme, bypass_csp=True)
        found = {"empty": await axe_violations(page, axe_source)}

        await streaming(page, "Explain server-sent events /think /long")
        found["streaming"] = await axe_violations(page, axe_source)
        await page.click("#stop")
        await wait_for_end(page)

        await send(page, "Look up the weather /think /tool")
        await wait_for_end(page)
        await send(page, "Fail half way /error")
        await wait_for_end(page)
        await page.click("#key-panel summary")
        found["answered, failed, key panel open"] = await axe_violations(page, axe_source)

    assert found == {"empty": [], "streaming": [], "answered, failed, key panel open": []}


async def focus_trail(page: Page, key: str, steps: int) -> list[str]:
    """Where the focus goes with each press of ``key`` (Tab or Shift+Tab) from where it is."""
    trail = []
    for _ in range(steps):
        await page.keyboard.press(key)
        trail.append(
            await page.evaluate(
                """() => { const e = document.activeElement;
                  return e.id || e.dataset.example || e.className || e.tagName; }"""
            )
        )
    return trail


async def test_chat_page_keyboard_order_skip_link_and_stop(browser: Browser) -> None:
    async with ssegate(**SLOW) as base_url:
        page = await open_at(browser, base_url, 390)
        # The page opens in the message box; before it, in reading order, the top of the page.
        assert await page.evaluate("document.activeElement.id") == "prompt"
        assert await focus_trail(page, "Shift+Tab", 7) == [
            "Fail half way /error",
            "Write a long answer /long",
            "Look up the weather /tool",
            "Explain server-sent events /think",
            "new-chat",
            "brand",
            "skip",
        ]
        await page.focus("#prompt")
        assert await focus_trail(page, "Tab", 2) == ["send", "SUMMARY"]  # then the API key's panel

        # The skip link lands in the message box; Enter there sends.
        await page.focus(".skip")
        await page.keyboard.press("Enter")
        assert await page.evaluate("document.activeElement.id") == "prompt"
        await page.keyboard.type("Write a long answer /long")
        await page.keyboard.press("Enter")
        await page.wait_for_function(f"({LAST_ANSWER}?.text.length ?? 0) > 20")

        # While it streams, the answer is a live region that says it is busy; Stop is next after the
        # box, and pressing it leaves the focus in the box, not on a button that went away.
        content = page.locator(".msg.assistant .content")
        assert await content.get_attribute("aria-live") == "polite"
        assert await content.get_attribute("aria-busy") == "true"
        await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.id") == "stop"
        await page.keyboard.press("Enter")
        answer = await wait_for_end(page)
        assert answer["state"] == "cancelled"
        await page.wait_for_function("document.activeElement?.id === 'prompt'")
        # The answer is repainted at the next animation frame after its state ends.
        await expect(content).to_have_attribute("aria-busy", "false", timeout=5000)
