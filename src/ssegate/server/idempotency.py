"""Starts that are safe to retry: which generation a repeated ``POST /v1/generations`` means.

Generic SSE clients reconnect by repeating their request: ``@microsoft/fetch-event-source`` and
the ``eventsource`` package (with a custom fetch) send the same POST again, with the
``Last-Event-ID`` they got to. Without this, each reconnect would start a new, paid generation.

Two ways a POST names a generation it repeats:

- ``Idempotency-Key``: the same key (per principal) and the same body within ``idempotency_ttl``
  is the same generation; the same key with another body is a 409.
- ``Last-Event-ID`` (no key): a POST whose body equals the one that started a streamed
  generation of the same principal continues that generation from the id.

Claims live in the event log (a small stream per claim, gone after the TTL), so every process on
one Redis sees them. A claim is taken atomically (``create`` of its stream), before the
generation starts: concurrent retries make one generation, the others wait for its id.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from dataclasses import dataclass
from typing import Any

import orjson

from ssegate.errors import RequestError, StreamExists, StreamNotFound
from ssegate.log.base import EventLog, Retention

MAX_KEY_LENGTH = 255
# How long a retry waits for the generation a concurrent first request is starting.
CLAIM_WAIT = 5.0
_POLL = 0.02


@dataclass(frozen=True, slots=True)
class Claim:
    """Where a key's (or a body's) generation is recorded."""

    stream: str
    fingerprint: str
    explicit: bool  # an Idempotency-Key (else: the body, for a Last-Event-ID reconnect)


def fingerprint(body: Any) -> str:
    """The body's identity: its JSON with keys sorted (key order and spacing do not matter)."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def idempotency_key(value: str | None) -> str | None:
    """The ``Idempotency-Key`` header's value, checked; ``None`` when absent."""
    if value is None:
        return None
    if not value or len(value) > MAX_KEY_LENGTH or any(ord(ch) < 0x21 or ord(ch) > 0x7E for ch in value):
        raise RequestError(
            400,
            "invalid_idempotency_key",
            f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} visible ASCII characters",
            extra={"field": "Idempotency-Key"},
        )
    return value


def claim_for(principal: str, body_fingerprint: str, key: str | None) -> Claim:
    name = f"key\0{key}" if key is not None else f"body\0{body_fingerprint}"
    digest = hashlib.sha256(f"{principal}\0{name}".encode()).hexdigest()[:40]
    return Claim(f"idem:{digest}", body_fingerprint, key is not None)


class Claims:
    """The claims in one event log."""

    def __init__(self, log: EventLog, ttl: float) -> None:
        self._log = log
        self._ttl = ttl

    async def find(self, claim: Claim) -> str | None:
        """The generation id the claim names; ``None`` if nobody holds it. Waits (bounded) while
        a concurrent request holds it and is still starting its generation; a different body
        under the same key is a 409."""
        deadline = time.monotonic() + CLAIM_WAIT
        while True:
            meta = await self._log.get_meta(claim.stream)
            if not meta and not await self._log.exists(claim.stream):
                return None
            generation_id = meta.get("generation_id")
            if generation_id:
                if claim.explicit and meta.get("fingerprint") != claim.fingerprint:
                    raise RequestError(
                        409,
                        "idempotency_key_reused",
                        "this Idempotency-Key was used with a different body; use a new key per request",
                        extra={"field": "Idempotency-Key", "generation_id": generation_id},
                    )
                return generation_id
            if time.monotonic() >= deadline:
                raise RequestError(
                    409,
                    "idempotency_key_in_use",
                    "a request with this Idempotency-Key is still starting its generation; retry",
                    headers={"retry-after": "1"},
                    extra={"field": "Idempotency-Key"},
                )
            await asyncio.sleep(_POLL)

    async def take(self, claim: Claim) -> bool:
        """Hold the claim for a generation about to start; ``False`` if someone holds it already
        (then :meth:`find` says whose). A body claim is always taken: the newest generation with
        that body is the one its reconnects continue."""
        try:
            await self._log.create(claim.stream, Retention(1, self._ttl))
        except StreamExists:
            if claim.explicit:
                return False
        return True

    async def record(self, claim: Claim, generation_id: str) -> None:
        await self._log.set_meta(
            claim.stream, {"generation_id": generation_id, "fingerprint": claim.fingerprint}
        )
        await self._log.expire(claim.stream, self._ttl)

    async def release(self, claim: Claim) -> None:
        """Give the claim up: the start failed, a retry may try again."""
        with contextlib.suppress(StreamNotFound):
            await self._log.expire(claim.stream, 0)
