"""The topics HTTP API on a real server and socket, over the in-process event log."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from ssegate.log.base import Retention
from tests.server.conftest import ServerFactory
from tests.topics.helpers import datas, publish, subscribe


async def test_topic_publish_reaches_a_live_subscriber_as_json(ssegate_server: ServerFactory) -> None:
    async with ssegate_server() as client, subscribe(client, "/v1/topics/news/events") as stream:
        response = await client.post("/v1/topics/news/events", json={"data": "hello", "event": "note"})
        assert response.status_code == 201
        assert response.json()["topic"] == "news"
        [event] = await stream.events(1)
    assert event.event == "note"
    assert event.data == '"hello"'  # a string travels as a JSON string, like every other value
    assert event.id == response.json()["id"]


async def test_topic_subscribe_before_first_publish_waits_instead_of_404(
    ssegate_server: ServerFactory,
) -> None:
    async with ssegate_server() as client, subscribe(client, "/v1/topics/user/local/fresh/events") as stream:
        await publish(client, "user/local/fresh", {"n": 1})
        assert datas(await stream.events(1)) == [{"n": 1}]


async def test_topic_new_subscriber_gets_only_new_events_by_default(ssegate_server: ServerFactory) -> None:
    async with ssegate_server() as client:
        await publish(client, "t", "old")
        async with subscribe(client, "/v1/topics/t/events") as stream:
            await publish(client, "t", "new")
            assert datas(await stream.events(1)) == ["new"]


@pytest.mark.parametrize(("history", "expected"), [("2", [2, 3]), ("all", [1, 2, 3]), ("10", [1, 2, 3])])
async def test_topic_history_replays_the_last_events_first(
    ssegate_server: ServerFactory, history: str, expected: list[int]
) -> None:
    async with ssegate_server() as client:
        for n in (1, 2, 3):
            await publish(client, "h", n)
        async with subscribe(client, "/v1/topics/h/events", history=history) as stream:
            await publish(client, "h", 4)
            assert datas(await stream.events(len(expected) + 1)) == [*expected, 4]


async def test_topic_resume_is_exact_at_the_history_live_seam(ssegate_server: ServerFactory) -> None:
    total = 200
    async with ssegate_server() as client:
        producing = asyncio.Event()

        async def produce() -> None:
            for n in range(total):
                await publish(client, "seam", n)
                if n == 20:
                    producing.set()

        producer = asyncio.create_task(produce())
        await producing.wait()
        seen: list[int] = []
        last_id = None
        while not seen or seen[-1] != total - 1:
            params = {} if last_id else {"history": "all"}
            async with subscribe(client, "/v1/topics/seam/events", last_event_id=last_id, **params) as stream:
                events = await stream.events(min(37, total - len(seen)))
                seen += datas(events)
                last_id = events[-1].id
        await producer
    assert seen == list(range(total))  # no gap, no duplicate across four reconnects mid-publishing


async def test_topic_opening_id_lets_a_reconnect_catch_events_published_while_away(
    ssegate_server: ServerFactory,
) -> None:
    async with ssegate_server() as client:
        async with subscribe(client, "/v1/topics/away/events") as stream:
            opening = await stream.until_id_known()  # no event yet, but the browser holds an id
        await publish(client, "away", "while you were away")
        async with subscribe(client, "/v1/topics/away/events", last_event_id=opening) as stream:
            assert datas(await stream.events(1)) == ["while you were away"]


async def test_topics_several_on_one_connection_resume_exactly(ssegate_server: ServerFactory) -> None:
    async with ssegate_server() as client:
        path = "/v1/topics/events"
        params = {"topic": ["b", "a"], "history": "all"}
        await publish(client, "a", "a1")
        await publish(client, "b", "b1")
        async with client.stream("GET", path, params=params) as response:
            assert response.headers["x-topics"] == "a,b"
        seen: list[str] = []
        async with subscribe(client, path, **params) as stream:
            seen += datas(await stream.events(2))
            await publish(client, "a", "a2")
            [event] = await stream.events(1)
            seen.append(json.loads(event.data))
            resume_from = event.id
        assert resume_from is not None
        assert resume_from.startswith("m")
        assert len(resume_from) <= 128
        for name in ("b2", "a3", "b3"):
            await publish(client, name[0], name)
        async with subscribe(client, path, last_event_id=resume_from, topic=["a", "b"]) as stream:
            rest = datas(await stream.events(3))
    assert sorted(seen) == ["a1", "a2", "b1"]
    assert sorted(rest) == ["a3", "b2", "b3"]  # no order across topics, only within each


async def test_topics_one_connection_with_one_topic_uses_plain_ids(ssegate_server: ServerFactory) -> None:
    async with ssegate_server() as client, subscribe(client, "/v1/topics/events", topic="solo") as stream:
        event_id = await publish(client, "solo", 1)
        [event] = await stream.events(1)
    assert event.id == event_id


async def test_topic_resume_past_retention_says_reset_trimmed(ssegate_server: ServerFactory) -> None:
    async with ssegate_server(topic_retention=Retention(5, 3600)) as client:
        first = await publish(client, "r", 0)
        for n in range(1, 11):
            await publish(client, "r", n)
        async with subscribe(client, "/v1/topics/r/events", last_event_id=first) as stream:
            events = await stream.events(6)
    assert events[0].event == "reset"
    assert json.loads(events[0].data) == {"reason": "trimmed", "topic": "r"}
    assert datas(events[1:]) == [6, 7, 8, 9, 10]  # what is still retained, never a silent gap


async def test_topics_multi_resume_past_retention_resets_only_the_trimmed_topic(
    ssegate_server: ServerFactory,
) -> None:
    async with ssegate_server(topic_retention=Retention(3, 3600)) as client:
        path = "/v1/topics/events"
        async with subscribe(client, path, topic=["busy", "calm"]) as stream:
            await publish(client, "calm", "c1")
            [event] = await stream.events(1)
        for n in range(6):
            await publish(client, "busy", n)
        await publish(client, "calm", "c2")
        async with subscribe(client, path, last_event_id=event.id, topic=["busy", "calm"]) as stream:
            events = await stream.events(5)
    assert [e.event for e in events] == ["reset", "message", "message", "message", "message"]
    assert json.loads(events[0].data) == {"reason": "trimmed", "topic": "busy"}
    assert datas(events[1:]) == [3, 4, 5, "c2"]


async def test_topic_unknown_last_event_id_says_reset_then_replays(ssegate_server: ServerFactory) -> None:
    async with ssegate_server() as client:
        await publish(client, "u", 1)
        async with subscribe(client, "/v1/topics/u/events", last_event_id="not-ours") as stream:
            events = await stream.events(2)
    assert json.loads(events[0].data) == {"reason": "unknown_id", "topic": "u"}
    assert datas(events[1:]) == [1]


async def test_topic_publish_with_the_same_id_twice_appends_once(ssegate_server: ServerFactory) -> None:
    async with ssegate_server() as client:
        body = {"data": {"step": 1}, "id": "job-7/step-1"}
        first = await client.post("/v1/topics/jobs/events", json=body)
        again = await client.post("/v1/topics/jobs/events", json=body)
        other = await client.post("/v1/topics/jobs/events", json={**body, "id": "job-7/step-2"})
        assert first.status_code == 201
        assert again.status_code == 200
        assert again.json() == {"id": first.json()["id"], "topic": "jobs", "duplicate": True}
        assert other.status_code == 201
        async with subscribe(client, "/v1/topics/jobs/events", history="all") as stream:
            await publish(client, "jobs", "end")
            assert datas(await stream.events(3)) == [{"step": 1}, {"step": 1}, "end"]


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        (b"not json", 400, "invalid_json", None),
        (b"[1]", 422, "invalid_request", "body"),
        (b"{}", 422, "invalid_request", "data"),
        (b'{"data": 1, "extra": 2}', 422, "invalid_request", "extra"),
        (b'{"data": 1, "event": "reset"}', 400, "reserved_event_type", "event"),
        (b'{"data": 1, "event": "done"}', 400, "reserved_event_type", "event"),
        (b'{"data": 1, "event": "error"}', 400, "reserved_event_type", "event"),
        (b'{"data": 1, "event": "start"}', 400, "reserved_event_type", "event"),
        (b'{"data": 1, "event": "a\\nb"}', 422, "invalid_request", "event"),
        (b'{"data": 1, "event": 5}', 422, "invalid_request", "event"),
        (b'{"data": 1, "id": 5}', 422, "invalid_request", "id"),
        (b'{"data": 1, "id": "has space"}', 422, "invalid_request", "id"),
        (b'{"data": "' + b"x" * 300 + b'"}', 413, "body_too_large", None),
    ],
)
async def test_topic_publish_rejects_bad_bodies_with_json_errors(
    ssegate_server: ServerFactory, body: bytes, status: int, code: str, field: str | None
) -> None:
    async with ssegate_server(max_body_bytes=200) as client:
        response = await client.post(
            "/v1/topics/v/events", content=body, headers={"content-type": "application/json"}
        )
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert error.get("field") == field


@pytest.mark.parametrize(
    ("method", "path", "params", "headers"),
    [
        ("POST", "/v1/topics/a%20b/events", {}, {}),
        ("POST", "/v1/topics/a/%2E%2E/b/events", {}, {}),
        ("GET", "/v1/topics/a%7Bb%7D/events", {}, {}),
        ("GET", "/v1/topics/ok/events", {"history": "-1"}, {}),
        ("GET", "/v1/topics/ok/events", {"history": "lots"}, {}),
        ("GET", "/v1/topics/events", {}, {}),
        ("GET", "/v1/topics/events", {"topic": [f"t{i}" for i in range(17)]}, {}),
        ("GET", "/v1/topics/events", {"topic": ["ok", "bad name"]}, {}),
        ("GET", "/v1/topics/ok/events", {}, {"last-event-id": "x" * 200}),
    ],
)
async def test_topic_bad_names_and_parameters_get_400(
    ssegate_server: ServerFactory, method: str, path: str, params: dict[str, object], headers: dict[str, str]
) -> None:
    async with ssegate_server() as client:
        kwargs: dict[str, object] = {"params": params, "headers": headers}
        if method == "POST":
            kwargs["json"] = {"data": 1}
        response = await client.request(method, httpx.URL(path), **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 400, response.text
    assert response.json()["error"]["message"]


async def test_topic_idle_stream_sends_keepalive_comments(ssegate_server: ServerFactory) -> None:
    async with (
        ssegate_server(keepalive_interval=0.05) as client,
        client.stream("GET", "/v1/topics/idle/events") as response,
    ):
        received = b""
        async for chunk in response.aiter_raw():
            received += chunk
            if b": keep-alive\n" in received:
                break
    assert b": keep-alive\n" in received


async def test_topic_private_user_topics_are_readable_in_local_mode(ssegate_server: ServerFactory) -> None:
    async with ssegate_server() as client, subscribe(client, "/v1/topics/user/alice/inbox/events") as stream:
        await publish(client, "user/alice/inbox", "hi alice")
        assert datas(await stream.events(1)) == ["hi alice"]
