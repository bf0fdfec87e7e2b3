"""All of ssegate's settings, read from the environment in one place.

Every setting has an ``SSEGATE_*`` variable (the vendors' usual ``ANTHROPIC_API_KEY`` and
``OPENAI_API_KEY`` are honoured too). ``ssegate serve`` flags override the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ssegate.errors import SettingsError
from ssegate.log.base import Retention


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    # Where events live: None = in-process memory (one process); "redis://..." = Redis Streams.
    redis_url: str | None = None
    # Provider used when a request names none. None = anthropic if a key is set, else openai if a
    # base URL or key is set, else the offline demo model.
    provider: str | None = None
    model: str | None = None
    anthropic_api_key: str | None = None
    anthropic_base_url: str | None = None
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    # Pace of the offline demo model (seconds to first token, tokens per second).
    demo_ttft: float = 0.4
    demo_tokens_per_second: float = 40.0
    # Upstream silent this long (s) -> the stream ends with error upstream_timeout.
    upstream_idle_timeout: float = 60.0
    # The vendor SDK's own retries of a refused start (429, 5xx, connection error), before any token.
    upstream_max_retries: int = 2
    # Connections each provider's HTTP client may hold at once: one per running generation. 0: as
    # many as max_streams_total (the SDKs' own pools stop at 1000; the next generation would wait).
    upstream_max_connections: int = 0
    # Idle connections each provider keeps open to its upstream, so that a generation that finds
    # none free in the pool need not connect first (0: none).
    upstream_spare_connections: int = 1
    # Nobody watching anywhere for this long (s) -> the upstream call is closed ("abandoned").
    abandon_grace: float = 10.0
    # ... and before its first viewer arrives (s); never shorter than abandon_grace.
    first_viewer_grace: float = 10.0
    # A producer process that stops renewing its lease for this long (s) is taken for dead and its
    # streams end with error upstream_lost. Renewed every lease_ttl / 3.
    lease_ttl: float = 6.0
    # Keep-alive comment after this many idle seconds; proxies usually time out at 60 s.
    keepalive_interval: float = 15.0
    # The most (ms) a stream's next write waits after the previous one to batch events. The wait is
    # twice what the previous write took (a syscall per live viewer), so only streams with many
    # viewers batch; a quiet stream's events go out at once.
    coalesce_ms: float = 10.0
    # The reconnection delay (ms) announced to EventSource at the start of every stream.
    retry_ms: int = 1000
    # Largest request body accepted (bytes); a larger one is answered 413.
    max_body_bytes: int = 1 << 20
    max_tokens: int = 4096
    # -- exposure and auth (see ssegate.auth) --
    # API keys "name:key:scope,scope;..." and/or a file of them (same lines, or JSON). None: local mode.
    api_keys: str | None = None
    api_keys_file: str | None = None
    # Serve a non-loopback address with no keys anyway (SSEGATE_ALLOW_OPEN=1).
    allow_open: bool = False
    # HS256 secret for stream tokens; unset: random per process (one process only).
    token_secret: str | None = None
    token_ttl: float = 300.0
    token_max_ttl: float = 3600.0
    # Comma-separated browser origins allowed to call the API (CORS); "*" allows any, without credentials.
    cors_origins: str | None = None
    # Comma-separated model names /metrics labels by, besides the providers' default models and
    # SSEGATE_MODEL; any other model is counted as "other" (bounded cardinality).
    metrics_models: str | None = None
    # -- limits --
    max_streams_per_principal: int = 100
    max_streams_total: int = 10_000
    # Total characters of a generation's messages and system prompt; more is answered 413.
    max_prompt_chars: int = 200_000
    # Generation starts per principal per minute (0: no limit).
    generation_starts_per_minute: int = 60
    # A stream is ended cleanly (clients resume) after this many seconds; 0: never.
    max_stream_seconds: float = 0.0
    # On SIGTERM, running generations get this long (s) to finish before they are ended.
    drain_timeout: float = 10.0
    # One JSON line per request on the "ssegate.access" logger.
    access_log: bool = True
    # A repeated start (same Idempotency-Key, or a reconnect's Last-Event-ID with the same body)
    # within this many seconds continues its generation instead of starting another.
    idempotency_ttl: float = 3600.0
    generation_retention: Retention = field(default_factory=lambda: Retention(10_000, 3600.0))
    topic_retention: Retention = field(default_factory=lambda: Retention(1_000, 24 * 3600.0))
    # -- mounting (docs/mounting.md) --
    # The public path prefix when a proxy strips it before ssegate (nginx `location /chat/` with
    # `proxy_pass http://ssegate/;`): "/chat". ssegate's URLs then start with it. Mounted in a host
    # app, leave it unset: the mount's prefix is known already.
    root_path: str | None = None
    # -- on finish (docs/producers.md#on-finish) --
    # POST every finished generation here (JSON), signed with the secret (HMAC-SHA256), retried
    # with back-off up to `attempts` times (each attempt `timeout` s at most).
    finish_webhook_url: str | None = None
    finish_webhook_secret: str | None = None
    finish_webhook_attempts: int = 5
    finish_webhook_timeout: float = 10.0
    # -- event log outages (docs/operations-reliability.md) --
    # A generation outlives an unreachable event log for this long (s): its upstream keeps
    # streaming into memory and the events are appended, in order, once the log is back. Longer:
    # it ends with error log_unavailable. Viewers wait as long (plus a retry), then get that error.
    log_outage_limit: float = 30.0
    # Events one generation holds in memory during an outage; when full, the upstream is read no
    # further (TCP back-pressure) until the log is back or the outage limit is reached.
    log_outage_buffer: int = 10_000
    # The most (s) a generation waits for its upstream's first event, every retry of a refused or
    # silent start included: past it, error upstream_timeout (instead of attempts x idle timeout).
    upstream_start_timeout: float = 60.0
    # Each attempt of a start waits this long (s) for the upstream's response headers, then is
    # abandoned and retried (within upstream_start_timeout): a host that accepts the connection
    # but never answers costs this, not the SDK's read timeout. 0: the SDK's timeout only.
    upstream_first_byte_timeout: float = 20.0
    # POST /v1/generations answers once the upstream's first event is in, or after this long (s),
    # so that a start the upstream refused answers 429/503/502 instead of 201 and an error event.
    # 0: answer at once.
    start_answer_wait: float = 3.0
    # A viewer whose socket accepts no byte for this long (s) is dropped: its slot and buffers are
    # freed and it resumes with Last-Event-ID when it comes back. 0: never.
    viewer_stall_timeout: float = 60.0
    # -- the edge (see docs/security.md) --
    # Comma-separated Host names this server answers to ("*.example.com" for subdomains, "*": any).
    # None: loopback names (localhost, 127.0.0.1, [::1]) in local mode on a loopback address, else any.
    allowed_hosts: str | None = None
    # Every request is bounded (docs/security.md#every-request-is-bounded): its headers' bytes
    # (request line included; more: 431) and count (431), the seconds until its headers are complete
    # (408) and until its body is (408). 0: no limit.
    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    body_timeout: float = 30.0

    @property
    def default_provider(self) -> str:
        if self.provider:
            return self.provider
        if self.anthropic_api_key:
            return "anthropic"
        if self.openai_base_url or self.openai_api_key:
            return "openai"
        return "demo"

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with the given fields changed (``None`` values are ignored: "flag not given")."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"SSEGATE_{f.name.upper()}")
            if raw is None or f.name.endswith("_retention"):
                continue
            values[f.name] = _convert(f.name, f.type, raw)
        values.setdefault("anthropic_api_key", env.get("ANTHROPIC_API_KEY") or None)
        values.setdefault("openai_api_key", env.get("OPENAI_API_KEY") or None)
        values.setdefault("openai_base_url", env.get("OPENAI_BASE_URL") or None)
        if env.get("SSEGATE_REDIS_URL") is None and env.get("REDIS_URL"):
            values["redis_url"] = env["REDIS_URL"]
        for kind in ("generation", "topic"):
            default: Retention = getattr(cls(), f"{kind}_retention")
            values[f"{kind}_retention"] = _retention(env, kind.upper(), default)
        if values.get("upstream_spare_connections", 0) < 0:
            raise SettingsError("SSEGATE_UPSTREAM_SPARE_CONNECTIONS must be >= 0 (0: none)")
        if values.get("upstream_max_connections", 0) < 0:
            raise SettingsError(
                "SSEGATE_UPSTREAM_MAX_CONNECTIONS must be >= 0 (0: as many as SSEGATE_MAX_STREAMS_TOTAL)"
            )
        return cls(**values)


def _retention(env: Mapping[str, str], kind: str, default: Retention) -> Retention:
    """``SSEGATE_<KIND>_MAX_EVENTS`` / ``SSEGATE_<KIND>_MAX_AGE`` (seconds) over ``default``."""
    max_events, max_age = default.max_events, default.max_age
    if (raw := env.get(f"SSEGATE_{kind}_MAX_EVENTS")) is not None:
        max_events = _convert(f"{kind}_max_events".lower(), "int", raw)
    if (raw := env.get(f"SSEGATE_{kind}_MAX_AGE")) is not None:
        max_age = _convert(f"{kind}_max_age".lower(), "float", raw)
    if max_events < 1 or max_age <= 0:
        raise SettingsError(f"SSEGATE_{kind}_MAX_EVENTS must be >= 1 and SSEGATE_{kind}_MAX_AGE > 0")
    return Retention(max_events, max_age)


def _convert(name: str, annotation: Any, raw: str) -> Any:
    kind = str(annotation)
    if kind.startswith("bool"):
        if raw.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if raw.strip().lower() in ("", "0", "false", "no", "off"):
            return False
        raise SettingsError(f"SSEGATE_{name.upper()}={raw!r} is not a boolean (use 1 or 0)")
    try:
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
    except ValueError:
        raise SettingsError(f"SSEGATE_{name.upper()}={raw!r} is not a number") from None
    return raw or None
