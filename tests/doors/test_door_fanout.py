"""A door's viewers ride the live fan-out as a generation's do: caught up, they join a group per
generation and dialect that writes each event's dialect bytes (encoded once) to all of them; a
reader resuming with Last-Event-ID still gets exactly the rest."""

from __future__ import annotations

import asyncio
import contextlib
import re

import httpx
import pytest

from ssegate import _fast
from tests.doors.conftest import ssegate_demo
from tests.support.metrics import total

VIEWERS = 5
BODY = {
    "model": "demo",
    "stream": True,
    "stream_options": {"include_usage": True},
    "messages": [{"role": "user", "content": "Tell me a story /long"}],
}


async def gauge(client: httpx.AsyncClient, name: str) -> int:
    return int(total((await client.get("/metrics")).text, name))


async def read_all(response: httpx.Response, into: bytearray) -> None:
    async for chunk in response.aiter_bytes():
        into += chunk


@pytest.mark.fast_paths(_fast.LIVE_SOCKET)
@pytest.mark.timeout(60)
async def test_door_viewers_share_the_live_fan_out_and_still_resume_exactly() -> None:
    async with (
        ssegate_demo(demo_tokens_per_second=100.0) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=30) as client,
        contextlib.AsyncExitStack() as stack,
    ):
        started = await stack.enter_async_context(client.stream("POST", "/v1/chat/completions", json=BODY))
        assert started.status_code == 200
        generation_id = started.headers["x-generation-id"]
        bodies = [bytearray() for _ in range(VIEWERS + 1)]
        readers = [asyncio.create_task(read_all(started, bodies[0]))]
        for body in bodies[1:]:
            viewer = await stack.enter_async_context(
                client.stream(
                    "GET",
                    f"/v1/chat/completions/chatcmpl-{generation_id}?include_usage=true",
                    headers={"accept": "text/event-stream"},
                )
            )
            assert viewer.status_code == 200
            readers.append(asyncio.create_task(read_all(viewer, body)))
        # Every viewer, the POST's included, caught up and joined the door's fan-out group.
        for _ in range(1000):
            if await gauge(client, "ssegate_live_viewers") == VIEWERS + 1:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the door's viewers never all joined the live fan-out")
        await asyncio.wait_for(asyncio.gather(*readers), 45)
        assert await gauge(client, "ssegate_live_viewers") == 0

        full = bytes(bodies[0])
        assert full.endswith(b"data: [DONE]\n\n")
        assert all(bytes(body) == full for body in bodies[1:])  # the same bytes, however they came
        assert full.count(b'"delta":{"content":') > 100

        # Resume in the middle, at a sub-event id too when the stream has one: exactly the rest.
        ids = re.findall(rb"^id: (\S+)$", full, flags=re.MULTILINE)
        for last_seen in (ids[len(ids) // 2], ids[-2]):
            end = full.index(b"\n\n", full.index(b"id: " + last_seen + b"\n")) + 2
            resumed = await client.get(
                f"/v1/chat/completions/chatcmpl-{generation_id}?include_usage=true",
                headers={"accept": "text/event-stream", "last-event-id": last_seen.decode()},
            )
            assert resumed.status_code == 200
            assert resumed.content == b":\n" + full[end:]
