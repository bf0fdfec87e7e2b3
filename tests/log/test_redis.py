from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio as aioredis

from ssegate.errors import LogError, StreamClosed, StreamNotFound
from ssegate.log import open_event_log
from ssegate.log.base import RESET_OTHER_EPOCH
from ssegate.log.redis import RedisEventLog
from tests.log.conformance import RETENTION, EventLogConformance, eventually, follow
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.redis


class TestRedisEventLog(EventLogConformance):
    @pytest.fixture
    async def log(self, redis_server: str) -> AsyncIterator[RedisEventLog]:
        async with RedisEventLog(redis_server, block=1.0) as log:
            yield log

    @pytest.fixture
    async def other_log(self, redis_server: str) -> AsyncIterator[RedisEventLog]:
        async with RedisEventLog(redis_server, block=1.0) as log:  # another process
            yield log


@pytest.fixture
def stream() -> str:
    return f"test-{uuid.uuid4().hex}"


async def test_redis_log_live_read_on_one_instance_sees_appends_of_another(
    redis_server: str, stream: str
) -> None:
    async with RedisEventLog(redis_server) as writer, RedisEventLog(redis_server) as reader:
        await writer.create(stream, RETENTION)
        viewer = asyncio.create_task(follow(reader, stream))
        appended = [await writer.append(stream, "text", str(n)) for n in range(30)]
        appended.append(await writer.append(stream, "done", "{}", terminal=True))

        assert [entry.id for entry in await viewer] == [entry.id for entry in appended]


async def test_redis_log_keeps_one_stream_keys_in_one_cluster_slot(redis_server: str, stream: str) -> None:
    async with RedisEventLog(redis_server) as log:
        await log.create(stream, RETENTION)
        await log.append(stream, "text", "x")
        await log.set_meta(stream, {"state": "streaming"})
        await log.heartbeat(stream, "viewer", "p", 30.0)

        inspector = aioredis.Redis.from_url(redis_server, decode_responses=True)
        try:
            keys = sorted(await inspector.keys(f"ssegate:{{{stream}}}:*"))
        finally:
            await inspector.aclose()  # type: ignore[attr-defined]

    tag = f"ssegate:{{{stream}}}:"
    assert keys == [f"{tag}log", f"{tag}members:viewer", f"{tag}meta", f"{tag}state"]


async def test_redis_log_many_waiting_viewers_share_one_blocking_read(redis_server: str) -> None:
    streams = [f"test-{uuid.uuid4().hex}" for _ in range(3)]
    async with RedisEventLog(redis_server) as log:
        for name in streams:
            await log.create(name, RETENTION)
        viewers = [asyncio.create_task(follow(log, name)) for name in streams for _ in range(20)]
        await asyncio.sleep(0.2)  # let the viewers park on the live end

        inspector = aioredis.Redis.from_url(redis_server, decode_responses=True)
        try:

            async def blocked_reads() -> list[dict[str, str]]:
                return [client for client in await inspector.client_list() if client.get("cmd") == "xread"]

            async def someone_blocks() -> bool:
                return bool(await blocked_reads())

            await eventually(someone_blocks)
            blocked = await blocked_reads()
        finally:
            await inspector.aclose()  # type: ignore[attr-defined]
        for name in streams:
            await log.append(name, "done", "{}", terminal=True)

        assert [len(await viewer) for viewer in viewers] == [1] * len(viewers)
    assert len(blocked) == 1  # not one per viewer


async def test_redis_log_restart_without_persistence_never_gives_a_silent_gap(
    private_redis: RedisServer, stream: str
) -> None:
    async with RedisEventLog(private_redis.url) as log:
        await log.create(stream, RETENTION)
        seen = [await log.append(stream, "text", str(n)) for n in range(3)]

        private_redis.restart()

        with pytest.raises(StreamNotFound):
            await log.read(stream, seen[-1].id)
        await log.create(stream, RETENTION)  # the producer starts the stream again
        again = [await log.append(stream, "text", str(n)) for n in range(5)]
        result = await log.read(stream, seen[-1].id)

    assert result.reset == RESET_OTHER_EPOCH
    assert [entry.id for entry in result.entries] == [entry.id for entry in again]


async def test_redis_log_waiting_reader_gets_log_error_when_redis_goes_away(
    private_redis: RedisServer, stream: str
) -> None:
    async with RedisEventLog(private_redis.url) as log:
        await log.create(stream, RETENTION)
        entry = await log.append(stream, "text", "x")
        reader = asyncio.create_task(log.read(stream, entry.id, wait=30.0))
        await asyncio.sleep(0.1)  # parked on the live end

        private_redis.kill()

        with pytest.raises(LogError):
            await reader
        with pytest.raises(LogError):
            await log.read(stream, entry.id)
        with pytest.raises(LogError):
            await log.exists(stream)


async def test_redis_log_recovers_when_redis_comes_back(private_redis: RedisServer, stream: str) -> None:
    async with RedisEventLog(private_redis.url) as log:
        await log.create(stream, RETENTION)
        private_redis.kill()
        with pytest.raises(LogError):
            await log.append(stream, "text", "lost")

        private_redis.start()

        await log.create(stream, RETENTION)
        entry = await log.append(stream, "text", "kept")
        reader = asyncio.create_task(log.read(stream, entry.id, wait=30.0))
        live = await log.append(stream, "text", "live")
        assert [e.id for e in (await reader).entries] == [live.id]


