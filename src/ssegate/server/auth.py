"""Request authentication: API keys in ``Authorization: Bearer`` (or ``x-api-key``, as the
Anthropic SDK sends them), stream tokens in ``?token=``.

Answers: 401 (``WWW-Authenticate: Bearer``) when credentials are missing or wrong, 403 when the
principal lacks the scope. With no keys configured every request is the ``local`` principal.
``POST /v1/tokens`` mints stream tokens (API key only: a token cannot mint tokens).
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Scope

from ssegate.auth import LOCAL, ApiKeys, AuthConfigError, InvalidToken, Principal, StreamTokens
from ssegate.config import Settings
from ssegate.errors import RequestError
from ssegate.gateway import is_generation_id
from ssegate.server.http import read_json_body

if TYPE_CHECKING:
    from ssegate.server.state import AppState

# Where the principal's name is left in the ASGI scope for the access log.
PRINCIPAL_SCOPE_KEY = "ssegate.principal"
# The request's identity, kept so that checking it twice (authorize, then open a stream) costs once.
_IDENTITY_SCOPE_KEY = "ssegate.identity"
_REALM = 'Bearer realm="ssegate"'
# Set by a host app's principal hook (ssegate.server.prefix) that named nobody: then even without
# API keys configured the request needs ssegate's own credentials (never the open ``local``).
HOOK_DECLINED = "ssegate.hook_declined"


def remember_identity(scope: Scope, principal: Principal, expires_at: float | None = None) -> None:
    """Make ``principal`` the request's identity (a host app's hook decided it)."""
    scope[_IDENTITY_SCOPE_KEY] = (principal, expires_at)
    scope[PRINCIPAL_SCOPE_KEY] = principal.name


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def exposure_problem(settings: Settings, *, workers: int = 1) -> str | None:
    """Why ``ssegate serve`` must not start with these settings (one line), or ``None``."""
    try:
        keys = ApiKeys.load(settings.api_keys, settings.api_keys_file)
    except AuthConfigError as exc:
        return str(exc)
    if not keys and not is_loopback(settings.host) and not settings.allow_open:
        return (
            f"refusing to serve {settings.host} without API keys: anyone who can reach it could use it; "
            "set SSEGATE_API_KEYS (or SSEGATE_API_KEYS_FILE), bind 127.0.0.1, "
            "or pass --allow-public-without-auth (SSEGATE_ALLOW_OPEN=1)"
        )
    if keys and workers > 1 and not settings.token_secret:
        return (
            "--workers > 1 with API keys needs SSEGATE_TOKEN_SECRET: a stream token minted by one "
            "process must verify in the others"
        )
    return None


def _unauthorized(code: str, message: str) -> RequestError:
    challenge = _REALM if code == "unauthorized" else f'{_REALM}, error="invalid_token"'
    return RequestError(401, code, message, headers={"www-authenticate": challenge})


def forbidden(message: str) -> RequestError:
    return RequestError(403, "forbidden", message)


def not_found(generation_id: str) -> RequestError:
    """What an unknown generation id gets (and one the caller may not know exists)."""
    return RequestError(404, "not_found", f"no generation with id {generation_id!r}")


class Authenticator:
    """Turns a request into a :class:`Principal` (or a 401)."""

    def __init__(self, keys: ApiKeys, tokens: StreamTokens) -> None:
        self.keys = keys
        self.tokens = tokens

    @property
    def enabled(self) -> bool:
        return len(self.keys) > 0

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        """Raises :class:`ssegate.auth.AuthConfigError` for a malformed key configuration."""
        keys = ApiKeys.load(settings.api_keys, settings.api_keys_file)
        tokens = StreamTokens(
            settings.token_secret, max_ttl=settings.token_max_ttl, default_ttl=settings.token_ttl
        )
        return cls(keys, tokens)

    def identify(self, request: Request) -> tuple[Principal, float | None]:
        """``(principal, token expiry or None)`` of the request."""
        cached: tuple[Principal, float | None] | None = request.scope.get(_IDENTITY_SCOPE_KEY)
        if cached is None:
            ask = self.enabled or request.scope.get(HOOK_DECLINED, False)
            cached = self._identify(request) if ask else (LOCAL, None)
            request.scope[_IDENTITY_SCOPE_KEY] = cached
            request.scope[PRINCIPAL_SCOPE_KEY] = cached[0].name
        return cached

    def _identify(self, request: Request) -> tuple[Principal, float | None]:
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, credential = header.strip().partition(" ")
            credential = credential.strip()
            if scheme.lower() != "bearer" or not credential:
                raise _unauthorized("unauthorized", "use 'Authorization: Bearer <API key>'")
            principal = self.keys.lookup(credential)
            if principal is not None:
                return principal, None
            if credential.count(".") == 2:  # a JWT: a stream token sent as a header
                return self._verify(credential)
            raise _unauthorized("invalid_api_key", "the API key is not valid")
        api_key = request.headers.get("x-api-key")
        if api_key is not None:
            # What the Anthropic SDK sends (see ssegate.server.doors): the same API keys.
            principal = self.keys.lookup(api_key.strip())
            if principal is None:
                raise _unauthorized("invalid_api_key", "the API key is not valid")
            return principal, None
        token = request.query_params.get("token")
        if token:
            return self._verify(token)
        raise _unauthorized(
            "unauthorized", "an API key (Authorization: Bearer) or a stream token is required"
        )

    def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            return self.tokens.verify(token)
        except InvalidToken as exc:
            raise _unauthorized(exc.code, exc.message) from None

    def require(
        self, request: Request, scope: str, topic: str | None = None
    ) -> tuple[Principal, float | None]:
        """The principal, if it may act in ``scope`` (on ``topic``); 401/403 otherwise."""
        principal, expires_at = self.identify(request)
        if not principal.may(scope, topic):
            what = f"{scope} on topic {topic!r}" if topic is not None else scope
            hint = (
                "a stream token only opens the streams it names"
                if principal.via_token
                else "ask for the scope"
            )
            raise forbidden(f"{principal.name!r} may not {what} ({hint})")
        return principal, expires_at

    def authorize_generation(
        self, request: Request, generation: dict[str, Any], scope: str
    ) -> tuple[Principal, float | None]:
        """Owners, admins and tokens naming the generation may use it; a token only to watch.

        ``scope`` ``subscribe`` reads it (state, events, a token for it), which a key may do with
        ``generate`` or ``subscribe``; ``generate`` cancels it.

        Another key, and a token for another generation, get 404, exactly as for an unknown id, so
        ids cannot be probed (with a key or with a token). A token sits in URLs a browser shows and
        logs, so it reads the events and the state (``subscribe``) of its own generation but cannot
        cancel it (``generate``): 403.
        """
        principal, expires_at = self.identify(request)
        if principal.via_token:
            if not principal.may_use_generation(generation["id"], ""):
                raise not_found(generation["id"])
            if scope != "subscribe":
                raise forbidden(
                    "a stream token may watch this generation and read its state but not cancel it; "
                    "cancel with an API key"
                )
            return principal, expires_at
        if not principal.may_use_generations(scope):
            wanted = "read generations (needs generate or subscribe)" if scope == "subscribe" else scope
            raise forbidden(f"{principal.name!r} may not {wanted}")
        if not principal.may_use_generation(generation["id"], str(generation.get("owner") or "")):
            raise not_found(generation["id"])
        return principal, expires_at


def _parse_token_request(body: Any, max_ttl: float) -> tuple[str | None, list[str], float | None]:
    if not isinstance(body, dict) or set(body) - {"generation", "topics", "ttl"}:
        raise _invalid("body", 'send {"generation": id} or {"topics": [pattern, ...]}, optionally "ttl" (s)')
    generation, topics, ttl = body.get("generation"), body.get("topics"), body.get("ttl")
    if (generation is None) == (topics is None):
        raise _invalid("body", "give exactly one of 'generation' and 'topics'")
    if generation is not None and (not isinstance(generation, str) or not is_generation_id(generation)):
        raise _invalid("generation", "generation must be a generation id")
    if topics is not None and (
        not isinstance(topics, list) or not topics or not all(isinstance(t, str) and t for t in topics)
    ):
        raise _invalid("topics", "topics must be a non-empty list of topic names or patterns")
    if ttl is not None and (
        isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= max_ttl
    ):
        raise _invalid("ttl", f"ttl must be a number of seconds in (0, {max_ttl:g}]")
    return generation, list(topics or []), None if ttl is None else float(ttl)


def _invalid(field: str, message: str) -> RequestError:
    return RequestError(422, "invalid_request", message, extra={"field": field})


async def create_token(request: Request) -> Response:
    app: AppState = request.app.state.ssegate
    principal, _ = app.auth.identify(request)
    if principal.via_token:
        raise forbidden("a stream token cannot mint tokens; use an API key")
    body = await read_json_body(request, app.settings.max_body_bytes)
    generation_id, topics, ttl = _parse_token_request(body, app.auth.tokens.max_ttl)
    if generation_id is not None:
        described = await app.gateway.describe(generation_id)
        if described is None:
            raise RequestError(404, "not_found", f"no generation with id {generation_id!r}")
        app.auth.authorize_generation(request, described, "subscribe")
        scopes = [f"generation:{generation_id}"]
    else:
        for pattern in topics:
            # fnmatch of the pattern itself: "news/*" is covered by a grant of "news/*" or "*".
            # The privacy check here is what lets a token naming an exact private topic open it
            # for whoever holds it (AppState.may_read_topic): only the topic's owner or an admin
            # key passes it. ``principal`` is a key here (tokens were refused above).
            if not principal.may("subscribe", pattern) or not app.may_read_topic(principal, pattern):
                raise forbidden(f"{principal.name!r} may not subscribe to {pattern!r}")
        scopes = [f"topic:{pattern}" for pattern in topics]
    token, expires_at = app.auth.tokens.issue(principal.name, scopes, ttl)
    return JSONResponse({"token": token, "expires_at": expires_at, "scopes": scopes}, status_code=201)


routes = [Route("/v1/tokens", create_token, methods=["POST"])]
