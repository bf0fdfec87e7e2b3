"""Local mode is local (issue 26, failure 2), and deep JSON is a 400 (failure 5).

With no API keys a web page the user has open must not be able to use the server: a cross-site
"simple" POST (text/plain or a form) gets 415, a DNS-rebinding page's ``Host`` gets 421, and a
cross-site ``Origin`` on a state-changing request gets 403; each a JSON error, before any route runs.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from ssegate import errors
from ssegate.codec.events import Event
from ssegate.server.guard import default_allowed_hosts, parse_hosts, same_origin
from tests.operations.test_serve_ready import serving
from tests.security.harness import PROMPT, bearer, running
from tests.support.metrics import total
from tests.support.sse import iter_stream

# What ssegate serve answers to in local mode on a loopback address (tested through it below).
LOOPBACK = default_allowed_hosts(local=True, bound_to="127.0.0.1")
GENERATIONS = "/v1/generations"
PUBLISH = "/v1/topics/news/events"


async def _first_published(server: Any) -> Any:
    """The data of the first event in the ``news`` topic (published after the subscription if none was)."""
    async with server.client.stream("GET", "/v1/topics/news/events", params={"history": "all"}) as stream:
        async for item in iter_stream(stream):
            if isinstance(item, Event):
                return json.loads(item.data)
    return None


@pytest.mark.parametrize(
    ("path", "body", "content_type"),
    [
        (GENERATIONS, b'{"messages": [{"role": "user", "content": "hi"}]}', "text/plain"),
        (GENERATIONS, b"messages=hi", "application/x-www-form-urlencoded"),
        (PUBLISH, b'{"data": 1}', "text/plain;charset=UTF-8"),
        (PUBLISH, b'{"data": 1}', "multipart/form-data; boundary=x"),
        (PUBLISH, b'{"data": 1}', None),
    ],
)
async def test_a_state_changing_request_that_is_not_json_is_refused_with_415(
    path: str, body: bytes, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    async with running() as server:
        response = await server.client.post(path, content=body, headers=headers)
        scrape = await server.client.get("/metrics")
    assert scrape.status_code == 200
    assert "# TYPE ssegate_generations_started_total counter" in scrape.text  # a real scrape
    started = total(scrape.text, "ssegate_generations_started_total")
    assert response.status_code == 415, response.text
    assert response.json()["error"]["code"] == "unsupported_media_type"
    assert "application/json" in response.json()["error"]["message"]
    assert started == 0  # no upstream call was paid for


async def test_a_text_plain_publish_publishes_nothing() -> None:
    async with running() as server:
        refused = await server.client.post(
            PUBLISH, content=b'{"data": 1}', headers={"content-type": "text/plain"}
        )
        accepted = await server.client.post(PUBLISH, json={"data": 2})
        assert refused.status_code == 415
        assert accepted.status_code == 201
        assert await _first_published(server) == 2


async def test_with_api_keys_a_body_without_content_type_is_read_as_json_but_text_plain_is_not() -> None:
    body = b'{"messages": [{"role": "user", "content": "hi"}]}'
    async with running(auth=True) as server:
        bare = await server.client.post(GENERATIONS, content=body, headers=bearer("alice"))
        plain = await server.client.post(
            GENERATIONS, content=body, headers={"content-type": "text/plain", **bearer("alice")}
        )
    assert bare.status_code == 201, bare.text
    assert plain.status_code == 415


async def test_json_bodies_and_bodyless_posts_still_work() -> None:
    async with running() as server:
        started = await server.client.post(
            GENERATIONS, content=b'{"messages":[{"role":"user","content":"hi"}]}',
            headers={"content-type": "application/json; charset=utf-8"},
        )  # fmt: skip
        cancelled = await server.client.post(started.json()["cancel_url"])  # no body, no Content-Type
    assert started.status_code == 201
    assert cancelled.status_code == 202


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example", "0.0.0.0"])
async def test_a_foreign_host_header_is_refused_in_local_mode(host: str) -> None:
    async with running(allowed_hosts=LOOPBACK) as server:
        read = await server.client.get("/v1/providers", headers={"host": host})
        write = await server.client.post(GENERATIONS, json=PROMPT, headers={"host": host})
    for response in (read, write):
        assert response.status_code == 421, response.text
        assert response.json()["error"]["code"] == "host_not_allowed"
        assert "SSEGATE_ALLOWED_HOSTS" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "host", ["localhost", "localhost:3000", "127.0.0.1", "127.0.0.1:8000", "[::1]:8000", "LOCALHOST"]
)
async def test_loopback_host_names_with_any_port_are_answered_in_local_mode(host: str) -> None:
    async with running(allowed_hosts=LOOPBACK) as server:
        response = await server.client.post(GENERATIONS, json=PROMPT, headers={"host": host})
    assert response.status_code == 201, response.text


async def test_configured_host_names_replace_the_loopback_ones() -> None:
    async with running(allowed_hosts="chat.example, *.internal.example") as server:
        ok = [
            await server.client.get("/v1/providers", headers={"host": host})
            for host in ("chat.example", "chat.example:443", "a.internal.example")
        ]
        refused = await server.client.get("/v1/providers", headers={"host": "127.0.0.1"})
    assert [r.status_code for r in ok] == [200, 200, 200]
    assert refused.status_code == 421


async def test_any_host_with_a_star() -> None:
    async with running(allowed_hosts="*") as server:
        assert (await server.client.get("/v1/providers", headers={"host": "x.example"})).status_code == 200


def test_the_default_is_loopback_names_only_in_local_mode_on_a_loopback_address() -> None:
    assert LOOPBACK is not None
    assert parse_hosts(LOOPBACK) == {"localhost", "127.0.0.1", "[::1]"}
    assert default_allowed_hosts(local=True, bound_to="::1") == LOOPBACK
    assert default_allowed_hosts(local=False, bound_to="127.0.0.1") is None  # API keys: any name
    assert default_allowed_hosts(local=True, bound_to="0.0.0.0") is None  # --allow-public-without-auth


async def _get(port: int, host: str) -> int:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"http://127.0.0.1:{port}/v1/providers", headers={"host": host})
    return response.status_code


async def test_ssegate_serve_in_local_mode_answers_only_to_loopback_names() -> None:
    async with serving({}) as server:
        assert await _get(server.port, "evil.example") == 421
        assert await _get(server.port, f"localhost:{server.port}") == 200
    async with serving({}, args=("--allowed-hosts", "chat.example")) as server:
        assert await _get(server.port, "chat.example") == 200
        assert await _get(server.port, "127.0.0.1") == 421
    async with serving({"SSEGATE_API_KEYS": "web:k:generate"}) as server:
        assert await _get(server.port, "api.example") == 200


async def test_a_cross_site_origin_may_not_change_anything_in_local_mode() -> None:
    async with running() as server:
        start = await server.client.post(GENERATIONS, json=PROMPT, headers={"origin": "http://evil.example"})
        publish = await server.client.post(PUBLISH, json={"data": 1}, headers={"origin": "null"})
        read = await server.client.get("/v1/providers", headers={"origin": "http://evil.example"})
        await server.client.post(PUBLISH, json={"data": "same-site"})
        first = await _first_published(server)
    for response in (start, publish):
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "origin_not_allowed"
    assert read.status_code == 200  # reading is not changing (and CORS keeps the answer from the page)
    assert first == "same-site"


async def test_the_same_origin_and_configured_cors_origins_may() -> None:
    async with running(cors_origins="http://app.example") as server:
        same = await server.client.post(GENERATIONS, json=PROMPT, headers={"origin": server.base_url})
        allowed = await server.client.post(GENERATIONS, json=PROMPT, headers={"origin": "http://app.example"})
    assert same.status_code == 201, same.text
    assert allowed.status_code == 201, allowed.text
    assert allowed.headers["access-control-allow-origin"] == "http://app.example"


async def test_with_api_keys_a_keyed_request_from_another_origin_is_not_refused() -> None:
    async with running(auth=True) as server:
        response = await server.client.post(
            GENERATIONS, json=PROMPT, headers={"origin": "http://evil.example", **bearer("alice")}
        )
    assert response.status_code == 201, response.text


def _nested(depth: int) -> bytes:
    return b'{"data": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize("path", [GENERATIONS, PUBLISH])
@pytest.mark.parametrize("depth", [65, 1200, 100_000])
async def test_deeply_nested_json_is_a_400_not_a_recursion_error(path: str, depth: int) -> None:
    async with running() as server:
        response = await server.client.post(
            path, content=_nested(depth), headers={"content-type": "application/json"}
        )
        still_serving = await server.client.get("/healthz")
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "json_too_deep"
    assert "64" in response.json()["error"]["message"]
    assert still_serving.status_code == 200


async def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    async with running() as server:
        text = '[{"\\"' * 200
        response = await server.client.post(PUBLISH, json={"data": {"text": text, "deep": [[[[1]]]]}})
    assert response.status_code == 201, response.text


def test_no_error_code_is_a_class_name() -> None:
    classes: list[type[errors.SSEGateError]] = [errors.SSEGateError]
    for cls in classes:
        classes.extend(cls.__subclasses__())
    for cls in classes:
        assert cls.code.islower(), cls
        assert cls.code.replace("_", "").isalpha(), cls
        assert cls.code != cls.__name__


@pytest.mark.parametrize(
    ("origin", "host", "same"),
    [
        ("http://127.0.0.1:8000", "127.0.0.1:8000", True),
        ("https://127.0.0.1:38881", "127.0.0.1", True),  # behind a proxy: Host: $host has no port
        ("http://[::1]:8000", "[::1]:8000", True),
        ("https://a.example", "a.example:443", True),
        ("http://evil.example", "127.0.0.1:8000", False),
        ("http://127.0.0.1:3000", "127.0.0.1:8000", False),  # another port is another origin
        ("http://a.example", "a.example:443", False),
        ("http://x:bad", "x", False),
    ],
)
def test_same_origin_compares_names_and_ports_when_host_has_one(origin: str, host: str, same: bool) -> None:
    assert same_origin(origin, host) is same
