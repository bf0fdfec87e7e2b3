"""The chat page in headless Chromium against the real server and the offline demo model.

Every test compares what the page holds (``window.__ssegate.answers()``: the raw text as received)
with what the server's event log holds for the same generation, read independently over HTTP and
parsed with the codec. Faults are real: a TCP proxy between browser and server cuts live connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page

from ssegate.codec import Event, EventStreamParser
from ssegate.config import Settings
from ssegate.server.app import create_app
from tests.support.servers import serve_asgi

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

# Fast enough for a quick suite, slow enough that "mid-stream" lasts a few seconds for /long.
DEMO_PACE = {"demo_ttft": 0.05, "demo_tokens_per_second": 250.0}
LONG_PROMPT = "Tell me about event streams /long"

LAST_ANSWER = "window.__ssegate.answers().at(-1)"


@contextlib.asynccontextmanager
async def ssegate(**overrides: Any) -> AsyncIterator[str]:
    async with serve_asgi(create_app(Settings(**{**DEMO_PACE, **overrides}))) as base_url:
        yield base_url


@pytest_asyncio.fixture(loop_scope="module")
async def browser(module_chromium: Browser) -> AsyncIterator[Browser]:
    """The module's Chromium; the pages a test opened (each in a context of its own) close after it."""
    yield module_chromium
    for context in module_chromium.contexts:
        await context.close()


class CuttableProxy:
    """A TCP proxy whose live connections can be cut (RST), as when a network drops."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.connections: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.cut()
        self.server.close()
        await self.server.wait_closed()

    def cut(self) -> None:
        for writer in list(self.connections):
            writer.transport.abort()
        self.connections.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self.connections.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()


HELLO = {"messages": [{"role": "user", "content": "hi"}]}


async def start_generation(base_url: str) -> dict[str, Any]:
    """Start a generation over plain HTTP (no page); its description (id, events_url, ...)."""
    async with httpx.AsyncClient(base_url=base_url) as client:
        response = await client.post("/v1/generations", json=HELLO)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def server_events(base_url: str, generation_id: str) -> list[Event]:
    """The whole generation as the server's log holds it (a late joiner gets it from the start)."""
    parser = EventStreamParser()
    events: list[Event] = []
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=20) as client,
        client.stream("GET", f"/v1/generations/{generation_id}/events") as response,
    ):
        assert response.status_code == 200
        async for chunk in response.aiter_bytes():
            events += [item for item in parser.feed(chunk) if isinstance(item, Event)]
            if events and events[-1].event in ("done", "error"):
                return events
    raise AssertionError("the stream ended without a terminal event")


async def server_text(base_url: str, generation_id: str) -> str:
    events = await server_events(base_url, generation_id)
    return "".join(json.loads(e.data)["delta"] for e in events if e.event == "text")


async def open_chat(browser: Browser, url: str, **context: Any) -> Page:
    page = await browser.new_page(**context)
    await page.goto(url)
    await page.wait_for_function("window.__ssegate !== undefined")
    return page


async def send(page: Page, prompt: str) -> None:
    await page.fill("#prompt", prompt)
    await page.press("#prompt", "Enter")


async def wait_for_text(page: Page, characters: int) -> None:
    await page.wait_for_function(f"({LAST_ANSWER}?.text.length ?? 0) > {characters}")


async def wait_for_end(page: Page) -> dict[str, Any]:
    await page.wait_for_function(f"['done', 'error', 'cancelled'].includes({LAST_ANSWER}?.state)")
    answer: dict[str, Any] = await page.evaluate(LAST_ANSWER)
    return answer


async def record_states(page: Page) -> None:
    """Keep every state an answer is painted in, in window.__states."""
    await page.evaluate(
        """() => {
          window.__states = [];
          new MutationObserver((records) => {
            for (const r of records) window.__states.push(r.target.dataset.state);
          }).observe(document.getElementById('messages'),
                     {subtree: true, attributes: true, attributeFilter: ['data-state']});
        }"""
    )