async def test_open_event_log_redis_url_gives_redis_log(redis_server: str) -> None:
    log = open_event_log(redis_server)
    try:
        assert isinstance(log, RedisEventLog)
    finally:
        await log.aclose()


async def test_redis_log_follower_picks_up_a_stream_added_while_it_blocks(redis_server: str) -> None:
    first, second = f"test-{uuid.uuid4().hex}", f"test-{uuid.uuid4().hex}"
    # The follower's XREAD blocks for 30 s; only the wake-up lets it notice the second stream sooner.
    async with RedisEventLog(redis_server, block=30.0) as log, RedisEventLog(redis_server) as writer:
        for name in (first, second):
            await writer.create(name, RETENTION)
        parked = asyncio.create_task(log.read(first, None, wait=25.0))
        await asyncio.sleep(0.1)  # the follower is now blocked on the first stream alone
        reader = asyncio.create_task(log.read(second, None, wait=25.0))
        await asyncio.sleep(0.1)

        appended = await writer.append(second, "text", "live")

        async with asyncio.timeout(5):  # generous; without the wake-up it would take 25 s
            result = await reader
        assert [entry.id for entry in result.entries] == [appended.id]
        await writer.append(first, "done", "{}", terminal=True)
        assert (await parked).closed


async def test_redis_log_appends_made_at_once_each_land_in_order_with_their_own_reply(
    redis_server: str,
) -> None:
    """Appends of one loop turn share a pipeline; each still lands once, in order, with its own
    answer, and one stream's refusal (closed, unknown) is that append's alone."""
    streams = [f"test-{uuid.uuid4().hex}" for _ in range(20)]
    closed, unknown = f"test-{uuid.uuid4().hex}", f"test-{uuid.uuid4().hex}"
    async with RedisEventLog(redis_server) as log:
        for stream in [*streams, closed]:
            await log.create(stream, RETENTION)
        await log.append(closed, "done", "{}", terminal=True)

        async def produce(stream: str) -> list[str]:
            return [(await log.append(stream, "text", f"{stream}:{n}")).data for n in range(10)]

        refused = await asyncio.gather(
            log.append(closed, "text", "late"), log.append(unknown, "text", "lost"), return_exceptions=True
        )
        produced = await asyncio.gather(*(produce(stream) for stream in streams))
        reads = [await log.read(stream, None) for stream in streams]

    assert [type(r) for r in refused] == [StreamClosed, StreamNotFound]
    for stream, sent, read in zip(streams, produced, reads, strict=True):
        assert sent == [f"{stream}:{n}" for n in range(10)]
        assert [entry.data for entry in read.entries] == sent
        assert [entry.seq for entry in read.entries] == list(range(1, 11))


async def test_redis_log_closing_sends_the_appends_still_queued(redis_server: str, stream: str) -> None:
    """An append queued for the next pipeline when the log closes lands, and its caller hears so."""
    async with RedisEventLog(redis_server) as reader:
        log = RedisEventLog(redis_server)
        await log.create(stream, RETENTION)
        last_words = asyncio.create_task(log.append(stream, "done", "{}", terminal=True))
        await asyncio.sleep(0)  # the append is queued for the pipeline of this turn, not sent yet
        await log.aclose()
        # In Redis by now: looked up without giving the event loop a turn, so no late send counts.
        with redis.Redis.from_url(redis_server) as direct:
            assert direct.xlen(f"ssegate:{{{stream}}}:log") == 1

        assert (await asyncio.wait_for(last_words, 5)).terminal
        result = await reader.read(stream, None)
    assert [entry.event for entry in result.entries] == ["done"]
    assert result.closed


@pytest.mark.parametrize("turns", [1, 2, 3])
async def test_redis_log_closed_while_commands_are_under_way_leaves_no_connection_open(
    private_redis: RedisServer, stream: str, turns: int
) -> None:
    # A command that took its clients before the close and a connection after it (redis-py makes
    # one on demand) kept that connection open: found by the garbage collector later, as a
    # ResourceWarning in whatever test ran then.
    log = RedisEventLog(private_redis.url, block=1.0)
    await log.create(stream, RETENTION)
    entry = await log.append(stream, "text", "x")
    under_way = [
        *(log.read(stream, entry.id, wait=30.0) for _ in range(3)),
        *(log.read(stream, None) for _ in range(3)),
        *(log.get_meta(stream) for _ in range(3)),
        *(log.exists(stream) for _ in range(3)),
        *(log.heartbeat(stream, "viewer", "p", 30.0) for _ in range(3)),
        *(log.drop_member(stream, "viewer", "p") for _ in range(3)),
    ]
    tasks = [asyncio.create_task(call) for call in under_way]
    for _ in range(turns):  # the commands are on their way (how far: the parameter)
        await asyncio.sleep(0)
    await log.aclose()
    outcomes = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 20.0)
    # Each either finished or heard that the log closed; a waiting read does not wait on.
    assert all(not isinstance(o, BaseException) or isinstance(o, LogError) for o in outcomes), outcomes

    inspector = aioredis.Redis.from_url(private_redis.url, decode_responses=True)
    try:

        async def only_the_inspector_is_connected() -> bool:
            return len(await inspector.client_list()) == 1

        await eventually(only_the_inspector_is_connected)
    finally:
        await inspector.aclose()  # type: ignore[attr-defined]
