"""A resume point the server cannot honour: ``reset``, then the stream again from its start.

The browser really resumes with a ``Last-Event-ID`` from an epoch the log never had (as after the
log lost the stream's history); the server really answers ``reset`` and replays. The chat page and
the JS client must drop what they had and show the answer once, as the server's log holds it.
"""

from __future__ import annotations

import json

import httpx
import pytest
from playwright.async_api import Browser, Request, Route

from ssegate.codec import Event, EventStreamParser
from tests.browser.test_chat_page import (
    LAST_ANSWER,
    LONG_PROMPT,
    CuttableProxy,
    browser,
    open_chat,
    send,
    server_text,
    ssegate,
    start_generation,
    wait_for_end,
    wait_for_text,
)

__all__ = ["browser"]

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

# Epochs are 10 base-36 characters chosen at random: this one is valid in form, unknown to the log.
FOREIGN_EPOCH = "zzzzzzzzzz"


def foreign(event_id: str) -> str:
    """The same position in another life of the stream."""
    _, _, seq = event_id.partition(":")
    return f"{FOREIGN_EPOCH}:{seq}"


async def first_event(base_url: str, generation_id: str, last_event_id: str) -> Event:
    parser = EventStreamParser()
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=20) as client,
        client.stream(
            "GET", f"/v1/generations/{generation_id}/events", headers={"Last-Event-ID": last_event_id}
        ) as response,
    ):
        assert response.status_code == 200
        async for chunk in response.aiter_bytes():
            for item in parser.feed(chunk):
                if isinstance(item, Event):
                    return item
    raise AssertionError("no event")


async def test_chat_page_rebuilds_the_answer_once_after_a_reset(browser: Browser) -> None:
    async with ssegate() as base_url:
        proxy = CuttableProxy(httpx.URL(base_url).port or 0)
        async with proxy as proxied_url:
            page = await open_chat(browser, proxied_url)
            await send(page, LONG_PROMPT)
            await wait_for_text(page, 200)

            sent_ids: list[str] = []

            async def resume_from_another_epoch(route: Route, request: Request) -> None:
                headers = dict(request.headers)
                if "last-event-id" in headers and not sent_ids:
                    headers["last-event-id"] = foreign(headers["last-event-id"])
                    sent_ids.append(headers["last-event-id"])
                await route.continue_(headers=headers)

            await page.route("**/v1/generations/*/events", resume_from_another_epoch)
            proxy.cut()
            text_at_cut: str = (await page.evaluate(LAST_ANSWER))["text"]
            answer = await wait_for_end(page)

            assert sent_ids, "the page never resumed"
            reset = await first_event(base_url, answer["generationId"], sent_ids[0])
            assert reset.event == "reset"
            assert json.loads(reset.data)["reason"] == "epoch_changed"

            assert answer["state"] == "done"
            assert len(text_at_cut) < len(answer["text"]), "the cut must come mid-stream"
            assert answer["text"] == await server_text(base_url, answer["generationId"])
            # What a reader sees: the answer's title once, and no text from before the reset twice.
            content = page.locator(".msg.assistant .content")
            assert await content.locator("h2").count() == 1
            shown = await content.text_content() or ""
            heading = answer["text"].splitlines()[0].removeprefix("## ")
            assert shown.count(heading) == 1
            assert await page.text_content(".msg.assistant .chip") == "Done"


@pytest.mark.parametrize("transport", ["fetch", "eventsource"])
async def test_js_client_delivers_reset_before_the_replay(browser: Browser, transport: str) -> None:
    async with ssegate() as base_url:
        created = await start_generation(base_url)
        whole = await server_text(base_url, created["id"])
        page = await open_chat(browser, base_url)
        received = await page.evaluate(
            """async ([id, transport, lastEventId]) => {
              const { createGatewayClient } = await import('/static/ssegate.js');
              const types = [];
              let text = '';
              const generation = createGatewayClient().follow(id, { transport, lastEventId });
              for await (const event of generation) {
                types.push(event.type);
                if (event.type === 'reset') text = '';
                if (event.type === 'text') text += event.data.delta;
              }
              return { types, text, lastEventId: generation.stream.lastEventId };
            }""",
            [created["id"], transport, f"{FOREIGN_EPOCH}:3"],
        )
        assert received["types"][:2] == ["reset", "start"]
        assert received["types"][-1] == "done"
        assert received["text"] == whole
        # The resume point is the stream's own again, not the foreign one it was given.
        assert not received["lastEventId"].startswith(FOREIGN_EPOCH)
