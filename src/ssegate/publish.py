"""Publish to ssegate topics from application code.

Three ways, one signature (``publish(topic, data, *, event=None, id=None) -> event id``):

* :class:`LocalPublisher` — in the same process as the server, straight into its event log
  (``LocalPublisher(topics)`` with the app's :class:`~ssegate.topics.Topics`);
* :class:`HTTPPublisher` — from any asyncio program, over HTTP (``POST /v1/topics/{topic}/events``);
* :class:`SyncHTTPPublisher` — the same for plain synchronous code (scripts, workers, Celery tasks).

``data`` is any JSON value; ``event`` the event type (default ``message``); ``id`` an idempotency key:
publishing the same key to a topic twice appends once and returns the first event's id, so a
retried publish is safe. A refused publish raises :class:`~ssegate.errors.HTTPStatusError` (over
HTTP) or :class:`~ssegate.topics.TopicInputError` (in process).
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from ssegate.errors import ClientError, HTTPStatusError
from ssegate.topics import Topics

__all__ = ["HTTPPublisher", "LocalPublisher", "Publisher", "SyncHTTPPublisher"]


class Publisher(Protocol):
    async def publish(self, topic: str, data: Any, *, event: str | None = None, id: str | None = None) -> str:
        """Append one event to ``topic``; returns its id."""


def _body(data: Any, event: str | None, key: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"data": data}
    if event is not None:
        body["event"] = event
    if key is not None:
        body["id"] = key
    return body


def _path(topic: str) -> str:
    # Keep the "/" between segments (user/alice/jobs); escape anything else a URL would misread.
    return f"/v1/topics/{quote(topic, safe='/')}/events"


def _event_id(response: httpx.Response) -> str:
    if not response.is_success:
        raise HTTPStatusError(response.status_code, response.text, str(response.url))
    return str(response.json()["id"])


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class LocalPublisher:
    """Publishes in process, through the server's own :class:`~ssegate.topics.Topics`."""

    def __init__(self, topics: Topics) -> None:
        self._topics = topics

    async def publish(self, topic: str, data: Any, *, event: str | None = None, id: str | None = None) -> str:
        return (await self._topics.publish(topic, data, event=event, key=id)).id


class HTTPPublisher:
    """Publishes over HTTP to the ssegate server at ``base_url`` (``async with`` closes it)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        client: httpx.AsyncClient | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._client = client or httpx.AsyncClient(timeout=timeout)
        self._owns_client = client is None
        self._base_url = base_url.rstrip("/")
        self._headers = _headers(api_key)

    async def publish(self, topic: str, data: Any, *, event: str | None = None, id: str | None = None) -> str:
        url = self._base_url + _path(topic)
        try:
            response = await self._client.post(url, json=_body(data, event, id), headers=self._headers)
        except httpx.HTTPError as exc:
            raise ClientError(f"could not publish to {url}: {exc}") from exc
        return _event_id(response)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> HTTPPublisher:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class SyncHTTPPublisher:
    """:class:`HTTPPublisher` for synchronous code (``with`` closes it)."""

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 10.0) -> None:
        self._client = httpx.Client(timeout=timeout)
        self._base_url = base_url.rstrip("/")
        self._headers = _headers(api_key)

    def publish(self, topic: str, data: Any, *, event: str | None = None, id: str | None = None) -> str:
        url = self._base_url + _path(topic)
        try:
            response = self._client.post(url, json=_body(data, event, id), headers=self._headers)
        except httpx.HTTPError as exc:
            raise ClientError(f"could not publish to {url}: {exc}") from exc
        return _event_id(response)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> SyncHTTPPublisher:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
