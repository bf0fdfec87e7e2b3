"""One SDK method's streamed call: its first attempt sent directly where the ``direct_attempt``
shortcut allows it (see :mod:`ssegate._fast.direct`), the SDK's own call otherwise.

The attempts are made here, one SDK call each (the SDK's own retries off), so that each has its
own first-byte timeout: an upstream that accepts the connection but never sends its response head
is abandoned after ``first_byte_timeout`` seconds and tried again, instead of holding the start
for the SDK's read timeout (the idle timeout plus a margin) on every attempt. The retry policy is
the SDKs' own (documented by both): 408, 409, 429 and 5xx answers, timeouts and broken connections
are retried, ``x-should-retry`` overrides, ``retry-after(-ms)`` up to 60 s is honoured, else
0.5 s doubling up to 8 s with jitter. The gateway's start deadline bounds all attempts together.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from ssegate import _fast
from ssegate._fast.direct import DirectAttempt, Opened, Retry, direct_attempt
from ssegate.providers._errors import first_byte_error

_INITIAL_RETRY_DELAY = 0.5
_MAX_RETRY_DELAY = 8.0
_MAX_RETRY_AFTER = 60.0


class StreamingCall:
    """One SDK method's streamed call, as the adapters open it: the first attempt sent directly
    where :func:`direct_attempt` allows it, the SDK's own call (without its retries) for the
    others; at most ``client.max_retries`` + 1 attempts."""

    def __init__(
        self,
        client: Any,
        method: Callable[[Any], Callable[..., Any]],
        path: str,
        sdk: Any,
        *,
        spans: bool,
        spares: int,
        first_byte_timeout: float | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self._sdk = sdk  # its exception classes
        self._retries = max(0, client.max_retries)
        self._first_byte = first_byte_timeout if first_byte_timeout and first_byte_timeout > 0 else None
        self.direct: DirectAttempt | None = None
        if _fast.enabled(_fast.DIRECT_ATTEMPT):
            self.direct = direct_attempt(
                client, path, sdk, spans=spans, spares=spares, options=options, first_byte=self._first_byte
            )
        # Resolved once, now: the SDK builds its resource objects lazily, on first access, and
        # the app moves what exists at start-up out of the garbage collector's full passes.
        self._create = method(client.with_options(max_retries=0))

    async def open(self, body: dict[str, Any], **sdk_arguments: Any) -> tuple[Any, Any]:
        """``(context, response)`` once the answer's head is in. ``body`` is what the SDK would send
        for ``sdk_arguments`` (its fields in its order, omitted ones left out). Raises the SDK's
        exceptions, or ``upstream_timeout`` when no attempt got a response head in time."""
        attempt = 0  # attempts made
        if self.direct is not None:
            sent = await self.direct.send(body)
            if isinstance(sent, Opened):
                return sent, sent
            if isinstance(sent, Retry):
                attempt = 1  # failed in a way worth retrying; its back-off has been waited
        sdk = self._sdk
        while True:
            context = self._create(**sdk_arguments)
            headers: Mapping[str, str] | None = None
            try:
                async with asyncio.timeout(self._first_byte) as first_byte:
                    return context, await context.__aenter__()
            except TimeoutError:
                if not first_byte.expired():
                    raise
                attempt += 1
                assert self._first_byte is not None
                if attempt > self._retries:
                    raise first_byte_error(self._first_byte, attempt) from None
            except sdk.APIStatusError as exc:
                attempt += 1
                headers = exc.response.headers
                if attempt > self._retries or not _should_retry(exc.status_code, headers):
                    raise
            except sdk.APIConnectionError:  # timeouts included
                attempt += 1
                if attempt > self._retries:
                    raise
            await asyncio.sleep(retry_delay(attempt - 1, headers))

    async def aclose(self) -> None:
        if self.direct is not None:
            await self.direct.aclose()


def _should_retry(status: int, headers: Mapping[str, str]) -> bool:
    should = headers.get("x-should-retry")
    if should in ("true", "false"):
        return should == "true"
    return status in (408, 409, 429) or status >= 500


def retry_delay(retried: int, headers: Mapping[str, str] | None) -> float:
    """Seconds before the next attempt, ``retried`` retries having been made already."""
    if headers is not None:
        after = _retry_after(headers)
        if after is not None and 0 < after <= _MAX_RETRY_AFTER:
            return after
    delay = min(_INITIAL_RETRY_DELAY * 2.0**retried, _MAX_RETRY_DELAY)
    return delay * (1 - 0.25 * random.random())


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return float(value) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - time.time()
