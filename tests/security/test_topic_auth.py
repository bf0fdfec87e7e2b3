"""Topics with API keys over real HTTP: publish and subscribe scopes, topic patterns, private
``user/<name>/...`` topics, and topic stream tokens in ``?token=`` (what an EventSource URL carries)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from ssegate.auth import pattern_covers
from ssegate.codec.parser import EventStreamParser
from tests.security.harness import running
from tests.topics.helpers import TopicStream, datas

# name -> (key, scopes): one key per shape of grant these tests are about.
TOPIC_KEYS = {
    "alice": ("alice-key-0123456789", "subscribe"),
    "bob": ("bob-key-0123456789", "subscribe"),
    "backend": ("backend-key-0123456789", "publish"),
    "newsdesk": ("newsdesk-key-0123456789", "publish:news/*"),
    "reader": ("reader-key-0123456789", "subscribe:news/*"),
    "letters": ("letters-key-0123456789", "subscribe:news/?"),
    "root": ("root-key-0123456789", "admin"),
}
API_KEYS = ";".join(f"{name}:{secret}:{scopes}" for name, (secret, scopes) in TOPIC_KEYS.items())


def key(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOPIC_KEYS[name][0]}"}


def topic_server() -> contextlib.AbstractAsyncContextManager[Any]:
    return running(auth=True, api_keys=API_KEYS)


@contextlib.asynccontextmanager
async def subscribe_as(
    client: httpx.AsyncClient, path: str, who: str | None = None, **params: Any
) -> AsyncIterator[TopicStream]:
    """An open subscription with ``who``'s key, or with only the query string (``token=``)."""
    async with client.stream("GET", path, headers=key(who) if who else None, params=params) as response:
        assert response.status_code == 200, (await response.aread()).decode()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield TopicStream(response, EventStreamParser(), response.aiter_raw(), [])


async def publish_as(client: httpx.AsyncClient, who: str, topic: str, data: Any) -> httpx.Response:
    return await client.post(f"/v1/topics/{topic}/events", json={"data": data}, headers=key(who))


async def mint(client: httpx.AsyncClient, who: str, topics: list[str]) -> httpx.Response:
    return await client.post("/v1/tokens", json={"topics": topics}, headers=key(who))


async def minted(client: httpx.AsyncClient, who: str, topics: list[str]) -> str:
    response = await mint(client, who, topics)
    assert response.status_code == 201, response.text
    assert response.json()["scopes"] == [f"topic:{t}" for t in topics]
    return str(response.json()["token"])


async def assert_token_receives(client: httpx.AsyncClient, token: str, topic: str, data: str) -> None:
    """A subscriber holding only ``token`` (in the URL, as an EventSource would) gets what the
    backend publishes to ``topic``."""
    async with subscribe_as(client, f"/v1/topics/{topic}/events", token=token) as stream:
        assert (await publish_as(client, "backend", topic, data)).status_code == 201
        assert datas(await stream.events(1)) == [data]


def assert_forbidden(response: httpx.Response, *words: str) -> None:
    assert response.status_code == 403, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == "forbidden"
    for word in words:
        assert word in error["message"]


async def test_topic_publish_without_publish_scope_is_403_json_and_appends_nothing() -> None:
    async with topic_server() as server:
        client = server.client
        assert_forbidden(await publish_as(client, "alice", "news/today", "from alice"), "publish")
        anonymous = await client.post("/v1/topics/news/today/events", json={"data": "from anyone"})
        assert anonymous.status_code == 401
        assert anonymous.json()["error"]["code"] == "unauthorized"
        assert (await publish_as(client, "backend", "news/today", "from backend")).status_code == 201
        async with subscribe_as(client, "/v1/topics/news/today/events", "alice", history="all") as stream:
            # The refused events never landed: the first one in the topic is the allowed one.
            assert datas(await stream.events(1)) == ["from backend"]


