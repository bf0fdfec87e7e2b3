"""A process's viewer membership in the log follows its viewers, whatever order joins and leaves
take: the last viewer's withdrawal never lands after the next viewer's heartbeat.

Before: the withdrawal ran in a task of its own, so a viewer joining in that moment (a reload, a
second tab) had its heartbeat written first and then withdrawn: the state said ``viewers: 0`` while
its stream was open, and another process judged the generation abandoned and cancelled it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager

import pytest

from ssegate.gateway import VIEWER, Gateway, stream_key
from ssegate.log import open_event_log
from ssegate.log.base import EventLog, Retention
from ssegate.log.memory import MemoryEventLog
from ssegate.providers.base import GenerationRequest, Message, ProviderEvent, ProviderInfo, TextDelta

_WAIT = 10.0
GRACE = 0.2


class Endless:
    """A provider whose answer never ends: only a cancel (abandonment) stops it."""

    info = ProviderInfo(name="endless", default_model="endless-1")

    async def stream(self, request: GenerationRequest) -> AsyncIterator[ProviderEvent]:
        yield TextDelta("thinking it over")
        await asyncio.Event().wait()

    async def aclose(self) -> None:
        return None


@pytest.fixture(params=["memory", "redis"])
async def shared_log(request: pytest.FixtureRequest) -> AsyncIterator[EventLog]:
    """One log, as every process of a deployment shares it."""
    if request.param == "memory":
        log: EventLog = MemoryEventLog()
    else:
        log = open_event_log(request.getfixturevalue("redis_server"))
    async with log:  # type: ignore[attr-defined]
        yield log


async def rejoin(gateway: Gateway, generation_id: str) -> AbstractAsyncContextManager[None]:
    """A viewer leaves and another joins in the same moment (a reload): returns the one that joined,
    entered, once the leave has finished."""
    leaving = gateway.viewing(generation_id)
    await leaving.__aenter__()
    left = asyncio.create_task(leaving.__aexit__(None, None, None))
    await asyncio.sleep(0)  # one turn: the leave is now writing its withdrawal
    joined = gateway.viewing(generation_id)
    await joined.__aenter__()
    await left
    return joined


async def test_a_viewer_joining_as_the_last_one_leaves_is_counted(shared_log: EventLog) -> None:
    key = stream_key("g-rejoin")
    async with Gateway(shared_log, lambda _name: Endless(), retention=Retention()) as gateway:
        joined = await rejoin(gateway, "g-rejoin")
        assert await shared_log.live_members(key, VIEWER) == 1
        await joined.__aexit__(None, None, None)
        assert await shared_log.live_members(key, VIEWER) == 0


async def test_a_viewer_in_another_process_that_rejoined_keeps_the_generation_from_being_abandoned(
    shared_log: EventLog,
) -> None:
    ended: asyncio.Queue[str] = asyncio.Queue()
    producing = Gateway(
        shared_log,
        lambda _name: Endless(),
        retention=Retention(),
        abandon_grace=GRACE,
        first_viewer_grace=GRACE,
        process_id="producing",
    )
    producing.on_terminal = lambda _id, _state, data: ended.put_nowait(str(data.get("reason")))
    # The viewers' process, without its ticker: what it wrote on the join and the leave is all the
    # producing process can go by (its ticker would renew a lost heartbeat a tick later).
    viewing = Gateway(shared_log, lambda _name: Endless(), retention=Retention(), process_id="viewing")
    async with producing:
        request = GenerationRequest(messages=(Message("user", "hi"),))
        generation_id = (await producing.start(request, provider_name="endless"))["id"]
        joined = await rejoin(viewing, generation_id)
        # Five graces and a tick every quarter grace: abandonment would have come by now.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ended.get(), 5 * GRACE)
        described = await producing.describe(generation_id)
        assert described is not None
        assert (described["state"], described["viewers"]) == ("streaming", 1)

        await joined.__aexit__(None, None, None)  # now nobody watches: abandoned after the grace
        assert await asyncio.wait_for(ended.get(), _WAIT) == "abandoned"
        await viewing.aclose()
