"""Tokens stay secret and short (issue 26, failure 6).

A stream token rides in URLs (``?token=``): nginx's access log never holds it, no page or stream
hands it on as a ``Referer``, a correctly signed token that lives longer than the server's maximum
is refused, and a token holder cannot tell another generation's id from an unknown one.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import jwt
import pytest

from ssegate.auth import TOKEN_AUDIENCE
from tests.deploy.nginx import nginx_in_front_of
from tests.security.harness import PROMPT, SECRET, bearer, running, start
from tests.support.sse import read_stream


def _token(*, issued: float, expires: float, scopes: list[str]) -> str:
    claims = {"sub": "alice", "aud": TOKEN_AUDIENCE, "iat": int(issued), "exp": int(expires), "scp": scopes}
    return jwt.encode(claims, SECRET, algorithm="HS256")


@pytest.mark.nginx
async def test_nginx_access_log_never_holds_a_stream_token(tmp_path: Path) -> None:
    async with (
        running(auth=True) as server,
        nginx_in_front_of([server.base_url], log_dir=tmp_path) as proxy,
        httpx.AsyncClient(base_url=proxy, timeout=10) as proxied,
    ):
        started = await proxied.post("/v1/generations", json=PROMPT, headers=bearer("alice"))
        created = started.json()
        token = created["stream_token"]
        received = await read_stream(proxied, "GET", f"{created['events_url']}?token={token}")
        state = await proxied.get(created["url"], params={"token": token})
    assert received.status == 200
    assert received.headers["referrer-policy"] == "no-referrer"
    assert state.status_code == 200
    log = (tmp_path / "ssegate.access.log").read_text()
    assert created["events_url"] in log  # the request is logged...
    assert token not in log  # ...without its token
    assert token.split(".")[2] not in log
    assert "token=" not in log


async def test_the_page_and_event_streams_send_no_referrer() -> None:
    async with running(auth=True) as server:
        page = await server.client.get("/")
        created = await start(server, "alice")
        url = f"{created['events_url']}?token={created['stream_token']}"
        stream = await read_stream(server.client, "GET", url)
    assert page.headers["referrer-policy"] == "no-referrer"
    assert stream.headers["referrer-policy"] == "no-referrer"


@pytest.mark.parametrize(
    ("issued", "lifetime"),
    [
        (0.0, 10 * 365 * 86400.0),  # ten years, correctly signed
        (0.0, 3600.0 + 60),  # just past the maximum
        (-10 * 365 * 86400.0, 10 * 365 * 86400.0 + 600),  # issued long ago, still valid for 10 minutes
        (10 * 365 * 86400.0, 600),  # "issued" in ten years
    ],
)
async def test_a_token_that_lives_longer_than_the_servers_maximum_is_refused(
    issued: float, lifetime: float
) -> None:
    async with running(auth=True, token_max_ttl=3600.0) as server:
        created = await start(server, "alice")
        now = time.time()
        scopes = [f"generation:{created['id']}"]
        token = _token(issued=now + issued, expires=now + issued + lifetime, scopes=scopes)
        response = await server.client.get(created["url"], params={"token": token})
        fine = _token(issued=now, expires=now + 3600, scopes=scopes)
        accepted = await server.client.get(created["url"], params={"token": fine})
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "invalid_token"
    assert accepted.status_code == 200, accepted.text


async def test_a_token_holder_cannot_tell_another_generations_id_from_an_unknown_one() -> None:
    async with running(auth=True) as server:
        mine = await start(server, "alice")
        other = await start(server, "bob")
        token = mine["stream_token"]
        unknown_id = other["id"][:-4] + ("aaaa" if not other["id"].endswith("aaaa") else "bbbb")
        answers = {}
        for name, generation_id in (("other", other["id"]), ("unknown", unknown_id)):
            base = f"/v1/generations/{generation_id}"
            answers[name] = [
                await server.client.get(base, params={"token": token}),
                await server.client.get(f"{base}/events", params={"token": token}),
            ]
    for other_answer, unknown_answer in zip(answers["other"], answers["unknown"], strict=True):
        assert other_answer.status_code == unknown_answer.status_code == 404
        assert other_answer.json()["error"]["code"] == unknown_answer.json()["error"]["code"] == "not_found"


_QUERY_VARIABLES = ("$request ", '$request"', "$request_uri", "$args", "$query_string", "$arg_token")


@pytest.mark.parametrize("config", sorted(Path(__file__).resolve().parents[2].glob("deploy/*.conf")), ids=str)
def test_every_shipped_nginx_config_logs_without_query_strings(config: Path) -> None:
    text = config.read_text()
    formats = dict(re.findall(r"log_format (\w+) ((?:'[^']*'\s*)+);", text))
    logs = re.findall(r"^\s*access_log (\S+)(?: (\w+))?;", text, re.MULTILINE)
    assert logs, f"{config.name} sets no access_log: nginx's default format logs ?token= in full"
    for path, name in logs:
        if path == "off":
            continue
        assert name in formats, f"{config.name}: access_log {path} uses the default format (with the query)"
        assert not any(v in formats[name] for v in _QUERY_VARIABLES), formats[name]
        assert "$uri" in formats[name]
