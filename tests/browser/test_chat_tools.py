"""The chat page runs a tool loop to its end in real Chromium: the demo model calls the page's
built-in calculator, the page shows the call growing and then whole, runs it, sends the result
back, and the model's next answer uses it."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.browser.test_chat_page import browser, open_chat, send, server_events, ssegate
from tests.support.metrics import total

__all__ = ["browser"]

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

ALL_DONE = (
    "window.__ssegate.answers().length >= 2 && "
    "window.__ssegate.answers().every((a) => ['done', 'error', 'cancelled'].includes(a.state))"
)


async def test_the_demo_calls_the_pages_calculator_and_answers_with_its_result(browser: object) -> None:
    async with ssegate() as base_url:
        page = await open_chat(browser, base_url)  # type: ignore[arg-type]
        await send(page, "What is 6 * (3 + 4)?")
        await page.wait_for_function(ALL_DONE, timeout=20_000)
        answers = await page.evaluate("window.__ssegate.answers()")

        # Two answers: the call (its arguments shown whole, and what the page's tool returned),
        # then the answer that used it.
        assert [a["state"] for a in answers] == ["done", "done"]
        assert "calculator" in answers[0]["text"]
        head = await page.locator(".tool .tool-head").first.text_content()
        assert head == "Tool call calculator"
        shown = await page.locator(".tool .tool-input").first.text_content()
        assert json.loads(shown or "") == {"expression": "6 * (3 + 4)"}
        assert await page.locator(".tool .tool-result").first.text_content() == "→ 42"
        assert "42" in answers[1]["text"]
        rendered = await page.locator(".msg.assistant .content").nth(1).text_content()
        assert "42" in (rendered or "")

        # What the server holds: the first generation ended tool_use, the second was asked with
        # the call and its result, and ended stop.
        first = await server_events(base_url, answers[0]["generationId"])
        second = await server_events(base_url, answers[1]["generationId"])
        assert json.loads(first[-1].data)["finish_reason"] == "tool_use"
        assert json.loads(second[-1].data)["finish_reason"] == "stop"
        async with httpx.AsyncClient(base_url=base_url) as client:
            metrics = (await client.get("/metrics")).text
        assert total(metrics, "ssegate_generations_started_total") == 2


async def test_a_reload_after_the_loop_keeps_the_calls_and_the_answer(browser: object) -> None:
    async with ssegate() as base_url:
        page = await open_chat(browser, base_url)  # type: ignore[arg-type]
        await send(page, "Please calculate 2 + 3 * 4")
        await page.wait_for_function(ALL_DONE, timeout=20_000)
        await page.reload()
        await page.wait_for_function(ALL_DONE, timeout=20_000)
        assert await page.locator(".tool .tool-result").first.text_content() == "→ 14"
        answers = await page.evaluate("window.__ssegate.answers()")
        assert "14" in answers[-1]["text"]
