"""A new generation's upstream request leaves before ``Gateway.start`` returns.

The caller of ``start`` (the POST handler) goes on to answer its own client; that work is not on
the way to the first token, the upstream request is. The probe provider writes its "request" the
way aiohttp does on Python 3.11: from a task of its own, started by the call.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from ssegate.gateway import Gateway, stream_key
from ssegate.log.base import Retention
from ssegate.log.memory import MemoryEventLog
from ssegate.providers.base import Finished, GenerationRequest, Message, ProviderEvent, ProviderInfo


class WritesFromATask:
    """Starts its upstream call like the SDKs' aiohttp transport: the request is written by a task."""

    info = ProviderInfo(name="probe", default_model="probe-1")

    def __init__(self) -> None:
        self.request_written = False
        self.answer = asyncio.Event()
        self.writer: asyncio.Task[None] | None = None

    async def _write_request(self) -> None:
        self.request_written = True

    async def stream(self, request: GenerationRequest) -> AsyncIterator[ProviderEvent]:
        self.writer = asyncio.get_running_loop().create_task(self._write_request())
        await self.answer.wait()  # the upstream's answer
        yield Finished("stop", "probe-1")

    async def aclose(self) -> None:
        return None


async def test_start_returns_once_the_upstream_request_is_written() -> None:
    provider = WritesFromATask()
    async with (
        MemoryEventLog() as log,
        Gateway(log, lambda _name: provider, retention=Retention()) as gateway,
    ):
        request = GenerationRequest(messages=(Message("user", "hi"),))
        meta = await gateway.start(request, provider_name="probe")
        assert provider.request_written  # nothing else ran in between: start itself let it go
        provider.answer.set()
        described = await _until_ended(gateway, meta["id"])
        assert described["state"] == "done"


async def _until_ended(gateway: Gateway, generation_id: str) -> dict[str, object]:
    """The description once the generation's terminal event is in the log (waits on the log)."""
    key, after = stream_key(generation_id), None
    while not (result := await gateway.log.read(key, after, wait=5.0)).closed:
        assert result.entries, "the generation did not end"
        after = result.entries[-1].id
    described = await gateway.describe(generation_id)
    assert described is not None
    return described
