"""API keys, scopes, ownership and stream tokens over real HTTP."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from ssegate.auth import StreamTokens
from tests.security.harness import LONG_PROMPT, PROMPT, SECRET, bearer, running, start
from tests.support.sse import iter_stream, read_stream


async def test_missing_key_is_401_json_with_bearer_challenge() -> None:
    async with running(auth=True) as server:
        response = await server.client.post("/v1/generations", json=PROMPT)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(
    "header", ["Bearer wrong-key", "Bearer alice-key-012345678", "Basic YWxpY2U6eA==", "Bearer"]
)
async def test_wrong_key_is_401(header: str) -> None:
    async with running(auth=True) as server:
        response = await server.client.post("/v1/generations", json=PROMPT, headers={"Authorization": header})
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json()["error"]["code"] in {"invalid_api_key", "unauthorized"}


async def test_missing_scope_is_403_json() -> None:
    async with running(auth=True) as server:
        response = await server.client.post("/v1/generations", json=PROMPT, headers=bearer("reader"))
        assert response.status_code == 403
        error = response.json()["error"]
        assert error["code"] == "forbidden"
        assert "generate" in error["message"]
        metrics = await server.client.get("/metrics", headers=bearer("alice"))
        assert metrics.status_code == 403
        assert (await server.client.get("/metrics", headers=bearer("ops"))).status_code == 200


async def test_right_key_starts_and_streams_its_own_generation() -> None:
    async with running(auth=True) as server:
        created = await start(server, "alice")
        received = await read_stream(server.client, "GET", created["events_url"], headers=bearer("alice"))
        assert received.types[0] == "start"
        assert received.types[-1] == "done"


async def test_another_principals_generation_is_404_like_an_unknown_id() -> None:
    async with running(auth=True) as server:
        created = await start(server, "alice")
        for method, path in (
            ("GET", created["url"]),
            ("GET", created["events_url"]),
            ("POST", created["cancel_url"]),
        ):
            response = await server.client.request(method, path, headers=bearer("bob"))
            assert response.status_code == 404, path
            assert response.json()["error"]["code"] == "not_found"
        assert (await server.client.get(created["url"], headers=bearer("root"))).status_code == 200
        assert (await server.client.get(created["url"], headers=bearer("alice"))).status_code == 200


async def test_stream_token_from_the_create_response_opens_the_stream_without_a_key() -> None:
    async with running(auth=True) as server:
        created = await start(server, "alice")
        token = created["stream_token"]
        received = await read_stream(server.client, "GET", f"{created['events_url']}?token={token}")
        assert received.status == 200
        assert received.types[-1] == "done"
        # The token only watches: it cannot start generations or mint tokens.
        response = await server.client.post(
            "/v1/generations", json=PROMPT, headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 403


async def test_minted_token_for_another_generation_is_404_like_an_unknown_id() -> None:
    async with running(auth=True) as server:
        mine = await start(server, "alice")
        other = await start(server, "alice")
        minted = await server.client.post(
            "/v1/tokens", json={"generation": mine["id"]}, headers=bearer("alice")
        )
        assert minted.status_code == 201
        body = minted.json()
        assert body["expires_at"] > 0
        response = await server.client.get(f"{other['events_url']}?token={body['token']}")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
        # Bob cannot mint a token for Alice's generation either.
        refused = await server.client.post(
            "/v1/tokens", json={"generation": mine["id"]}, headers=bearer("bob")
        )
        assert refused.status_code == 404


async def test_token_requests_are_validated() -> None:
    async with running(auth=True) as server:
        bad: list[dict[str, Any]] = [
            {},
            {"generation": "x"},
            {"topics": []},
            {"topics": ["a"], "ttl": 10**9},
            {"topics": ["a"], "x": 1},
        ]
        for body in bad:
            response = await server.client.post("/v1/tokens", json=body, headers=bearer("alice"))
            assert response.status_code == 422, body
        topics = await server.client.post("/v1/tokens", json={"topics": ["news/*"]}, headers=bearer("reader"))
        assert topics.status_code == 201
        assert topics.json()["scopes"] == ["topic:news/*"]
        wider = await server.client.post("/v1/tokens", json={"topics": ["*"]}, headers=bearer("reader"))
        assert wider.status_code == 403
        private = await server.client.post(
            "/v1/tokens", json={"topics": ["user/bob/inbox"]}, headers=bearer("alice")
        )
        assert private.status_code == 403


async def test_expired_token_is_401_token_expired() -> None:
    async with running(auth=True) as server:
        created = await start(server, "alice")
        expired, _ = StreamTokens(SECRET, max_ttl=60).issue("alice", [f"generation:{created['id']}"], ttl=-1)
        response = await server.client.get(f"{created['events_url']}?token={expired}")
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "token_expired"
        forged, _ = StreamTokens("another-secret-another-secret-xx", max_ttl=60).issue(
            "alice", [f"generation:{created['id']}"]
        )
        response = await server.client.get(f"{created['events_url']}?token={forged}")
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_token"


async def test_token_expiring_mid_stream_ends_with_error_event_and_resume_loses_nothing() -> None:
    async with running(auth=True, demo_tokens_per_second=40.0, abandon_grace=30.0) as server:
        created = await start(server, "alice", LONG_PROMPT)
        minted = await server.client.post(
            "/v1/tokens", json={"generation": created["id"], "ttl": 0.5}, headers=bearer("alice")
        )
        first = await read_stream(
            server.client, "GET", f"{created['events_url']}?token={minted.json()['token']}"
        )
        assert first.types[-1:] == ["error"], (first.status, first.raw, first.comments)
        expired_event = first.events[-1]
        assert json.loads(expired_event.data)["code"] == "token_expired"
        # It carries no id: the client's last event id stays at the last real event.
        last_real = first.events[-2].id
        assert last_real
        assert expired_event.id == last_real
        assert "done" not in first.types
        # Resume with a fresh token from the last real id: the rest, exactly once.
        fresh = await server.client.post(
            "/v1/tokens", json={"generation": created["id"]}, headers=bearer("alice")
        )
        await server.client.post(created["cancel_url"], headers=bearer("alice"))
        rest = await read_stream(
            server.client,
            "GET",
            f"{created['events_url']}?token={fresh.json()['token']}",
            headers={"Last-Event-ID": last_real},
        )
        whole = await read_stream(server.client, "GET", created["events_url"], headers=bearer("alice"))
        assert [e.id for e in first.events[:-1] + rest.events] == [e.id for e in whole.events]


async def test_token_is_redacted_in_the_access_log(caplog: pytest.LogCaptureFixture) -> None:
    async with running(auth=True) as server:
        created = await start(server, "alice")
        token = created["stream_token"]
        with caplog.at_level(logging.INFO, logger="ssegate.access"):
            await read_stream(server.client, "GET", f"{created['events_url']}?token={token}&x=1")
            await server.client.get("/healthz")
        lines = [r.getMessage() for r in caplog.records if r.name == "ssegate.access"]
        assert lines
        assert all(token not in line for line in lines)
        stream_line = json.loads(next(line for line in lines if "/events" in line))
        assert stream_line["path"] == f"{created['events_url']}?token=REDACTED&x=1"
        assert stream_line["status"] == 200
        assert stream_line["principal"] == "alice"
        assert stream_line["bytes"] > 0
        assert stream_line["method"] == "GET"
        assert stream_line["duration_ms"] >= 0


async def test_local_mode_needs_no_key_and_has_no_stream_token() -> None:
    async with running() as server:
        created = await start(server)
        assert "stream_token" not in created
        async with server.client.stream("GET", created["events_url"]) as response:
            async for _ in iter_stream(response):
                break
            assert response.status_code == 200


async def test_bearer_stream_token_header_is_accepted_too() -> None:
    async with running(auth=True) as server:
        created = await start(server, "alice")
        response = await server.client.get(
            created["url"], headers={"Authorization": f"Bearer {created['stream_token']}"}
        )
        assert response.status_code == 200
        assert response.json()["id"] == created["id"]


async def test_generation_stream_token_watches_and_reads_state_but_cannot_cancel() -> None:
    # Slow enough that the generation is still running when the token tries to stop it.
    async with running(auth=True, demo_tokens_per_second=20.0) as server:
        created = await start(server, "alice", {**LONG_PROMPT, "keep_running": True})
        token = created["stream_token"]
        in_url = await server.client.post(created["cancel_url"], params={"token": token})
        in_header = await server.client.post(
            created["cancel_url"], headers={"Authorization": f"Bearer {token}"}
        )
        for refused in (in_url, in_header):
            assert refused.status_code == 403, refused.text
            assert refused.headers["content-type"].startswith("application/json")
            error = refused.json()["error"]
            assert error["code"] == "forbidden"
            assert "cancel" in error["message"]
            assert "API key" in error["message"]
        state = await server.client.get(created["url"], params={"token": token})
        assert state.status_code == 200
        assert state.json()["state"] in {"pending", "streaming"}
        # The owner's key cancels; the token still watches, to the end it sees.
        cancelled = await server.client.post(created["cancel_url"], headers=bearer("alice"))
        assert cancelled.status_code == 202
        received = await read_stream(server.client, "GET", f"{created['events_url']}?token={token}")
        assert received.status == 200
        assert received.types[-1] == "done"
        assert received.data("done")[0]["finish_reason"] == "cancelled"


async def test_generate_only_key_reads_and_resumes_its_own_generation_but_not_others() -> None:
    async with running(auth=True, abandon_grace=30.0) as server:
        created = await start(server, "writer", {**LONG_PROMPT, "keep_running": True})
        # The connection drops after a few events; the same key picks up where it left off.
        first = await read_stream(
            server.client, "GET", created["events_url"], headers=bearer("writer"), max_events=3
        )
        assert first.status == 200, first.raw
        assert first.types[0] == "start"
        state = await server.client.get(created["url"], headers=bearer("writer"))
        assert state.status_code == 200, state.text
        assert state.json()["id"] == created["id"]
        minted = await server.client.post(
            "/v1/tokens", json={"generation": created["id"]}, headers=bearer("writer")
        )
        assert minted.status_code == 201, minted.text
        assert minted.json()["scopes"] == [f"generation:{created['id']}"]
        assert (await server.client.post(created["cancel_url"], headers=bearer("writer"))).status_code == 202
        rest = await read_stream(
            server.client,
            "GET",
            created["events_url"],
            headers={**bearer("writer"), "Last-Event-ID": first.events[-1].id or ""},
        )
        assert rest.status == 200, rest.raw
        assert rest.types[-1] == "done"
        via_token = await read_stream(
            server.client, "GET", f"{created['events_url']}?token={minted.json()['token']}"
        )
        assert [e.id for e in first.events + rest.events] == [e.id for e in via_token.events]
        # Ownership is unchanged: another principal's generation is still 404, whatever the scope.
        alices = await start(server, "alice")
        for method, path, body in (
            ("GET", alices["url"], None),
            ("GET", alices["events_url"], None),
            ("POST", "/v1/tokens", {"generation": alices["id"]}),
        ):
            refused = await server.client.request(method, path, json=body, headers=bearer("writer"))
            assert refused.status_code == 404, (path, refused.text)
            assert refused.json()["error"]["code"] == "not_found"
        # Without generate or subscribe there is still no reading at all.
        ops = await server.client.get(created["url"], headers=bearer("ops"))
        assert ops.status_code == 403