async def test_topic_publish_pattern_scope_allows_only_matching_topics() -> None:
    async with topic_server() as server:
        client = server.client
        assert (await publish_as(client, "newsdesk", "news/today", "headline")).status_code == 201
        for topic in ("sport/today", "news", "newsroom/today", "user/newsdesk/news/x"):
            assert_forbidden(await publish_as(client, "newsdesk", topic, "leak"), "publish", topic)
        async with subscribe_as(
            client, "/v1/topics/events", "root", topic=["news/today", "sport/today"], history="all"
        ) as stream:
            await publish_as(client, "backend", "sport/today", "score")
            assert datas(await stream.events(2)) == ["headline", "score"]


async def test_topic_subscribe_without_subscribe_scope_is_403() -> None:
    async with topic_server() as server:
        client = server.client
        for path, params in (
            ("/v1/topics/news/today/events", {}),
            ("/v1/topics/events", {"topic": ["news/today"]}),
        ):
            response = await client.get(path, params=params, headers=key("backend"))
            assert_forbidden(response, "subscribe")
        # A patterned subscribe scope opens its topics only, and one foreign topic refuses the lot.
        assert_forbidden(
            await client.get("/v1/topics/sport/today/events", headers=key("reader")), "sport/today"
        )
        both = await client.get(
            "/v1/topics/events", params={"topic": ["news/today", "sport/today"]}, headers=key("reader")
        )
        assert_forbidden(both, "sport/today")
        async with subscribe_as(client, "/v1/topics/news/today/events", "reader") as stream:
            await publish_as(client, "newsdesk", "news/today", "for readers")
            assert datas(await stream.events(1)) == ["for readers"]


async def test_topic_private_user_topic_of_another_principal_is_403() -> None:
    async with topic_server() as server:
        client = server.client
        # A backend with the publish scope writes to users' private topics.
        assert (await publish_as(client, "backend", "user/alice/inbox", "for alice")).status_code == 201
        assert_forbidden(
            await client.get("/v1/topics/user/alice/inbox/events", headers=key("bob")), "private"
        )
        mixed = await client.get(
            "/v1/topics/events", params={"topic": ["news/today", "user/alice/inbox"]}, headers=key("bob")
        )
        assert_forbidden(mixed, "private")
        for who in ("alice", "root"):
            async with subscribe_as(
                client, "/v1/topics/user/alice/inbox/events", who, history="all"
            ) as stream:
                assert datas(await stream.events(1)) == ["for alice"]


async def test_topic_stream_token_in_the_url_opens_only_its_topics() -> None:
    async with topic_server() as server:
        client = server.client
        token = await minted(client, "alice", ["news/*"])
        # No Authorization header: only what an EventSource URL can carry.
        await assert_token_receives(client, token, "news/today", "via token")
        assert_forbidden(await client.get("/v1/topics/sport/today/events", params={"token": token}), "token")
        several = await client.get(
            "/v1/topics/events", params={"topic": ["news/today", "sport/today"], "token": token}
        )
        assert_forbidden(several, "sport/today")
        # The token only watches: it cannot publish, even to its own topics.
        publish = await client.post("/v1/topics/news/today/events", params={"token": token}, json={"data": 1})
        assert_forbidden(publish, "publish")
        forged = await client.get("/v1/topics/news/today/events", params={"token": token[:-4] + "AAAA"})
        assert forged.status_code == 401
        assert forged.json()["error"]["code"] == "invalid_token"


async def test_topic_stream_token_for_a_private_topic_opens_that_topic_only() -> None:
    async with topic_server() as server:
        client = server.client
        token = await minted(client, "alice", ["user/alice/inbox"])
        await assert_token_receives(client, token, "user/alice/inbox", "private note")
        for topic in ("user/alice/other", "user/bob/inbox"):
            assert_forbidden(await client.get(f"/v1/topics/{topic}/events", params={"token": token}))