async def test_chat_page_streams_answer_token_by_token_and_matches_server(browser: Browser) -> None:
    async with ssegate() as base_url:
        page = await open_chat(browser, base_url)
        await page.evaluate(
            """() => {
              window.__lengths = [];
              new MutationObserver(() => {
                const content = document.querySelector('.msg.assistant .content');
                if (content) window.__lengths.push(content.textContent.length);
              }).observe(document.getElementById('messages'),
                         {subtree: true, childList: true, characterData: true});
            }"""
        )
        # Shift+Enter is a new line, Enter sends.
        await page.type("#prompt", "First line")
        await page.press("#prompt", "Shift+Enter")
        await page.type("#prompt", LONG_PROMPT)
        await page.press("#prompt", "Enter")
        answer = await wait_for_end(page)

        assert answer["state"] == "done"
        assert answer["text"] == await server_text(base_url, answer["generationId"])
        assert await page.text_content(".msg.user .bubble") == f"First line\n{LONG_PROMPT}"
        lengths: list[int] = await page.evaluate("window.__lengths")
        growth = sorted(set(lengths))
        assert len(growth) >= 10, f"the answer appeared in only {len(growth)} steps"
        assert "tok/s" in (await page.text_content(".msg.assistant .stats") or "")


async def test_chat_page_sends_whole_conversation(browser: Browser) -> None:
    async with ssegate() as base_url:
        page = await open_chat(browser, base_url)
        await send(page, "hello")
        first = await wait_for_end(page)
        async with page.expect_request("**/v1/generations") as request_info:
            await send(page, "and again")
        request = await request_info.value
        assert json.loads(request.post_data or "{}")["messages"] == [
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": first["text"]},
            {"role": "user", "content": "and again"},
        ]
        await wait_for_end(page)
        assert await page.locator(".msg.assistant").count() == 2


async def test_chat_page_resumes_exactly_after_network_cut(browser: Browser) -> None:
    async with ssegate() as base_url:
        proxy = CuttableProxy(httpx.URL(base_url).port or 0)
        async with proxy as proxied_url:
            page = await open_chat(browser, proxied_url)
            await record_states(page)
            await send(page, LONG_PROMPT)
            await wait_for_text(page, 200)
            proxy.cut()
            text_at_cut: str = (await page.evaluate(LAST_ANSWER))["text"]
            answer = await wait_for_end(page)

            assert answer["state"] == "done"
            assert answer["text"] == await server_text(base_url, answer["generationId"])
            assert len(text_at_cut) < len(answer["text"]), "the cut must come mid-stream"
            states: list[str] = await page.evaluate("window.__states")
            assert "reconnecting" in states
            assert states.index("reconnecting") < states.index("done")


async def test_chat_page_resumes_exactly_after_reload(browser: Browser) -> None:
    async with ssegate() as base_url:
        page = await open_chat(browser, base_url)
        await send(page, LONG_PROMPT)
        await wait_for_text(page, 200)
        before = await page.evaluate(LAST_ANSWER)
        generation_id = before["generationId"]
        assert generation_id in page.url

        await page.reload()
        await page.wait_for_function("window.__ssegate !== undefined")
        answer = await wait_for_end(page)

        assert answer["generationId"] == generation_id
        assert answer["state"] == "done"
        assert answer["text"] == await server_text(base_url, generation_id)
        assert len(before["text"]) < len(answer["text"]), "the reload must come mid-stream"
        assert await page.text_content(".msg.user .bubble") == LONG_PROMPT


async def test_chat_page_watch_link_shows_same_answer_live(browser: Browser) -> None:
    # A slower pace: the second tab must join while the answer is still being written (at 120
    # tokens a second the answer was over within a second, before a loaded machine opened the tab).
    async with ssegate(demo_tokens_per_second=30.0) as base_url:
        page = await open_chat(browser, base_url)
        watcher = await browser.new_page()  # opening a tab is slow; do it before the answer starts
        await send(page, LONG_PROMPT)
        await wait_for_text(page, 50)
        href = await page.get_attribute(".msg.assistant .watch", "href")
        assert href is not None

        await watcher.goto(base_url + href)
        await watcher.wait_for_function(f"{LAST_ANSWER}?.state === 'streaming'")
        author_answer, watcher_answer = await wait_for_end(page), await wait_for_end(watcher)

        assert watcher_answer["generationId"] == author_answer["generationId"]
        assert watcher_answer["text"] == author_answer["text"]
        assert author_answer["text"] == await server_text(base_url, author_answer["generationId"])
        assert await watcher.locator("#composer").is_hidden()


