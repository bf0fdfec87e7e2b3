"""The /v1/generations HTTP API against a real server on a real socket, with the demo model."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from tests.server.conftest import ServerFactory
from tests.support.sse import read_stream

PROMPT = {"messages": [{"role": "user", "content": "Tell me about event streams"}]}
TERMINAL = {"done", "error"}


async def start(client: httpx.AsyncClient, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = await client.post("/v1/generations", json=body or PROMPT)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def wait_for_state(client: httpx.AsyncClient, generation_id: str, states: set[str]) -> dict[str, Any]:
    for _ in range(400):
        described: dict[str, Any] = (await client.get(f"/v1/generations/{generation_id}")).json()
        if described["state"] in states:
            return described
        await asyncio.sleep(0.025)
    raise AssertionError(f"generation never reached {states}: {described}")


async def test_providers_lists_what_can_run_and_the_default(ssegate_server: ServerFactory) -> None:
    async with ssegate_server() as client:
        assert (await client.get("/v1/providers")).json() == [
            {"name": "demo", "default_model": "demo-1", "default": True}
        ]
    # An OpenAI-compatible server configured (nothing is called at start): it becomes the default,
    # with SSEGATE_MODEL as its model.
    async with ssegate_server(openai_base_url="http://127.0.0.1:9/v1", model="local-llama") as client:
        listed = (await client.get("/v1/providers")).json()
    assert {"name": "openai", "default_model": "local-llama", "default": True} in listed
    assert {"name": "demo", "default_model": "demo-1", "default": False} in listed


async def test_create_generation_answers_201_with_links(ssegate_server: ServerFactory) -> None:
    async with ssegate_server() as client:
        response = await client.post("/v1/generations", json=PROMPT)
        assert response.status_code == 201
        body = response.json()
        assert body["events_url"] == f"/v1/generations/{body['id']}/events"
        assert body["cancel_url"] == f"/v1/generations/{body['id']}/cancel"
        assert response.headers["location"] == f"/v1/generations/{body['id']}"
        assert len(body["id"]) >= 30  # 128 random bits: unguessable


async def test_events_stream_every_event_with_id_then_one_terminal(ssegate_server: ServerFactory) -> None:
    async with ssegate_server() as client:
        created = await start(client)
        received = await read_stream(client, "GET", created["events_url"])
        assert received.status == 200
        assert received.types[0] == "start"
        assert received.types[-1] == "done"
        assert sum(t in TERMINAL for t in received.types) == 1
        assert all(e.id for e in received.events)
        assert len({e.id for e in received.events}) == len(received.events)
        assert received.text.strip()
        done = received.data("done")[0]
        assert done["finish_reason"] == "stop"
        assert done["usage"]["output_tokens"] > 0


async def test_think_tool_prompt_streams_every_event_kind_in_order(ssegate_server: ServerFactory) -> None:
    async with ssegate_server() as client:
        created = await start(client, {"messages": [{"role": "user", "content": "/think /tool hi"}]})
        received = await read_stream(client, "GET", created["events_url"])
    # Runs of one type collapsed: the order a client's renderer sees the kinds arrive in.
    kinds = [t for i, t in enumerate(received.types) if i == 0 or received.types[i - 1] != t]
    assert kinds == ["start", "status", "thinking", "text", "tool_call", "usage", "done"]
    assert received.data("start")[0] == {"id": created["id"], "model": "demo-1", "provider": "demo"}
    assert received.data("status") == [{"stage": "model", "model": "demo-1"}]
    assert "".join(d["delta"] for d in received.data("thinking")).strip()
    assert received.text == "I will look that up first."
    calls = received.data("tool_call")
    assert [c["phase"] for c in calls] == ["start"] + ["delta"] * (len(calls) - 2) + ["end"]
    assert len(calls) >= 3
    tool_id = calls[0]["id"]
    assert tool_id.startswith("toolu_demo_")
    assert calls[0] == {"phase": "start", "id": tool_id, "name": "search", "index": 0}
    assert all(set(c) == {"phase", "id", "delta"} and c["id"] == tool_id for c in calls[1:-1])
    # The whole call after its pieces: a UI shows the arguments growing, then the parsed input.
    end = {"phase": "end", "id": tool_id, "name": "search", "input": {"query": "hi", "limit": 3}}
    assert calls[-1] == end
    assert json.loads("".join(c["delta"] for c in calls[1:-1])) == {"query": "hi", "limit": 3}
    usage = received.data("usage")
    assert len(usage) == 1
    assert usage[0]["input_tokens"] > 0
    assert usage[0]["output_tokens"] > 0
    assert received.data("done") == [{"finish_reason": "tool_use", "usage": usage[0]}]


async def test_events_headers_and_opening_are_flushed_for_proxies(ssegate_server: ServerFactory) -> None:
    async with ssegate_server(demo_ttft=5.0, abandon_grace=30.0) as client:
        created = await start(client)
        async with client.stream("GET", created["events_url"]) as response:
            assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert "no-transform" in response.headers["cache-control"]
            assert response.headers["x-accel-buffering"] == "no"
            assert "content-encoding" not in response.headers
            # The opening arrives long before the first token (ttft is 5 s).
            first = await anext(response.aiter_raw())
            assert first.startswith(b": ssegate\n")
            assert b"retry: 1000\n" in first
        await client.post(created["cancel_url"])


async def test_resume_with_last_event_id_gets_the_rest_exactly_once(ssegate_server: ServerFactory) -> None:
    async with ssegate_server(demo_tokens_per_second=100.0) as client:
        created = await start(client)
        part = await read_stream(client, "GET", created["events_url"], max_events=5)
        rest = await read_stream(
            client, "GET", created["events_url"], headers={"Last-Event-ID": part.events[-1].id or ""}
        )
        whole = await read_stream(client, "GET", created["events_url"])
        assert [e.id for e in part.events + rest.events] == [e.id for e in whole.events]
        assert part.text + rest.text == whole.text


async def test_resume_with_query_parameter(ssegate_server: ServerFactory) -> None:
    async with ssegate_server() as client:
        created = await start(client)
        whole = await read_stream(client, "GET", created["events_url"])
        middle = whole.events[len(whole.events) // 2]
        rest = await read_stream(client, "GET", f"{created['events_url']}?last_event_id={middle.id}")
        assert [e.id for e in rest.events] == [e.id for e in whole.events[len(whole.events) // 2 + 1 :]]


async def test_reconnect_after_terminal_event_gets_204(ssegate_server: ServerFactory) -> None:
    async with ssegate_server() as client:
        created = await start(client)
        whole = await read_stream(client, "GET", created["events_url"])
        again = await read_stream(
            client, "GET", created["events_url"], headers={"Last-Event-ID": whole.events[-1].id or ""}
        )
        assert again.status == 204


async def test_unresumable_last_event_id_gets_reset_then_whole_stream(ssegate_server: ServerFactory) -> None:
    async with ssegate_server() as client:
        created = await start(client)
        whole = await read_stream(client, "GET", created["events_url"])
        for bad in ("nonsense", "zzzz:3", "1:999999"):
            got = await read_stream(client, "GET", created["events_url"], headers={"Last-Event-ID": bad})
            assert got.types[0] == "reset", bad
            assert got.data("reset")[0]["reason"]
            assert [e.id for e in got.events[1:]] == [e.id for e in whole.events]


async def test_reset_reason_names_a_future_id_and_a_foreign_epoch(ssegate_server: ServerFactory) -> None:
    async with ssegate_server() as client:
        created = await start(client)
        whole = await read_stream(client, "GET", created["events_url"])
        middle = whole.events[len(whole.events) // 2].id or ""
        epoch, _, seq = middle.partition(":")
        foreign = ("1" if epoch[0] != "1" else "2") + epoch[1:]
        for cursor, reason in ((f"{epoch}:999999", "future_id"), (f"{foreign}:{seq}", "epoch_changed")):
            got = await read_stream(client, "GET", created["events_url"], headers={"Last-Event-ID": cursor})
            assert got.status == 200
            assert got.types[0] == "reset", cursor
            assert got.data("reset")[0] == {"reason": reason}
            assert [e.id for e in got.events[1:]] == [e.id for e in whole.events]


async def test_late_joiner_and_concurrent_viewers_see_the_same_stream(ssegate_server: ServerFactory) -> None:
    async with ssegate_server(demo_tokens_per_second=200.0) as client:
        created = await start(client)
        viewers = [read_stream(client, "GET", created["events_url"]) for _ in range(5)]
        results = await asyncio.gather(*viewers)
        late = await read_stream(client, "GET", created["events_url"])
        for received in [*results, late]:
            assert [e.id for e in received.events] == [e.id for e in late.events]
            assert received.text == late.text


async def test_post_with_accept_event_stream_streams_and_names_the_generation(
    ssegate_server: ServerFactory,
) -> None:
    async with ssegate_server() as client:
        received = await read_stream(
            client, "POST", "/v1/generations", headers={"Accept": "text/event-stream"}, json_body=PROMPT
        )
        assert received.status == 200
        generation_id = received.headers["x-generation-id"]
        assert received.headers["location"] == f"/v1/generations/{generation_id}/events"
        assert received.types[0] == "start"
        assert received.types[-1] == "done"
        assert received.data("start")[0]["id"] == generation_id
        replay = await read_stream(client, "GET", f"/v1/generations/{generation_id}/events")
        assert replay.text == received.text


async def test_cancel_ends_stream_at_once_and_is_idempotent(ssegate_server: ServerFactory) -> None:
    async with ssegate_server(demo_tokens_per_second=20.0) as client:
        created = await start(client, {"messages": [{"role": "user", "content": "/long"}]})
        async with client.stream("GET", created["events_url"]) as stream:
            first = await anext(stream.aiter_raw())
            assert first
            response = await client.post(created["cancel_url"])
            assert response.status_code == 202
            assert response.json()["state"] == "cancelled"
        again = await client.post(created["cancel_url"])
        assert again.status_code == 202
        received = await read_stream(client, "GET", created["events_url"])
        assert received.types[-1] == "done"
        assert received.data("done")[0] | {"usage": None} == {
            "finish_reason": "cancelled",
            "reason": "cancelled",
            "usage": None,
        }
        assert sum(t in TERMINAL for t in received.types) == 1
        described = (await client.get(created["url"])).json()
        assert described["state"] == "cancelled"
        assert described["finish_reason"] == "cancelled"


async def test_abandoned_generation_is_cancelled_after_grace(ssegate_server: ServerFactory) -> None:
    graces = {"abandon_grace": 0.3, "first_viewer_grace": 0.3}
    async with ssegate_server(demo_tokens_per_second=20.0, **graces) as client:
        created = await start(client, {"messages": [{"role": "user", "content": "/long"}]})
        described = await wait_for_state(client, created["id"], {"done", "error", "cancelled"})
        assert described["state"] == "cancelled"
        received = await read_stream(client, "GET", created["events_url"])
        assert received.data("done")[0]["reason"] == "abandoned"
        assert len(received.data("text")) < 100  # stopped long before the ~500-token answer


async def test_a_slow_first_viewer_still_finds_the_generation_running(ssegate_server: ServerFactory) -> None:
    # The POST's answer and the GET that follows can be slow on a bad network: the short grace for
    # a viewer who left must not apply before anyone has watched.
    async with ssegate_server(abandon_grace=0.05, first_viewer_grace=30.0) as client:
        created = await start(client)
        await asyncio.sleep(0.5)  # ten abandon graces pass before the first viewer comes
        received = await read_stream(client, "GET", created["events_url"])
    assert received.data("done")[0]["finish_reason"] == "stop"


async def test_keepalive_comments_flow_while_the_model_is_silent(ssegate_server: ServerFactory) -> None:
    # A first token 30 s away: the POST answers after start_answer_wait, not after the token.
    async with ssegate_server(demo_ttft=30.0, keepalive_interval=0.05, start_answer_wait=0.1) as client:
        created = await start(client)
        async with client.stream("GET", created["events_url"]) as response:
            seen = b""
            async for chunk in response.aiter_raw():
                seen += chunk
                if seen.count(b": keep-alive\n") >= 2:
                    break
            # Only the start event: keep-alives are comments, never events.
            assert seen.count(b"event:") == 1
            assert b"event: start\n" in seen
        await client.post(created["cancel_url"])


async def test_upstream_error_mid_stream_ends_with_one_error_event(ssegate_server: ServerFactory) -> None:
    async with ssegate_server() as client:
        created = await start(client, {"messages": [{"role": "user", "content": "/error please"}]})
        received = await read_stream(client, "GET", created["events_url"])
        assert received.types[-1] == "error"
        error = received.data("error")[0]
        assert error["code"] == "upstream_overloaded"
        assert error["retryable"] is True
        assert error["message"]
        assert received.text  # the text before the failure is kept
        assert (await client.get(created["url"])).json()["state"] == "error"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"", 400, "invalid_json"),
        (b"[]", 400, "invalid_request"),
        (b'{"messages": []}', 400, "invalid_request"),
        (b'{"messages": "hi"}', 400, "invalid_request"),
        (b'{"messages": [{"role": "user", "content": ""}]}', 400, "invalid_request"),
        (b'{"messages": [{"role": "wizard", "content": "hi"}]}', 400, "invalid_request"),
        (b'{"messages": [{"role": "user", "content": 5}]}', 400, "invalid_request"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": "many"}', 400, "invalid_request"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": true}', 400, "invalid_request"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "keep_running": "yes"}', 400, "invalid_request"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "colour": "red"}', 400, "invalid_request"),
        (
            b'{"messages": [{"role": "user", "content": "hi"}], "provider": "nope"}',
            400,
            "provider_unavailable",
        ),
        (
            b'{"messages": [{"role": "user", "content": "hi"}], "provider": "anthropic"}',
            400,
            "provider_unavailable",
        ),
    ],
)
async def test_bad_generation_requests_get_clear_json_errors(
    ssegate_server: ServerFactory, body: bytes, status: int, code: str
) -> None:
    async with ssegate_server() as client:
        response = await client.post(
            "/v1/generations", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["code"] == code
        assert error["message"]


async def test_body_over_limit_is_413(ssegate_server: ServerFactory) -> None:
    async with ssegate_server(max_body_bytes=1000) as client:
        big = {"messages": [{"role": "user", "content": "x" * 2000}]}
        response = await client.post("/v1/generations", json=big)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "body_too_large"


async def test_unknown_and_expired_ids_are_json_404_and_410(ssegate_server: ServerFactory) -> None:
    async with ssegate_server() as client:
        for path in ("/v1/generations/nope", "/v1/generations/nope/events"):
            response = await client.get(path)
            assert response.status_code == 404
            assert response.headers["content-type"] == "application/json"
            assert response.json()["error"]["code"] == "not_found"
        expired = "00000001" + "A" * 22  # created in 1970: long past retention
        response = await client.get(f"/v1/generations/{expired}/events")
        assert response.status_code == 410
        assert response.json()["error"]["code"] == "expired"
        assert (await client.post(f"/v1/generations/{expired}/cancel")).status_code == 410


@pytest.mark.parametrize("bad_id", ["a\x01b", "x" * 129])
async def test_bad_last_event_id_is_400(ssegate_server: ServerFactory, bad_id: str) -> None:
    async with ssegate_server() as client:
        created = await start(client)
        url = httpx.URL(created["events_url"], params={"last_event_id": bad_id})
        response = await client.get(url)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_last_event_id"


@pytest.mark.parametrize("bad_id", ["a\tb", "x" * 129])
async def test_bad_last_event_id_header_is_400(ssegate_server: ServerFactory, bad_id: str) -> None:
    # A tab is the one control character an HTTP header can carry to the server.
    async with ssegate_server() as client:
        created = await start(client)
        response = await client.get(created["events_url"], headers={"Last-Event-ID": bad_id})
        assert response.status_code == 400
        assert response.headers["content-type"].startswith("application/json")
        assert response.json()["error"]["code"] == "invalid_last_event_id"


async def test_describe_reports_state_model_usage_and_times(ssegate_server: ServerFactory) -> None:
    async with ssegate_server() as client:
        created = await start(client)
        await read_stream(client, "GET", created["events_url"])
        described = (await client.get(created["url"])).json()
        assert described["state"] == "done"
        assert described["provider"] == "demo"
        assert described["model"]
        assert described["usage"]["output_tokens"] > 0
        assert described["finished_at"] >= described["created_at"]
        assert described["viewers"] == 0
        json.dumps(described)


async def test_healthz_and_unknown_route(ssegate_server: ServerFactory) -> None:
    async with ssegate_server() as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert (await client.get("/readyz")).status_code == 200
        missing = await client.get("/v1/nothing")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "not_found"
