"""Headless Chromium's EventSource is the judge: it must dispatch exactly what we encoded, and
exactly what the shared parse vectors say.

Each stream is served by a real HTTP server on 127.0.0.1; the page is served from the same origin.
The page collects every event until the stream ends (EventSource reports ``error`` and would
reconnect; we close it instead), then hands back ``[type, data, lastEventId]`` per event.
"""

from __future__ import annotations

import json
import re

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from ssegate.codec import Event, encode_comment, encode_event, encode_retry
from tests.codec.vectors import load_vectors
from tests.support.browser import chromium
from tests.support.servers import serve_asgi

pytestmark = pytest.mark.browser

PAGE = """<!doctype html><meta charset="utf-8"><title>codec</title><script>
window.collect = (url, types) => new Promise((resolve) => {
  const seen = [];
  const source = new EventSource(url);
  const record = (e) => seen.push([e.type, e.data, e.lastEventId]);
  for (const type of types) source.addEventListener(type, record);
  source.onerror = () => { source.close(); resolve(seen); };
});
</script>"""

Received = list[tuple[str, str, str]]

MIB_LINE = "m" * (1 << 20)

# name -> events sent; what must arrive is the same with line breaks as LF and the id in force.
ENCODER_CASES: dict[str, list[Event]] = {
    "lf": [Event("a\nb")],
    "crlf": [Event("a\r\nb\r\n")],
    "lone cr": [Event("a\rb\r")],
    "only line breaks": [Event("\r\n\n\r")],
    "u+2028 and u+0085": [Event("a\u2028b\u0085c")],
    "emoji": [Event("🦜 𝄞 👩‍👩‍👧")],
    "empty string": [Event("")],
    "1 MiB line": [Event(MIB_LINE)],
    "leading spaces": [Event("   three")],
    "leading colon": [Event(":not a comment\n: nor this")],
    "bom-looking u+feff": [Event("\ufeffstart"), Event("\ufeff")],
    "nul in data": [Event("a\0b")],
    "json": [Event('{"delta": "hi\\n", "n": 1}', event="text", id="1")],
    "types and ids": [
        Event("one", event="text", id="1"),
        Event("two", id=" spaced id"),
        Event("three", event="done"),
        Event("four", id=""),
    ],
    "retry and comments": [Event("x", id="9", retry=2500), Event("y", event="ünïcode type")],
}


def expected_for(sent: list[Event]) -> Received:
    received, last_id = [], ""
    for event in sent:
        last_id = last_id if event.id is None else event.id
        received.append((event.event, event.data.replace("\r\n", "\n").replace("\r", "\n"), last_id))
    return received


def encoded_stream(sent: list[Event]) -> bytes:
    # Comments and a retry line between events must not disturb anything.
    parts = [encode_comment("opening"), encode_retry(60_000)]
    for event in sent:
        parts += [encode_event(event), encode_comment("keep-alive")]
    return b"".join(parts)


def types_in(stream: bytes) -> list[str]:
    """Every type the stream might dispatch, so the page listens for wrong ones too."""
    candidates = re.findall(r"event:? ?([^\r\n]*)", stream.decode(errors="replace"))
    return sorted({"message", *candidates} - {""})


async def collect_all(streams: dict[str, bytes]) -> dict[str, Received]:
    """Serve each stream at ``/stream/<n>`` and return what the page's EventSource got from each."""
    bodies = list(streams.values())

    def serve_page(request: Request) -> Response:
        return HTMLResponse(PAGE)

    def serve_stream(request: Request) -> Response:
        body = bodies[request.path_params["n"]]
        return Response(body, media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    app = Starlette(routes=[Route("/", serve_page), Route("/stream/{n:int}", serve_stream)])
    received: dict[str, Received] = {}
    async with serve_asgi(app) as base_url, chromium() as browser:
        page = await browser.new_page()
        await page.goto(base_url + "/")
        for n, (name, body) in enumerate(streams.items()):
            seen = await page.evaluate(
                "([url, types]) => collect(url, types)", [f"/stream/{n}", types_in(body)]
            )
            received[name] = [(t, d, i) for t, d, i in seen]
    return received


async def test_codec_encoder_output_reaches_chromium_intact() -> None:
    streams = {name: encoded_stream(sent) for name, sent in ENCODER_CASES.items()}
    received = await collect_all(streams)
    expected = {name: expected_for(sent) for name, sent in ENCODER_CASES.items()}
    # Checked on its own so that a failure names it instead of burying it in a 1 MiB diff.
    assert received.pop("1 MiB line") == expected.pop("1 MiB line"), "the 1 MiB line arrived changed"
    assert received == expected


async def test_codec_parse_vectors_match_chromium() -> None:
    vectors = [v for v in load_vectors() if v.chunks]
    received = await collect_all({v.name: v.stream for v in vectors})
    expected = {v.name: [(e.type, e.data, e.last_event_id) for e in v.events] for v in vectors}
    assert json.dumps(received, indent=1) == json.dumps(expected, indent=1)
