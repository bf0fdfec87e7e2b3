"""The sliding-window counter behind shared limits: in one process, and on Redis across two
log instances (two processes' view of one Redis)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from ssegate.log.base import WindowCounter
from ssegate.log.redis import RedisEventLog
from ssegate.server.limits import LocalWindows

WINDOW = 0.5


@pytest.fixture
def key() -> str:
    return f"test-{uuid.uuid4().hex}"


async def _admitted(counter: WindowCounter, key: str, hits: int, limit: int) -> list[float]:
    return [await counter.admit(key, limit, WINDOW) for _ in range(hits)]


async def test_local_windows_admit_the_limit_then_say_how_long_to_wait(key: str) -> None:
    counter = LocalWindows()
    assert [await counter.admit(key, 3, 60, now=t) for t in (0, 10, 20)] == [0.0, 0.0, 0.0]
    assert await counter.admit(key, 3, 60, now=30) == 30  # the hit at 0 leaves at 60
    assert await counter.admit(key, 3, 60, now=60) == 0.0  # it has left: one more fits
    assert await counter.admit(key, 3, 60, now=61) == 9  # the hit at 10 is next to leave
    assert await counter.admit(key + "-other", 3, 60, now=61) == 0.0


@pytest.mark.redis
class TestRedisWindows:
    @pytest.fixture
    async def logs(self, redis_server: str) -> AsyncIterator[tuple[RedisEventLog, RedisEventLog]]:
        async with RedisEventLog(redis_server) as one, RedisEventLog(redis_server) as other:
            yield one, other

    async def test_two_processes_share_one_count(
        self, logs: tuple[RedisEventLog, RedisEventLog], key: str
    ) -> None:
        one, other = logs
        assert isinstance(one, WindowCounter)
        waits = [await (one if n % 2 else other).admit(key, 4, WINDOW) for n in range(6)]
        assert waits[:4] == [0.0] * 4
        assert all(0 < wait <= WINDOW for wait in waits[4:])

    async def test_the_window_slides(self, logs: tuple[RedisEventLog, RedisEventLog], key: str) -> None:
        one, other = logs
        assert await _admitted(one, key, 2, limit=2) == [0.0, 0.0]
        wait = await other.admit(key, 2, WINDOW)
        assert 0 < wait <= WINDOW
        await asyncio.sleep(wait + 0.05)
        assert await other.admit(key, 2, WINDOW) == 0.0

    async def test_keys_are_counted_apart(self, logs: tuple[RedisEventLog, RedisEventLog], key: str) -> None:
        one, _ = logs
        assert await _admitted(one, key, 2, limit=1) == [0.0, pytest.approx(WINDOW, abs=0.1)]
        assert await one.admit(key + "-other", 1, WINDOW) == 0.0
