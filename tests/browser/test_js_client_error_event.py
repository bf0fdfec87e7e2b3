"""ssegate's ``error`` event and EventSource's own ``error`` are told apart by ssegate.js.

A native EventSource fires ``error`` (a plain Event, no data) on every connection problem, and a
server event named ``error`` arrives under the same name (a MessageEvent with data). ssegate.js must
deliver only the server's as a ``type: "error"`` event, and treat only the browser's as a drop.
The server here drops the first connection after one event and ends the second with ssegate's
``error`` event; the page follows it with each transport in real Chromium.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import Browser
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ssegate.server.app import STATIC_DIR
from tests.browser.test_chat_page import browser
from tests.support.servers import serve_asgi

__all__ = ["browser"]

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

FAILURE = {"code": "upstream_error", "message": "the model is down", "retryable": True}

FOLLOW = """async (transport) => {
  const { createGatewayClient } = await import('/static/ssegate.js');
  const events = [];
  const states = [];
  const generation = createGatewayClient().follow('g1', {
    transport,
    onEvent: (event) => events.push(event),
    onStateChange: (state) => states.push(state),
  });
  const last = await generation.done;
  return { events, states, last };
}"""


def script_app() -> tuple[Starlette, list[str | None]]:
    """The page, ssegate.js, and a generation whose first connection drops after one event."""
    resumed_from: list[str | None] = []

    async def events(request: Request) -> Response:
        resumed_from.append(request.headers.get("last-event-id") or request.query_params.get("last_event_id"))

        async def body() -> AsyncIterator[bytes]:
            yield b"retry: 50\n\n"
            if len(resumed_from) == 1:
                yield b'event: text\nid: 1\ndata: {"delta": "Hel"}\n\n'
                return  # the connection ends early: a drop, not the generation's end
            yield f"event: error\nid: 2\ndata: {json.dumps(FAILURE)}\n\n".encode()

        return StreamingResponse(body(), media_type="text/event-stream")

    async def page(request: Request) -> Response:
        return HTMLResponse("<!doctype html><title>error events</title>")

    app = Starlette(
        routes=[
            Route("/", page),
            Route("/v1/generations/g1/events", events),
            Mount("/static", StaticFiles(directory=str(STATIC_DIR), follow_symlink=True)),
        ]
    )
    return app, resumed_from


@pytest.mark.parametrize("transport", ["eventsource", "fetch"])
async def test_js_client_tells_a_server_error_event_from_a_connection_error(
    browser: Browser, transport: str
) -> None:
    app, resumed_from = script_app()
    async with serve_asgi(app) as base_url:
        page = await browser.new_page()
        await page.goto(base_url)
        result: dict[str, Any] = await page.evaluate(FOLLOW, transport)

    # The drop was a reconnect (resumed after id 1), not an event; the server's error was an event.
    assert [(e["type"], e["data"]) for e in result["events"]] == [
        ("text", {"delta": "Hel"}),
        ("error", FAILURE),
    ]
    assert "reconnecting" in result["states"]
    assert resumed_from == [None, "1"]
    assert result["last"] == {"type": "error", "id": "2", "data": FAILURE}
