"""The event-stream routes' short path (ssegate.server.dispatch) answers like every other route:
CORS headers, JSON errors from the app's handlers, the access log."""

from __future__ import annotations

import pytest

from tests.security.harness import bearer, running, start
from tests.support.sse import read_stream

ORIGIN = "https://app.example"


async def test_a_stream_from_an_allowed_origin_carries_cors_headers() -> None:
    async with running(auth=True, cors_origins=ORIGIN) as server:
        created = await start(server, "alice")
        received = await read_stream(
            server.client, "GET", created["events_url"], headers={"Origin": ORIGIN, **bearer("alice")}
        )
        assert received.status == 200
        assert received.headers["access-control-allow-origin"] == ORIGIN
        assert "x-generation-id" in received.headers["access-control-expose-headers"].lower()
        assert received.types[-1] == "done"


@pytest.mark.parametrize(
    ("path", "who", "status", "code"),
    [
        ("/v1/generations/zzz/events", "alice", 404, "not_found"),
        ("/v1/generations/000000000000000000000000000000/events", "alice", 410, "expired"),
        ("/v1/topics/news/events", None, 401, "unauthorized"),
        ("/v1/topics/events", "alice", 400, "invalid_request"),
        ("/v1/topics/a//b/events", "alice", 400, "invalid_request"),
    ],
)
async def test_stream_route_errors_are_json_a_browser_page_can_read(
    path: str, who: str | None, status: int, code: str
) -> None:
    async with running(auth=True, cors_origins=ORIGIN) as server:
        headers = {"Origin": ORIGIN, **(bearer(who) if who else {})}
        response = await server.client.get(path, headers=headers)
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("application/json")
        assert response.json()["error"]["code"] == code
        assert response.headers["access-control-allow-origin"] == ORIGIN


async def test_other_methods_on_a_stream_route_still_take_the_full_path() -> None:
    async with running(auth=True) as server:
        response = await server.client.put("/v1/topics/news/events", headers=bearer("alice"))
        assert response.status_code == 405
        assert response.json()["error"]["code"] == "method_not_allowed"
