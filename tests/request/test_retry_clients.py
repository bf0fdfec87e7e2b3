"""Generic SSE clients that reconnect by repeating their POST: one generation per question,
however many reconnects. ``@microsoft/fetch-event-source`` in real Chromium and the npm
``eventsource`` package (with a custom fetch) in Node, both pinned in tests/request/js.

The server ends every stream after 0.4 s (``max_stream_seconds``, as a proxy's timeout or a
dropped network would), so each answer takes several reconnects.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.conftest import ServerFactory, ssegate_server
from tests.support.browser import chromium, chromium_available
from tests.support.metrics import total

__all__ = ["ssegate_server"]

JS = Path(__file__).parent / "js"
FES = JS / "node_modules" / "@microsoft" / "fetch-event-source" / "lib" / "esm"
# About 2 s of answer (120 tokens at 60 a second), cut every 0.4 s: several reconnects.
CUT = {"max_stream_seconds": 0.4, "retry_ms": 50, "demo_tokens_per_second": 60.0}
QUESTIONS = ["How do reconnects work?", "Why one generation per question?"]


def needs_js() -> None:
    if shutil.which("node") is None or not (JS / "node_modules" / "eventsource").is_dir():
        pytest.fail(
            "node and tests/request/js/node_modules are needed: run scripts/setup.sh test", pytrace=False
        )


async def started(client: httpx.AsyncClient) -> int:
    return int(total((await client.get("/metrics")).text, "ssegate_generations_started_total"))


def body(question: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": question}]}


def check_one_answer(seen: dict[str, Any]) -> None:
    """One generation, read whole across reconnects: every event once, in order, ``done`` last."""
    assert seen["opens"] >= 3, seen["opens"]  # the cuts forced reconnects
    assert len(set(seen["generationIds"])) == 1
    ids = [e["id"] for e in seen["events"]]
    assert len(ids) == len(set(ids)), ids
    kinds = [e["event"] for e in seen["events"]]
    assert kinds[0] == "start"
    assert kinds.count("start") == 1
    assert kinds[-1] == "done"


@pytest.mark.parametrize("with_key", [True, False], ids=["idempotency-key", "last-event-id-only"])
async def test_eventsource_in_node_makes_one_generation_per_question(
    ssegate_server: ServerFactory, with_key: bool
) -> None:
    needs_js()
    async with ssegate_server(**CUT) as client:
        for number, question in enumerate(QUESTIONS, 1):
            args = [str(client.base_url).rstrip("/"), json.dumps(body(question))]
            if with_key:
                args.append(f"q-{uuid.uuid4()}")
            process = await asyncio.create_subprocess_exec(
                "node", str(JS / "eventsource_client.mjs"), *args, stdout=asyncio.subprocess.PIPE, cwd=JS
            )
            out, _ = await asyncio.wait_for(process.communicate(), 60)
            assert process.returncode == 0, out
            seen = json.loads(out)
            check_one_answer(seen)
            # Every reconnect carried the id it got to, and got the rest of the same generation.
            assert seen["lastEventIds"][0] is None
            assert all(seen["lastEventIds"][1:])
            assert set(seen["statuses"]) == {200}
            assert await started(client) == number


FETCH_EVENT_SOURCE_PAGE = """
async ({ body, key }) => {
  const { fetchEventSource } = await import("/__fes/index.js");
  class Retriable extends Error {}
  class Fatal extends Error {}
  const seen = { opens: 0, statuses: [], generationIds: [], events: [] };
  const stop = new AbortController();
  const headers = { "content-type": "application/json" };
  if (key) headers["idempotency-key"] = key;
  await new Promise((resolve, reject) => {
    fetchEventSource("/v1/generations", {
      method: "POST",
      headers,
      body,
      signal: stop.signal,
      openWhenHidden: true,
      async onopen(response) {
        seen.opens += 1;
        seen.statuses.push(response.status);
        seen.generationIds.push(response.headers.get("x-generation-id"));
        if (response.status !== 200) throw new Fatal(`status ${response.status}`);
      },
      onmessage(message) {
        seen.events.push({ id: message.id, event: message.event, data: message.data });
        if (message.event === "done" || message.event === "error") {
          stop.abort();
          resolve();
        }
      },
      // The documented pattern: a stream that closes before its end is retried.
      onclose() { throw new Retriable("closed early"); },
      onerror(error) {
        if (error instanceof Fatal) { reject(error); throw error; }
        return 50;
      },
    });
  });
  return seen;
}
"""


@pytest.mark.parametrize("with_key", [True, False], ids=["idempotency-key", "last-event-id-only"])
async def test_fetch_event_source_in_chromium_makes_one_generation_per_question(
    ssegate_server: ServerFactory, with_key: bool
) -> None:
    needs_js()
    if not chromium_available():
        pytest.fail("Chromium is needed (/usr/bin/chromium)", pytrace=False)
    async with ssegate_server(**CUT) as client, chromium() as browser:
        base = str(client.base_url).rstrip("/")
        page = await browser.new_page()

        async def serve_package(route: Any) -> None:
            # The package's ESM build imports "./fetch" and "./parse": files with a .js suffix.
            name = route.request.url.rsplit("/", 1)[1].removesuffix(".js")
            await route.fulfill(path=str(FES / f"{name}.js"), content_type="text/javascript")

        await page.route(f"{base}/__fes/*", serve_package)
        await page.goto(f"{base}/healthz")
        for number, question in enumerate(QUESTIONS, 1):
            key = f"q-{uuid.uuid4()}" if with_key else None
            seen = await asyncio.wait_for(
                page.evaluate(FETCH_EVENT_SOURCE_PAGE, {"body": json.dumps(body(question)), "key": key}), 60
            )
            check_one_answer(seen)
            assert await started(client) == number
