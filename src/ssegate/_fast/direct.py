"""Shortcut ``direct_attempt``: a call's first attempt sent on the SDK's aiohttp session as the SDK made it.

Relies on: the Stainless SDKs' private request machinery (``_models.FinalRequestOptions``,
``_prepare_options``, ``_build_request``, ``_prepare_request``, ``_should_retry``,
``_make_status_error_from_response``, ``_calculate_retry_timeout``, and the attributes that say
whether a client is stock: ``_client._transport``, ``_idempotency_header``, ...), the transport
object of their vendored httpx-aiohttp (``client``, ``get_client``), and aiohttp's connection pool
(``_conns``, ``_available_connections``) for the spare connections.

Starting a streamed call through the SDK costs about 2 ms of CPU on the bench machine before the
request leaves (options models, httpx header and URL objects, httpx's send layers), and about as
much again for the answer's head: most of what a start costs (bench W5). Every call to one
endpoint is the same request but for its JSON body. So the SDK builds that request once, with its
own ``_build_request`` (URL, auth, version and platform headers), and each call sends those
headers with its own body on the SDK's own aiohttp session, sharing its connection pool.

Only a 2xx answer stays here. Everything else goes back to the SDK, so that its behaviour and its
errors are what they were:

- an error status becomes the SDK's own exception (``_make_status_error_from_response``);
- a failure the SDK would retry (its ``_should_retry``: 408, 409, 429, 5xx, ``x-should-retry``;
  a timeout or a broken connection) waits the SDK's own back-off, then the SDK makes the call
  with one retry less;
- a redirect is left to the SDK whole.

The direct path is taken only where it sends what the SDK would: the SDK's aiohttp transport
with no proxy, no custom auth, no middleware, no spans, no idempotency header (checked once, in
:func:`direct_attempt`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

import aiohttp
import httpx2
import orjson
from yarl import URL

from ssegate import _fast
from ssegate._fast.lane import use_lane
from ssegate.providers._errors import first_byte_error

# Headers aiohttp writes from the body it sends (the SDK's template was built for another body).
_BODY_HEADERS = frozenset({"content-length", "transfer-encoding"})


class Opened:
    """A 2xx answer sent directly: what the adapters read (``http_response``, aiohttp's response)
    and how the call ends (``__aexit__``, as the SDK's response context ends it)."""

    __slots__ = ("http_response",)

    def __init__(self, http_response: aiohttp.ClientResponse) -> None:
        self.http_response = http_response

    async def __aexit__(self, *exc: object) -> None:
        # The SDK's aiohttp stream closes this way: the connection goes back to the pool if the
        # body was read to its end, else it is closed (no more tokens are sent or paid for).
        await self.http_response.__aexit__(None, None, None)


class Retry:
    """The direct attempt failed in a way the SDK retries; its back-off has been waited."""

    __slots__ = ()


class Redirect:
    """The direct attempt met a redirect: the SDK makes the whole call (it follows redirects)."""

    __slots__ = ()


RETRY = Retry()
REDIRECT = Redirect()


class DirectAttempt:
    """Sends a call's first attempt to one SDK endpoint (see the module's docstring)."""

    def __init__(
        self,
        client: Any,
        path: str,
        sdk: Any,
        options: Mapping[str, Any],
        spares: int,
        first_byte: float | None = None,
    ) -> None:
        self._client = client
        self._first_byte = first_byte  # seconds the attempt waits for its head (None: the SDK timeout)
        self._path = path
        self._sdk = sdk  # the SDK's package: its exception classes and request options
        self._options = options  # what the SDK's method adds to the request's options (auth scheme)
        self._spares = spares
        self._opening_spare: asyncio.Task[None] | None = None
        self._template: httpx2.Request | None = None
        self._headers: list[tuple[str, str]] = []
        self._url = URL()
        self._timeout: aiohttp.ClientTimeout | None = None
        self._session: aiohttp.ClientSession | None = None
        self._request_options: Any = None  # the SDK's options for this endpoint's requests
        # aiohttp's pool and its key for this endpoint's connections; no pool: no spares.
        self._pool: aiohttp.BaseConnector | None = None
        self._pool_key: Any = None

    async def _prepare(self) -> httpx2.Request:
        """The SDK's own request for this endpoint, built once (as its ``post`` builds one)."""
        client = self._client
        sdk_models = self._sdk._models
        options = sdk_models.FinalRequestOptions.construct(
            method="post",
            url=self._path,
            json_data={},
            headers={self._sdk._constants.RAW_RESPONSE_HEADER: "stream"},
            **self._options,
        )
        options = self._request_options = await client._prepare_options(options)
        request: httpx2.Request = client._build_request(options, retries_taken=0)
        await client._prepare_request(request)
        # As the SDK's transport hands them to aiohttp: httpx's items(), names in lower case.
        headers = request.headers.items()
        self._headers = [(name, value) for name, value in headers if name not in _BODY_HEADERS]
        self._url = URL(str(request.url))
        timeout = request.extensions.get("timeout", {})
        # As the SDK's aiohttp transport maps httpx's timeouts.
        self._timeout = aiohttp.ClientTimeout(
            sock_connect=timeout.get("connect"), sock_read=timeout.get("read"), connect=timeout.get("pool")
        )
        transport = client._client._transport
        if not isinstance(transport.client, aiohttp.ClientSession):
            transport.client = transport.get_client()  # what the transport does on its first request
        self._session = transport.client
        connector = self._session.connector
        # Its connections frame a streamed body themselves, for the push path (see lane).
        if _fast.enabled(_fast.UPSTREAM_LANE):
            use_lane(connector)
        # aiohttp's pool of idle connections by key, and its count of free slots (internals: a
        # version without them opens no spares).
        if (
            connector is not None
            and hasattr(connector, "_conns")
            and hasattr(connector, "_available_connections")
        ):
            self._pool = connector
            self._pool_key = self._request_for_pool().connection_key
        self._template = request
        return request

    async def send(self, body: dict[str, Any]) -> Opened | Retry | Redirect:
        """Send ``body``; the 2xx answer, or what the SDK should do next. Raises the SDK's own
        exception where the SDK would give up at once."""
        template = self._template or await self._prepare()
        assert self._session is not None
        client = self._client
        sdk = self._sdk
        self._keep_spares()
        try:
            # The first-byte timeout, as the adapters' other attempts have it (see _direct):
            # aiohttp's own read timeout would also time the body, which has its idle timer.
            async with asyncio.timeout(self._first_byte) as first_byte:
                response = await self._session.request(
                    "POST",
                    self._url,
                    headers=self._headers,
                    data=orjson.dumps(body),
                    allow_redirects=False,
                    # The SDK's transport leaves decoding to httpx; here nothing else would decode.
                    auto_decompress=True,
                    compress=False,
                    timeout=self._timeout,
                )
        except TimeoutError as exc:  # aiohttp's connect and read timeouts are TimeoutErrors
            if first_byte.expired() and client.max_retries <= 0:
                assert self._first_byte is not None
                raise first_byte_error(self._first_byte, 1) from None
            return await self._retry_or_raise(sdk.APITimeoutError(request=template), exc, None)
        except (aiohttp.ClientError, OSError) as exc:
            return await self._retry_or_raise(sdk.APIConnectionError(request=template), exc, None)
        if 200 <= response.status < 300:
            return Opened(response)
        try:
            content = await response.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            response.close()
            return await self._retry_or_raise(sdk.APIConnectionError(request=template), exc, None)
        response.release()
        if response.status < 400:
            return REDIRECT
        answer = httpx2.Response(
            response.status, headers=response.raw_headers, content=content, request=template
        )
        error = client._make_status_error_from_response(answer)
        if client._should_retry(answer):
            return await self._retry_or_raise(error, None, answer)
        raise error

    def _keep_spares(self) -> None:
        """Open a connection for a later call, off this one's path, while fewer than ``spares``
        wait idle in the pool. Concurrent calls each need their own connection (HTTP/1.1), and a
        new one costs a start about 1.5 ms here (bench W5), a TLS handshake on a real network."""
        pool = self._pool
        if self._spares <= 0 or self._opening_spare is not None or pool is None:
            return
        key = self._pool_key
        if len(pool._conns.get(key, ())) >= self._spares or pool._available_connections(key) <= 1:
            return  # enough are ready, or the last slots under the pool's limit stay for calls
        self._opening_spare = asyncio.create_task(self._open_spare(pool))

    def _request_for_pool(self) -> aiohttp.ClientRequest:
        """A request to this endpoint as ``session.request`` builds it: what the pool keys
        connections by (host, port, TLS, proxy)."""
        assert self._session is not None
        loop = asyncio.get_running_loop()
        return aiohttp.ClientRequest("POST", self._url, loop=loop, session=self._session)

    async def _open_spare(self, connector: aiohttp.BaseConnector) -> None:
        try:
            assert self._timeout is not None
            connection = await connector.connect(self._request_for_pool(), [], self._timeout)
            connection.release()  # into the pool, idle, for the next call to take
        except (aiohttp.ClientError, OSError, TimeoutError):
            pass  # the next call connects for itself, and says what fails
        finally:
            self._opening_spare = None

    async def aclose(self) -> None:
        """Stop opening a spare (before the SDK's client, and its pool, close)."""
        opening, self._opening_spare = self._opening_spare, None
        self._spares = 0
        if opening is not None:
            opening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await opening

    async def _retry_or_raise(
        self, error: BaseException, cause: BaseException | None, answer: httpx2.Response | None
    ) -> Retry:
        client = self._client
        if client.max_retries <= 0:
            raise error from cause
        # The SDK's first back-off (or the answer's retry-after), as its own retry loop waits it.
        delay = client._calculate_retry_timeout(
            client.max_retries, self._request_options, answer.headers if answer is not None else None
        )
        await asyncio.sleep(delay)
        return RETRY


def direct_attempt(
    client: Any,
    path: str,
    sdk: Any,
    *,
    spans: bool,
    spares: int = 1,
    options: Mapping[str, Any] | None = None,
    first_byte: float | None = None,
) -> DirectAttempt | None:
    """A :class:`DirectAttempt` for ``client`` (a Stainless SDK's async client), or ``None`` where
    sending directly could differ from what the SDK sends. ``spares``: idle connections to keep
    ready for the next calls; ``options``: what the SDK's method puts in the request's options
    besides the body (OpenAI's auth scheme); ``first_byte``: the attempt's first-byte timeout."""
    http_client = client._client
    transport = getattr(http_client, "_transport", None)
    eligible = (
        not spans
        and type(transport).__name__ == "AiohttpTransport"
        and getattr(transport, "proxy", True) is None
        and getattr(transport, "uds", True) is None
        and not getattr(http_client, "_mounts", True)
        and not any(getattr(http_client, "event_hooks", {"": [1]}).values())
        and client.custom_auth is None
        and client._idempotency_header is None
        and not getattr(client, "_middleware", ())
        and getattr(client, "_token_cache", None) is None
    )
    return DirectAttempt(client, path, sdk, options or {}, spares, first_byte) if eligible else None
