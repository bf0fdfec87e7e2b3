"""ssegate.publish: the same publish call in process and over HTTP."""

from __future__ import annotations

import asyncio

import pytest

from ssegate.errors import HTTPStatusError
from ssegate.log import MemoryEventLog
from ssegate.log.base import Retention
from ssegate.publish import HTTPPublisher, LocalPublisher, SyncHTTPPublisher
from ssegate.topics import TopicInputError, Topics
from tests.server.conftest import ServerFactory
from tests.topics.helpers import datas, subscribe


async def test_local_publisher_appends_to_the_topic_once_per_id() -> None:
    async with MemoryEventLog() as log:
        topics = Topics(log, Retention(100, 60))
        publisher = LocalPublisher(topics)
        first = await publisher.publish("jobs/1", {"percent": 10}, event="progress", id="a")
        again = await publisher.publish("jobs/1", {"percent": 10}, event="progress", id="a")
        with pytest.raises(TopicInputError):
            await publisher.publish("bad topic", 1)
        result = await log.read("topic:jobs/1", None)
    assert first == again
    assert [(e.event, e.data) for e in result.entries if e.event == "progress"] == [
        ("progress", '{"percent":10}')
    ]


async def test_http_publishers_reach_subscribers_and_raise_on_refusal(ssegate_server: ServerFactory) -> None:
    async with ssegate_server() as client:
        url = str(client.base_url)
        async with subscribe(client, "/v1/topics/user/local/inbox/events") as stream:
            async with HTTPPublisher(url) as publisher:
                event_id = await publisher.publish("user/local/inbox", {"n": 1}, event="note")
                with pytest.raises(HTTPStatusError) as refused:
                    await publisher.publish("user/local/inbox", 1, event="reset")
            with SyncHTTPPublisher(url) as sync_publisher:
                await asyncio.to_thread(sync_publisher.publish, "user/local/inbox", "two")
            events = await stream.events(2)
    assert refused.value.status == 400
    assert events[0].id == event_id
    assert datas(events) == [{"n": 1}, "two"]