async def test_topic_stream_token_cannot_reach_beyond_the_minting_keys_grant() -> None:
    async with topic_server() as server:
        client = server.client
        # "letters" may read news/<one character> only.
        assert_forbidden(await client.get("/v1/topics/news/long-name/events", headers=key("letters")))
        # "news/?" matches the text "news/*", but a token for news/* would open news/long-name.
        assert_forbidden(await mint(client, "letters", ["news/*"]), "news/*")
        assert_forbidden(await mint(client, "letters", ["news/[a-z]*"]))
        same = await minted(client, "letters", ["news/?"])
        await assert_token_receives(client, same, "news/b", "one letter")
        assert_forbidden(await client.get("/v1/topics/news/long-name/events", params={"token": same}))
        # Narrower patterns under a "prefix*" grant are fine.
        narrower = await minted(client, "reader", ["news/sport/*", "news/today"])
        await assert_token_receives(client, narrower, "news/sport/final", "2-1")


@pytest.mark.parametrize(
    ("granted", "wanted", "covered"),
    [
        ("news/*", "news/today", True),
        ("news/*", "news/*", True),
        ("news/*", "news/sport/*", True),
        ("news/*", "sport/*", False),
        ("news/*", "*", False),
        ("news/?", "news/a", True),
        ("news/?", "news/?", True),
        ("news/?", "news/*", False),
        ("news/?", "news/ab", False),
        ("news/[!x]", "news/*", False),
        ("*/public", "*/public", True),
        ("*/public", "*", False),
    ],
)
def test_pattern_covers_only_what_the_grant_matches(granted: str, wanted: str, covered: bool) -> None:
    assert pattern_covers(granted, wanted) is covered


async def test_admin_can_hand_a_user_a_token_for_that_users_exact_private_topic() -> None:
    async with topic_server() as server:
        client = server.client
        # The backend holds an admin key and mints for bob's browser (the token carries "root").
        token = await minted(client, "root", ["user/bob/inbox"])
        await assert_token_receives(client, token, "user/bob/inbox", "for bob")
        async with subscribe_as(
            client, "/v1/topics/events", topic=["user/bob/inbox"], token=token, history="all"
        ) as stream:
            assert datas(await stream.events(1)) == ["for bob"]
        # Exactly that topic: not bob's other topics, not alice's.
        for topic in ("user/bob/inbox/more", "user/bob/other", "user/alice/inbox"):
            assert_forbidden(await client.get(f"/v1/topics/{topic}/events", params={"token": token}))


async def test_private_topic_patterns_in_tokens_still_open_only_the_minters_own_topics() -> None:
    async with topic_server() as server:
        client = server.client
        # An admin may mint a pattern, but a pattern is not proof of privacy: the token is "root".
        for pattern in ("user/bob/*", "user/*", "*"):
            token = await minted(client, "root", [pattern])
            response = await client.get("/v1/topics/user/bob/inbox/events", params={"token": token})
            assert_forbidden(response, "private")
        # Alice may mint her own patterns, and they open her private topics only.
        token = await minted(client, "alice", ["*"])
        assert_forbidden(
            await client.get("/v1/topics/user/bob/inbox/events", params={"token": token}), "private"
        )
        await assert_token_receives(client, token, "user/alice/inbox", "hers")


async def test_only_the_owner_or_an_admin_can_mint_a_token_naming_a_private_topic() -> None:
    async with topic_server() as server:
        client = server.client
        # A plain subscribe key, a publish key and a patterned key: none may mint for bob's inbox.
        for who in ("alice", "backend", "reader"):
            assert_forbidden(await mint(client, who, ["user/bob/inbox"]), "user/bob/inbox")
            assert_forbidden(await mint(client, who, ["news/today", "user/bob/inbox"]))
        # A wildcard spelling of bob's inbox mints (it is only a pattern) but opens nothing of his.
        token = await minted(client, "alice", ["[u]ser/bob/inbox"])
        assert_forbidden(
            await client.get("/v1/topics/user/bob/inbox/events", params={"token": token}), "private"
        )
        # Bob mints for his own inbox with his own key.
        own = await minted(client, "bob", ["user/bob/inbox"])
        await assert_token_receives(client, own, "user/bob/inbox", "his")
