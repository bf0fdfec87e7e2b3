from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from ssegate.client import EventSource, stream_events
from ssegate.codec.encoder import encode_comment, encode_event, encode_retry
from ssegate.codec.events import Event
from ssegate.errors import ClientError, HTTPStatusError, NotAnEventStream
from tests.client.scripted import DropConnection, numbered, scripted_server, sse


class AlwaysHighest(random.Random):
    def random(self) -> float:
        return 1.0


FAST = 10  # ms: reconnect at once unless the test says otherwise


async def collect(source: EventSource) -> list[Event]:
    async with source:
        return [event async for event in source]


async def test_event_source_reads_events_until_204() -> None:
    async def handler(request: Request, n: int) -> Response:
        if n == 0:
            return sse(numbered(1, 3))
        return Response(status_code=204)

    async with scripted_server(handler) as (url, seen):
        source = EventSource(f"{url}/stream", retry=FAST)
        events = await collect(source)
    assert [(e.data, e.id) for e in events] == [("1", "1"), ("2", "2"), ("3", "3")]
    assert [s.last_event_id for s in seen] == [None, "3"]
    assert seen[0].headers["accept"] == "text/event-stream"
    assert source.last_event_id == "3"
    assert source.reconnects == 1


async def test_event_source_resumes_after_a_drop_with_every_event_exactly_once() -> None:
    all_events = numbered(1, 6)

    async def handler(request: Request, n: int) -> Response:
        after = int(request.headers.get("last-event-id", "0"))
        if after >= len(all_events):
            return Response(status_code=204)

        async def body() -> AsyncIterator[bytes]:
            yield encode_retry(10)
            for chunk in all_events[after:]:
                if n == 0 and chunk == all_events[3]:
                    yield chunk[: len(chunk) // 2]  # half an event, never to be completed
                    raise DropConnection
                yield chunk

        return sse(body())

    async with scripted_server(handler) as (url, seen):
        source = EventSource(f"{url}/stream")
        events = await collect(source)
    assert [e.data for e in events] == ["1", "2", "3", "4", "5", "6"]
    assert [s.last_event_id for s in seen] == [None, "3", "6"]
    assert source.reconnects == 2


async def test_event_source_honours_the_server_retry_field() -> None:
    async def handler(request: Request, n: int) -> Response:
        if n == 0:
            return sse([encode_retry(10), *numbered(1, 1)])
        return Response(status_code=204)

    async with scripted_server(handler) as (url, seen):
        # Left to itself this client would wait a full minute before reconnecting.
        source = EventSource(f"{url}/stream", retry=60_000, rng=AlwaysHighest())
        events = await asyncio.wait_for(collect(source), timeout=10)
    assert [e.data for e in events] == ["1"]
    assert source.retry == 10
    assert len(seen) == 2


async def test_event_source_stops_on_a_terminal_event_type_without_reconnecting() -> None:
    async def handler(request: Request, n: int) -> Response:
        done = encode_event(Event(data="{}", event="done", id="3"))
        return sse([*numbered(1, 2), done, *numbered(4, 5)])

    async with scripted_server(handler) as (url, seen):
        events = await collect(EventSource(f"{url}/stream", stop_on={"done", "error"}, retry=FAST))
    assert [e.event for e in events] == ["message", "message", "done"]
    assert len(seen) == 1


@pytest.mark.parametrize("status", [404, 500])
async def test_event_source_raises_http_status_error_with_status_and_body(status: int) -> None:
    async def handler(request: Request, n: int) -> Response:
        return JSONResponse({"code": "nope", "message": "no such stream"}, status_code=status)

    async with scripted_server(handler) as (url, seen):
        with pytest.raises(HTTPStatusError) as caught:
            await collect(EventSource(f"{url}/missing", retry=FAST))
    assert caught.value.status == status
    assert json.loads(caught.value.body) == {"code": "nope", "message": "no such stream"}
    assert caught.value.url == f"{url}/missing"
    assert len(seen) == 1  # not retried


async def test_event_source_raises_not_an_event_stream_for_another_content_type() -> None:
    async def handler(request: Request, n: int) -> Response:
        return PlainTextResponse("data: 1\n\n")

    async with scripted_server(handler) as (url, _):
        with pytest.raises(NotAnEventStream) as caught:
            await collect(EventSource(f"{url}/stream", retry=FAST))
    assert caught.value.content_type.startswith("text/plain")


async def test_event_source_retries_503_after_retry_after() -> None:
    async def handler(request: Request, n: int) -> Response:
        if n == 0:
            return PlainTextResponse("busy", status_code=503, headers={"Retry-After": "0"})
        if n == 1:
            return sse([encode_retry(10), *numbered(1, 1)])
        return Response(status_code=204)

    async with scripted_server(handler) as (url, seen):
        # Without Retry-After, the first retry would wait a full minute.
        source = EventSource(f"{url}/stream", retry=60_000, rng=AlwaysHighest())
        events = await asyncio.wait_for(collect(source), timeout=10)
    assert [e.data for e in events] == ["1"]
    assert len(seen) == 3


async def test_event_source_gives_up_after_max_retries_with_the_last_error() -> None:
    async def handler(request: Request, n: int) -> Response:
        return PlainTextResponse("still busy", status_code=503)

    async with scripted_server(handler) as (url, seen):
        with pytest.raises(HTTPStatusError) as caught:
            await collect(EventSource(f"{url}/stream", max_retries=2, retry=FAST))
    assert caught.value.status == 503
    assert len(seen) == 3  # the first try and two retries


async def test_event_source_gives_up_on_an_unreachable_server_with_a_client_error() -> None:
    async with scripted_server(lambda request, n: asyncio.sleep(0, Response())) as (url, _):
        pass  # the server is gone: its port refuses connections now
    with pytest.raises(ClientError, match="gave up after 1 reconnection attempts"):
        await collect(EventSource(f"{url}/stream", max_retries=1, retry=FAST))


async def test_event_source_resets_the_retry_budget_after_a_connection_that_delivered() -> None:
    async def handler(request: Request, n: int) -> Response:
        if n >= 5:
            return Response(status_code=204)
        if n % 2 == 0:
            return PlainTextResponse("busy", status_code=503)
        return sse(numbered(n, n))

    async with scripted_server(handler) as (url, seen):
        events = await collect(EventSource(f"{url}/stream", max_retries=2, retry=FAST))
    # 503, event + close, 503, event + close, 503, 204: without the reset, the third failure ends it.
    assert [e.data for e in events] == ["1", "3"]
    assert len(seen) == 6


async def test_event_source_posts_json_and_headers_then_resumes_with_get_at_location() -> None:
    async def handler(request: Request, n: int) -> Response:
        if request.method == "POST":
            return sse(numbered(1, 2), headers={"Location": "../generations/g1/events"})
        if request.headers.get("last-event-id") == "2":
            return sse(numbered(3, 3))
        return Response(status_code=204)

    async with scripted_server(handler) as (url, seen):
        source = EventSource(
            f"{url}/v1/generations/start",
            method="POST",
            json={"prompt": "hi"},
            headers={"Authorization": "Bearer k1"},
            retry=FAST,
        )
        events = await collect(source)
    assert [e.data for e in events] == ["1", "2", "3"]
    first, second, _ = seen
    assert (first.method, json.loads(first.body)) == ("POST", {"prompt": "hi"})
    assert first.headers["authorization"] == "Bearer k1"
    assert (second.method, second.path, second.body) == ("GET", "/v1/generations/g1/events", b"")
    assert second.headers["authorization"] == "Bearer k1"
    assert second.last_event_id == "2"
    assert source.url == f"{url}/v1/generations/g1/events"


@pytest.mark.parametrize("status", [502, 504])
async def test_event_source_does_not_repeat_a_post_a_proxy_failed(status: int) -> None:
    # Behind a proxy a 502/504 can come after the server started the generation: a second POST
    # would start another.
    async def handler(request: Request, n: int) -> Response:
        return PlainTextResponse("bad gateway", status_code=status)

    async with scripted_server(handler) as (url, seen):
        with pytest.raises(HTTPStatusError) as caught:
            await collect(EventSource(f"{url}/v1/generations", method="POST", json={"a": 1}, retry=FAST))
    assert caught.value.status == status
    assert [s.method for s in seen] == ["POST"]


async def test_event_source_repeats_a_post_answered_503() -> None:
    async def handler(request: Request, n: int) -> Response:
        if n == 0:
            return PlainTextResponse("draining", status_code=503, headers={"Retry-After": "0"})
        if n == 1:
            return sse(numbered(1, 1))
        return Response(status_code=204)

    async with scripted_server(handler) as (url, seen):
        events = await collect(EventSource(f"{url}/v1/generations", method="POST", json={"a": 1}, retry=FAST))
    assert [e.data for e in events] == ["1"]
    assert [s.method for s in seen][:2] == ["POST", "POST"]


async def test_event_source_repeats_a_post_that_names_no_resume_url() -> None:
    async def handler(request: Request, n: int) -> Response:
        if n == 0:
            return sse(numbered(1, 1))
        return Response(status_code=204)

    async with scripted_server(handler) as (url, seen):
        await collect(EventSource(f"{url}/stream", method="POST", json={"a": 1}, retry=FAST))
    assert [(s.method, s.body, s.last_event_id) for s in seen] == [
        ("POST", b'{"a":1}', None),
        ("POST", b'{"a":1}', "1"),
    ]


async def test_event_source_reconnects_when_the_server_goes_silent() -> None:
    release = asyncio.Event()

    async def handler(request: Request, n: int) -> Response:
        if n == 0:

            async def silent() -> AsyncIterator[bytes]:
                yield numbered(1, 1)[0]
                await release.wait()  # alive as far as TCP knows, but says nothing

            return sse(silent())
        if n == 1:
            return sse(numbered(2, 2))
        return Response(status_code=204)

    async with scripted_server(handler) as (url, seen):
        try:
            source = EventSource(f"{url}/stream", idle_timeout=0.2, retry=FAST)
            events = await collect(source)
        finally:
            release.set()
    assert [e.data for e in events] == ["1", "2"]
    assert seen[1].last_event_id == "1"


async def test_event_source_idle_timeout_is_kept_away_by_keep_alive_comments() -> None:
    async def handler(request: Request, n: int) -> Response:
        if n > 0:
            return Response(status_code=204)

        async def chatty() -> AsyncIterator[bytes]:
            yield numbered(1, 1)[0]
            for _ in range(8):  # 0.4 s of keep-alives, twice the idle timeout
                await asyncio.sleep(0.05)
                yield encode_comment("keep-alive")
            yield numbered(2, 2)[0]

        return sse(chatty())

    async with scripted_server(handler) as (url, seen):
        events = await collect(EventSource(f"{url}/stream", idle_timeout=0.2, retry=FAST))
    assert [e.data for e in events] == ["1", "2"]
    assert [s.last_event_id for s in seen] == [None, "2"]  # one stream, then the 204


async def test_event_source_sends_the_given_last_event_id_on_the_first_request() -> None:
    async def handler(request: Request, n: int) -> Response:
        return Response(status_code=204)

    async with scripted_server(handler) as (url, seen):
        events = await collect(EventSource(f"{url}/stream", last_event_id="41", retry=FAST))
    assert events == []
    assert seen[0].last_event_id == "41"


async def test_event_source_closes_the_connection_when_the_reader_stops_early() -> None:
    closed = asyncio.Event()

    async def handler(request: Request, n: int) -> Response:
        async def endless() -> AsyncIterator[bytes]:
            try:
                n = 0
                while True:
                    n += 1
                    yield numbered(n, n)[0]
                    await asyncio.sleep(0.01)
            finally:
                closed.set()

        return sse(endless())

    async with scripted_server(handler) as (url, _):
        async with EventSource(f"{url}/stream", retry=FAST) as source:
            async for event in source:
                if event.data == "3":
                    break
        await asyncio.wait_for(closed.wait(), timeout=10)
    assert source.last_event_id == "3"


async def test_stream_events_yields_the_events_of_a_url() -> None:
    async def handler(request: Request, n: int) -> Response:
        return sse(numbered(1, 2)) if n == 0 else Response(status_code=204)

    async with scripted_server(handler) as (url, _):
        data = [event.data async for event in stream_events(f"{url}/stream", retry=FAST)]
    assert data == ["1", "2"]
