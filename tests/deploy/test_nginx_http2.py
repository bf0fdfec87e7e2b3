"""More than six streams in one page: HTTP/2 at the proxy.

Over HTTP/1.1 a browser opens at most six connections per origin, so a seventh event stream waits
until one of the six ends. With nginx serving TLS and HTTP/2 (the shipped deploy/nginx.conf, its
commented TLS lines switched on, a certificate the test makes), every stream is a stream of one
connection. Ten generations started at once in one Chromium page must all be live together: each
one's first token arrives before any of them finishes. The same page over plain HTTP/1.1 is the
control: there the seventh waits, so the test can tell the difference.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from ssegate.config import Settings
from ssegate.server.app import create_app
from tests.deploy.nginx import nginx_in_front_of, self_signed_certificate
from tests.support.browser import chromium
from tests.support.servers import serve_asgi

pytestmark = [pytest.mark.nginx, pytest.mark.browser]

STREAMS = 10
# Each answer takes ~3 s (120 tokens at 40/s): long enough that a stream that waited for a free
# connection starts visibly after the first ones ended, even on a busy machine.
PACE = {"demo_ttft": 0.05, "demo_tokens_per_second": 40.0}

OPEN_TEN = """async (n) => {
  const { createGatewayClient } = await import('/static/ssegate.js');
  const gateway = createGatewayClient();
  const t0 = performance.now();
  const answers = Array.from({ length: n }, (_, i) => {
    const seen = { firstText: null, text: '' };
    const answer = gateway.generate({ messages: [{ role: 'user', content: `stream ${i}` }] }, {
      onEvent: (event) => {
        if (event.type !== 'text') return;
        seen.firstText ??= performance.now() - t0;
        seen.text += event.data.delta;
      },
    });
    return answer.done.then((last) => ({ ...seen, done: performance.now() - t0, last: last?.type }));
  });
  const results = await Promise.all(answers);
  const protocols = performance.getEntriesByType('resource')
    .filter((entry) => entry.name.endsWith('/v1/generations'))
    .map((entry) => entry.nextHopProtocol);
  return { results, protocols };
}"""


@asynccontextmanager
async def proxied_ssegate(*, tls: bool) -> AsyncIterator[str]:
    with tempfile.TemporaryDirectory(prefix="ssegate-tls-") as directory:
        certificate = await self_signed_certificate(Path(directory)) if tls else None
        async with (
            serve_asgi(create_app(Settings(**PACE))) as backend,
            nginx_in_front_of([backend], tls=certificate) as proxy_url,
        ):
            yield proxy_url


async def open_ten(base_url: str) -> dict[str, Any]:
    async with chromium() as browser:
        context = await browser.new_context(ignore_https_errors=True)  # the test's own certificate
        page = await context.new_page()
        await page.goto(f"{base_url}/healthz")
        result: dict[str, Any] = await page.evaluate(OPEN_TEN, STREAMS)
        await context.close()
    return result


async def test_ten_streams_in_one_page_are_all_live_over_http2() -> None:
    async with proxied_ssegate(tls=True) as base_url:
        result = await open_ten(base_url)

    results = result["results"]
    assert set(result["protocols"]) == {"h2"}  # entries of the answers the browser has timed
    assert [r["last"] for r in results] == ["done"] * STREAMS
    assert all(r["text"] for r in results)
    # All ten were live at once: the last first token came before the first answer ended.
    assert max(r["firstText"] for r in results) < min(r["done"] for r in results)


async def test_control_over_http1_the_seventh_stream_waits_for_a_connection() -> None:
    async with proxied_ssegate(tls=False) as base_url:
        result = await open_ten(base_url)

    results = result["results"]
    assert set(result["protocols"]) == {"http/1.1"}
    assert [r["last"] for r in results] == ["done"] * STREAMS
    first_done = min(r["done"] for r in results)
    waited = [r for r in results if r["firstText"] > first_done]
    assert len(waited) == STREAMS - 6  # six connections per origin; the other four queued