async def test_chat_page_stop_cancels_generation_upstream(browser: Browser) -> None:
    async with ssegate() as base_url:
        page = await open_chat(browser, base_url)
        await send(page, f"{LONG_PROMPT} /slow")
        await wait_for_text(page, 20)
        await page.click("#stop")
        answer = await wait_for_end(page)

        assert answer["state"] == "cancelled"
        async with httpx.AsyncClient(base_url=base_url) as client:
            state = (await client.get(f"/v1/generations/{answer['generationId']}")).json()
        assert state["state"] == "cancelled"
        events = await server_events(base_url, answer["generationId"])
        assert json.loads(events[-1].data)["finish_reason"] == "cancelled"
        # Nothing arrived after the stop: the page holds exactly the text the log ended with.
        assert answer["text"] == "".join(json.loads(e.data)["delta"] for e in events if e.event == "text")
        assert await page.text_content(".msg.assistant .chip") == "Stopped"
        assert await page.is_enabled("#send")


async def test_chat_page_renders_hostile_answer_inert(browser: Browser) -> None:
    async with ssegate() as base_url:
        page = await browser.new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: dialogs.append(dialog.message))
        # Any script the answer managed to run would call one of these.
        await page.add_init_script("window.alert = (m) => { window.__pwned = String(m); };")
        await page.goto(base_url)
        await page.wait_for_function("window.__ssegate !== undefined")
        await send(page, "/xss")
        answer = await wait_for_end(page)
        assert answer["state"] == "done"
        assert "<script>" in answer["text"]  # the hostile text really arrived

        content = page.locator(".msg.assistant .content")
        hostile = await content.evaluate(
            """(root) => ({
              active: root.querySelectorAll('script, iframe, img, svg, style, object, embed, form').length,
              handlers: [...root.querySelectorAll('*')].filter(
                (el) => [...el.attributes].some((a) => a.name.startsWith('on'))).length,
              badLinks: [...root.querySelectorAll('a[href]')].filter(
                (a) => !/^(https?:|mailto:|#)/i.test(a.getAttribute('href'))).length,
              unsafeRel: [...root.querySelectorAll('a[href^="http"]')].filter(
                (a) => !a.relList.contains('noopener') || !a.relList.contains('noreferrer')).length,
            })"""
        )
        assert hostile == {"active": 0, "handlers": 0, "badLinks": 0, "unsafeRel": 0}
        # Raw HTML is shown to the reader as text rather than silently dropped.
        assert "<script>alert(1)</script>" in (await content.text_content() or "")
        assert await page.evaluate("window.__pwned") is None
        assert dialogs == []
        assert await page.evaluate("document.querySelectorAll('iframe').length") == 0


@pytest.mark.parametrize(
    ("prompt", "words"),
    [("/error", "overloaded"), ("/error-auth", "API key")],
)
async def test_chat_page_explains_upstream_errors(browser: Browser, prompt: str, words: str) -> None:
    async with ssegate() as base_url:
        page = await open_chat(browser, base_url)
        await send(page, prompt)
        answer = await wait_for_end(page)

        assert answer["state"] == "error"
        error = page.locator(".msg.assistant .error")
        assert await error.is_visible()
        assert words in (await error.text_content() or "")
        assert await page.get_attribute(".msg.assistant", "data-state") == "error"
        assert await page.text_content("#conn-text") == "Error"


async def test_chat_page_fits_a_phone_screen(browser: Browser) -> None:
    async with ssegate() as base_url:
        page = await open_chat(browser, base_url, viewport={"width": 375, "height": 740}, is_mobile=True)
        await send(page, "/tool /think explain")
        await wait_for_end(page)
        overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0
        assert await page.locator(".msg.assistant .tool").count() == 1
        assert await page.is_visible("#send")


@pytest.mark.parametrize("transport", ["fetch", "eventsource"])
async def test_js_client_follows_generation_in_browser(browser: Browser, transport: str) -> None:
    async with ssegate() as base_url:
        created = await start_generation(base_url)
        page = await open_chat(browser, base_url)
        received = await page.evaluate(
            """async ([id, transport]) => {
              const { createGatewayClient } = await import('/static/ssegate.js');
              const types = [];
              let text = '';
              for await (const event of createGatewayClient().follow(id, { transport })) {
                types.push(event.type);
                if (event.type === 'text') text += event.data.delta;
              }
              return { types, text };
            }""",
            [created["id"], transport],
        )
        assert received["types"][0] == "start"
        assert received["types"][-1] == "done"
        assert received["text"] == await server_text(base_url, created["id"])
