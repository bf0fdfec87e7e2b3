"""What the app holds for its lifetime, built in one place by the lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from ssegate.auth import Principal
from ssegate.config import Settings
from ssegate.errors import RequestError
from ssegate.gateway import Gateway
from ssegate.log.base import EventLog
from ssegate.providers.base import GenerationRequest, ProviderInfo
from ssegate.server.auth import Authenticator, forbidden
from ssegate.server.fanout import FanOut
from ssegate.server.idempotency import Claims
from ssegate.server.limits import OpenStreams, StartRate, StreamTicket, check_prompt_size
from ssegate.server.metrics import Metrics


@dataclass(slots=True)
class AppState:
    settings: Settings
    log: EventLog
    gateway: Gateway
    auth: Authenticator
    metrics: Metrics
    streams: OpenStreams
    starts: StartRate
    fanout: FanOut
    # The providers this server can run, by name (what /v1/providers lists).
    providers: dict[str, ProviderInfo] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def claims(self) -> Claims:
        """Which generation a repeated start means (Idempotency-Key, Last-Event-ID)."""
        return Claims(self.log, self.settings.idempotency_ttl)

    def authenticate(self, request: Request, *, scope: str) -> str:
        """The name of the principal making the request, if it may act in ``scope`` (else 401/403).

        Local mode (no API keys): everyone is ``local``.
        """
        return self.auth.require(request, scope)[0].name

    async def admit_generation(self, request: Request, generation: GenerationRequest) -> str:
        """The principal starting ``generation``, if it may: 401/403, 503 while draining, 429 over
        the start rate, 413 for a prompt over ``max_prompt_chars``."""
        principal = self.authenticate(request, scope="generate")
        if self.draining:
            raise RequestError(
                503, "draining", "this server is shutting down; retry", headers={"retry-after": "1"}
            )
        check_prompt_size(generation, self.settings.max_prompt_chars)
        await self.starts.check(principal)
        return principal

    def stream_token(self, principal: str, generation_id: str) -> str | None:
        """A stream token for the generation's events, when auth is on (for EventSource URLs)."""
        if not self.auth.enabled:
            return None
        return self.auth.tokens.issue(principal, [f"generation:{generation_id}"])[0]

    def principal(self, request: Request, *, scope: str, topic: str | None = None) -> Principal:
        """The :class:`Principal` making the request, if it may act in ``scope`` (on ``topic``)."""
        return self.auth.require(request, scope, topic)[0]

    def authorize_generation(self, request: Request, generation: dict[str, Any], *, scope: str) -> None:
        """Raise unless the caller may use this generation: 401, 403 (a token for another one) or
        404 (another principal's generation, answered as if unknown)."""
        self.auth.authorize_generation(request, generation, scope)

    def authorize_topic(self, request: Request, topic: str, *, scope: str) -> Principal:
        """The principal, if it may act in ``scope`` (``publish``/``subscribe``) on ``topic``.

        ``user/<name>/...`` topics are private to principal ``<name>`` (and admins, and stream
        tokens naming that exact topic: see :meth:`may_read_topic`).
        """
        principal = self.principal(request, scope=scope, topic=topic)
        if not self.may_read_topic(principal, topic):
            raise forbidden(f"{topic!r} is private to another principal")
        return principal

    def may_read_topic(self, principal: Principal, topic: str) -> bool:
        """The privacy rule of ``user/<name>/...`` topics, for a key or a stream token.

        A token naming the exact topic passed this rule when it was minted (``POST /v1/tokens``
        asks it of the minting key), so it is not asked again of the token's subject. A pattern
        is not enough: ``user/bob/*`` minted by an admin still opens only the admin's own topics.
        """
        from ssegate.topics import may_read_topic

        return principal.token_names_topic(topic) or may_read_topic(
            principal.name, topic, admin=principal.is_admin
        )

    async def open_stream(self, request: Request) -> StreamTicket:
        """A slot for a stream about to open for this (already authorized) request.

        503 while draining, 429 over a limit. The stream ends itself at the request's stream
        token expiry (``error`` ``token_expired``) or after ``max_stream_seconds``. Hand the ticket
        to :class:`ssegate.server.streaming.EventStreamResponse`; ``close()`` it if no stream opens.
        """
        principal, token_expires_at = self.auth.identify(request)
        return await self.streams.open(principal.name, token_expires_at)

    @property
    def draining(self) -> bool:
        return self.streams.draining

    def begin_drain(self) -> None:
        """SIGTERM: readyz answers 503, new streams and generations are refused. With a shared log,
        open streams end cleanly so their clients resume elsewhere (running generations keep
        going); with the memory log they stay open: their events exist only here."""
        self.streams.drain(end_open=self.settings.redis_url is not None)
