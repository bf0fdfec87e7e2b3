"""Appends are idempotent on single Redis, Redis Cluster and Sentinel: an append batch sent again
after its reply was lost (what redis-py's cluster retry does on a connection error) lands once,
and viewers see every event once, with the ids the producer was given."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from ssegate.log.redis import RedisEventLog
from tests.log.conformance import RETENTION, follow
from tests.support.redis_cluster import RedisClusterServers
from tests.support.redis_sentinel import SentinelServers

pytestmark = pytest.mark.redis


async def _replayed_appends_land_once(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    stream = f"test-{uuid.uuid4().hex}"
    async with (
        RedisEventLog(url, block=1.0) as writer,
        RedisEventLog(url, block=1.0) as other,
        RedisEventLog(url, block=1.0) as reader,
    ):
        await writer.create(stream, RETENTION)
        viewer = asyncio.create_task(follow(reader, stream))
        batcher = writer._appends
        send = batcher._run
        interleave: list[str] = []

        async def reply_lost_then_sent_again(
            batch: list[Any], commands: list[Any]
        ) -> tuple[list[Any], list[Any]]:
            await send(batch, [])  # the appends ran on Redis; the reply never came back
            for data in interleave:  # another process appends meanwhile
                await other.append(stream, "text", data)
            interleave.clear()
            return await send(batch, commands)

        monkeypatch.setattr(batcher, "_run", reply_lost_then_sent_again)
        appended = [await writer.append(stream, "text", str(n)) for n in range(3)]
        interleave.append("other")
        appended.append(await writer.append(stream, "text", "3"))
        # Two appends to one stream in one batch: the replay of the first finds it too.
        pair = writer.append(stream, "text", "a"), writer.append(stream, "text", "b")
        appended += await asyncio.gather(*pair)
        appended.append(await writer.append(stream, "done", "{}", terminal=True))

        seen = await viewer
        assert [(e.event, e.data) for e in seen] == [
            ("text", "0"), ("text", "1"), ("text", "2"), ("text", "3"), ("text", "other"),
            ("text", "a"), ("text", "b"), ("done", "{}"),
        ]  # fmt: skip
        assert [e.seq for e in seen] == list(range(1, 9))
        mine = [e for e in seen if e.data != "other"]
        assert [e.id for e in mine] == [e.id for e in appended]
        assert (await reader.read(stream, None)).closed


async def test_redis_append_sent_twice_lands_once(redis_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    await _replayed_appends_land_once(redis_server, monkeypatch)


@pytest.mark.cluster
async def test_cluster_append_sent_twice_lands_once(
    redis_cluster: RedisClusterServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _replayed_appends_land_once(redis_cluster.url, monkeypatch)


async def test_sentinel_append_sent_twice_lands_once(
    redis_sentinel: SentinelServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _replayed_appends_land_once(redis_sentinel.url, monkeypatch)
