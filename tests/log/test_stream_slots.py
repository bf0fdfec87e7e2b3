"""Stream slots counted in Redis (ssegate.log.slots): two log instances (two processes' view of
one Redis, or of one Redis Cluster) share one count; a process whose lease ran out holds none."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from ssegate.log.redis import RedisEventLog
from ssegate.log.slots import RedisSlots
from ssegate.server.limits import SharedSlots, SlotSource

pytestmark = pytest.mark.redis

LEASE = 0.5


@pytest.fixture(params=["redis", "cluster"])
async def slots(request: pytest.FixtureRequest) -> AsyncIterator[tuple[RedisSlots, RedisSlots]]:
    if request.param == "redis":
        url = request.getfixturevalue("redis_server")
    else:
        url = request.getfixturevalue("redis_cluster").url
    async with RedisEventLog(url) as one, RedisEventLog(url) as other:
        assert isinstance(one, SlotSource)
        first, second = one.slots(), other.slots()
        assert isinstance(first, SharedSlots)
        yield first, second


async def test_two_processes_share_one_count_of_slots(slots: tuple[RedisSlots, RedisSlots]) -> None:
    one, other = slots
    key = f"streams:{uuid.uuid4().hex}"
    took = [await (one, other)[n % 2].take(key, 3, f"p{n % 2}", 30) for n in range(5)]
    assert took == [True, True, True, False, False]
    await other.give_back(key, "p1")
    assert await one.take(key, 3, "p0", 30)  # the slot p1 gave back
    assert not await other.take(key, 3, "p1", 30)
    # A renewal sets a process's count to what it holds: p0 says it holds one, not three.
    await one.renew({key: 1}, "p0", 30)
    assert [await other.take(key, 3, "p1", 30) for _ in range(3)] == [True, True, False]
    await one.renew({key: 0}, "p0", 30)  # holds none: its slot is free at once
    assert [await other.take(key, 3, "p1", 30) for _ in range(2)] == [True, False]


async def test_a_process_whose_lease_ran_out_holds_no_slot(slots: tuple[RedisSlots, RedisSlots]) -> None:
    one, other = slots
    key = f"streams:{uuid.uuid4().hex}"
    assert await one.take(key, 2, "crashed", LEASE)
    assert await other.take(key, 2, "alive", 30)
    assert not await other.take(key, 2, "alive", 30)
    deadline = asyncio.get_running_loop().time() + 10
    while not await other.take(key, 2, "alive", 30):  # "crashed" never renews: its lease ends
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)  # a lease running out is a time, not an event
    assert not await other.take(key, 2, "alive", 30)  # "alive" holds both now
