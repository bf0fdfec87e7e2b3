"""CORS: an explicit allow-list, credentials only for listed origins, preflights for streams."""

from __future__ import annotations

from tests.security.harness import PROMPT, bearer, running, start
from tests.support.sse import read_stream

ALLOWED = "https://app.example"
OTHER = "https://evil.example"


async def test_allowed_origin_gets_its_origin_with_credentials_and_exposed_headers() -> None:
    async with running(auth=True, cors_origins=f"{ALLOWED}, https://b.example") as server:
        response = await server.client.post(
            "/v1/generations", json=PROMPT, headers={"Origin": ALLOWED, **bearer("alice")}
        )
        assert response.status_code == 201
        assert response.headers["access-control-allow-origin"] == ALLOWED
        assert response.headers["access-control-allow-credentials"] == "true"
        exposed = response.headers["access-control-expose-headers"].lower()
        assert "x-generation-id" in exposed
        assert "location" in exposed
        assert "origin" in response.headers["vary"].lower()


async def test_preflight_for_a_stream_allows_last_event_id_and_authorization() -> None:
    async with running(auth=True, cors_origins=ALLOWED) as server:
        response = await server.client.options(
            "/v1/generations/x/events",
            headers={
                "Origin": ALLOWED,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "last-event-id, authorization",
            },
        )
        assert response.status_code == 204
        assert response.headers["access-control-allow-origin"] == ALLOWED
        allowed = response.headers["access-control-allow-headers"].lower()
        assert "last-event-id" in allowed
        assert "authorization" in allowed
        assert "GET" in response.headers["access-control-allow-methods"]


async def test_disallowed_origin_gets_no_cors_headers_and_its_preflight_is_403() -> None:
    async with running(cors_origins=ALLOWED) as server:
        created = await start(server, body=None)
        response = await server.client.get(created["url"], headers={"Origin": OTHER})
        assert not [h for h in response.headers if h.startswith("access-control-")]
        stream = await read_stream(server.client, "GET", created["events_url"], headers={"Origin": OTHER})
        assert not [h for h in stream.headers if h.startswith("access-control-")]
        preflight = await server.client.options(
            "/v1/generations", headers={"Origin": OTHER, "Access-Control-Request-Method": "POST"}
        )
        assert preflight.status_code == 403
        assert preflight.json()["error"]["code"] == "origin_not_allowed"
        assert "access-control-allow-origin" not in preflight.headers


async def test_no_origins_configured_means_no_cross_origin_access() -> None:
    async with running() as server:
        response = await server.client.get("/healthz", headers={"Origin": ALLOWED})
        assert "access-control-allow-origin" not in response.headers


async def test_wildcard_origin_never_comes_with_credentials() -> None:
    async with running(cors_origins="*") as server:
        response = await server.client.get("/healthz", headers={"Origin": OTHER})
        assert response.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in response.headers
