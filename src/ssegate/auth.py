"""Who may do what: principals, API keys and short-lived stream tokens. No HTTP here.

API keys are configured as ``name:key:scope,scope;...`` (``SSEGATE_API_KEYS``) or in a file
(``SSEGATE_API_KEYS_FILE``: the same lines, or JSON ``[{"name", "key" | "key_sha256", "scopes"}]``).
Only the SHA-256 of each key is kept after loading; a presented key is hashed and compared with
every stored digest by :func:`hmac.compare_digest`, so neither the content nor the position of a
match shows in the timing.

Scopes: ``generate`` (start generations; read, follow, resume, cancel and mint tokens for one's
own), ``publish[:pattern]``, ``subscribe[:pattern]`` (topic patterns in :mod:`fnmatch` syntax, e.g.
``subscribe:news/*``; no pattern means every topic; the plain form also reads, follows and mints
tokens for one's own generations, but does not cancel them), ``metrics`` (read ``/metrics``) and
``admin`` (everything, including other principals' generations). A generation is its owner's (the
key that started it) and admins': other keys get 404 for it, as for an unknown id.

Stream tokens are HS256 JWTs for ``EventSource`` URLs (``?token=``): short-lived and scoped to
generations (``generation:<id>``) or topic patterns (``topic:<pattern>``), never to the powers of
the key that minted them.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
import math
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import jwt

from ssegate.errors import AuthConfigError as AuthConfigError
from ssegate.errors import InvalidToken as InvalidToken

SCOPES = frozenset({"generate", "publish", "subscribe", "metrics", "admin"})
# Scopes that may carry a topic pattern after a colon.
TOPIC_SCOPES = frozenset({"publish", "subscribe"})
TOKEN_AUDIENCE = "ssegate-stream"
TOKEN_ALGORITHM = "HS256"
# Short enough that a leaked URL is worth little, long enough for a page load and a few reconnects.
DEFAULT_TOKEN_TTL = 300.0
# Issued tokens round their expiry up to a whole second past a whole-second iat: at most 2 s more
# than their ttl. Clocks of several processes may also differ by a little.
_LIFETIME_SLACK = 5.0


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a key's name (or a token's subject) and what it may do.

    ``grants`` are scope strings as configured (``subscribe:news/*``). A principal built from a
    stream token has ``token_scopes`` (``generation:<id>``, ``topic:<pattern>``) and no grants.
    """

    name: str
    grants: frozenset[str] = frozenset()
    token_scopes: frozenset[str] = frozenset()
    via_token: bool = False

    @property
    def is_admin(self) -> bool:
        return "admin" in self.grants

    def may(self, scope: str, topic: str | None = None) -> bool:
        """May this principal act in ``scope`` (on ``topic``, for the topic scopes)?"""
        if self.via_token:
            return scope == "subscribe" and topic is not None and self._token_covers_topic(topic)
        if self.is_admin or scope in self.grants:
            return True
        if scope in TOPIC_SCOPES and topic is not None:
            prefix = scope + ":"
            return any(g.startswith(prefix) and pattern_covers(g[len(prefix) :], topic) for g in self.grants)
        return False

    def may_use_generations(self, scope: str) -> bool:
        """May this key act in ``scope`` on generations (before asking whose they are)?

        Reading (``subscribe``: state, events, tokens) is also allowed with ``generate``, so the
        key that started a generation can resume it after a dropped connection. Ownership is
        still checked by :meth:`may_use_generation`; tokens are checked there alone.
        """
        if scope == "subscribe" and self.may("generate"):
            return True
        return self.may(scope)

    def may_use_generation(self, generation_id: str, owner: str) -> bool:
        """Owners and admins use their generations; a token only the ones it names."""
        if self.via_token:
            return f"generation:{generation_id}" in self.token_scopes
        return self.is_admin or owner == self.name

    def token_names_topic(self, topic: str) -> bool:
        """Is this a stream token whose scopes name ``topic`` exactly (no pattern)?

        Minting such a token needed a key that may read ``topic`` itself (``POST /v1/tokens``
        checks the topic's privacy then), so the token may open it whoever its subject is: that is
        how a backend's admin key hands a browser user a token for that user's private topic.
        """
        return self.via_token and f"topic:{topic}" in self.token_scopes

    def _token_covers_topic(self, topic: str) -> bool:
        return any(
            s.startswith("topic:") and fnmatch.fnmatchcase(topic, s[len("topic:") :])
            for s in self.token_scopes
        )


LOCAL = Principal("local", grants=frozenset({"admin"}))

_WILDCARDS = frozenset("*?[")


def pattern_covers(granted: str, wanted: str) -> bool:
    """Does every topic that ``wanted`` (a topic, or a pattern asked for in a token) matches also
    match ``granted``?

    Matching a pattern as if it were a topic is not enough: ``news/?`` matches the text ``news/*``,
    but a token for ``news/*`` would open ``news/anything``. So a pattern is covered only by the same
    pattern or by a grant ``<prefix>*`` it starts with; anything subtler is refused.
    """
    if not _WILDCARDS.intersection(wanted):
        return fnmatch.fnmatchcase(wanted, granted)
    if wanted == granted:
        return True
    prefix = granted[:-1]
    return granted.endswith("*") and not _WILDCARDS.intersection(prefix) and wanted.startswith(prefix)


def _parse_scopes(name: str, scopes: Iterable[str]) -> frozenset[str]:
    parsed = set()
    for raw in scopes:
        scope = raw.strip()
        if not scope:
            continue
        base, colon, pattern = scope.partition(":")
        if base not in SCOPES or (colon and (base not in TOPIC_SCOPES or not pattern)):
            raise AuthConfigError(
                f"API key {name!r}: unknown scope {scope!r} "
                f"(known: {', '.join(sorted(SCOPES))}; publish:/subscribe: take a topic pattern)"
            )
        # "subscribe:*" and "subscribe" mean the same; keep the plain form so checks stay cheap.
        parsed.add(base if pattern == "*" else scope)
    if not parsed:
        raise AuthConfigError(f"API key {name!r} has no scopes")
    return frozenset(parsed)


@dataclass(frozen=True, slots=True)
class _StoredKey:
    digest: bytes
    principal: Principal


class ApiKeys:
    """The configured keys, kept only as SHA-256 digests."""

    def __init__(self, keys: Sequence[tuple[str, str, Iterable[str]]]) -> None:
        """``keys``: ``(name, sha256 hex digest, scopes)`` triples."""
        stored: list[_StoredKey] = []
        names: set[str] = set()
        for name, digest, scopes in keys:
            if not name or name in names:
                raise AuthConfigError(f"API key names must be unique and non-empty: {name!r}")
            if name == LOCAL.name:
                raise AuthConfigError(f"{LOCAL.name!r} is reserved for local mode; name the key otherwise")
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest.lower()):
                raise AuthConfigError(f"API key {name!r}: key_sha256 must be 64 hex digits")
            names.add(name)
            stored.append(_StoredKey(bytes.fromhex(digest), Principal(name, _parse_scopes(name, scopes))))
        self._stored = tuple(stored)

    def __len__(self) -> int:
        return len(self._stored)

    def lookup(self, presented: str) -> Principal | None:
        digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        found: Principal | None = None
        for stored in self._stored:  # no early exit: every lookup costs the same
            if hmac.compare_digest(digest, stored.digest):
                found = stored.principal
        return found

    @classmethod
    def parse(cls, text: str) -> ApiKeys:
        """Keys from ``name:key:scopes`` entries separated by ``;`` or newlines (``#`` lines are comments)."""
        entries = []
        for raw in text.replace(";", "\n").splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):  # whole-line comments only: keys may hold "#"
                continue
            name, sep1, rest = line.partition(":")
            key, sep2, scopes = rest.partition(":")
            if not (sep1 and sep2 and name.strip() and key):
                raise AuthConfigError(
                    f"API key entry for {name.strip() or '?'!r} is not 'name:key:scope,scope' "
                    "(e.g. 'web:s3cret:generate,subscribe:news/*')"
                )
            entries.append((name.strip(), hash_key(key.strip()), scopes.split(",")))
        return cls(entries)

    @classmethod
    def parse_json(cls, text: str) -> ApiKeys:
        try:
            items = json.loads(text)
        except ValueError as exc:
            raise AuthConfigError(f"API keys file is not valid JSON: {exc}") from None
        if not isinstance(items, list):
            raise AuthConfigError('API keys JSON must be a list of {"name", "key" or "key_sha256", "scopes"}')
        entries = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise AuthConfigError(f"API keys JSON: each entry needs a name: {item!r:.60}")
            scopes = item.get("scopes")
            if isinstance(scopes, str):
                scopes = scopes.split(",")
            if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
                raise AuthConfigError(f"API key {item['name']!r}: scopes must be a list of strings")
            if isinstance(item.get("key"), str) and item["key"]:
                digest = hash_key(item["key"])
            elif isinstance(item.get("key_sha256"), str):
                digest = item["key_sha256"].lower()
            else:
                raise AuthConfigError(f"API key {item['name']!r} needs 'key' or 'key_sha256'")
            entries.append((item["name"], digest, scopes))
        return cls(entries)

    @classmethod
    def load(cls, inline: str | None, path: str | None) -> ApiKeys:
        """The keys from the environment string and/or the file (JSON if it starts with ``[``)."""
        keys: list[_StoredKey] = []
        if inline:
            keys.extend(cls.parse(inline)._stored)
        if path:
            try:
                with open(path, encoding="utf-8") as handle:
                    text = handle.read()
            except OSError as exc:
                raise AuthConfigError(f"cannot read API keys file {path}: {exc.strerror}") from None
            loaded = cls.parse_json(text) if text.lstrip().startswith("[") else cls.parse(text)
            keys.extend(loaded._stored)
        combined = cls([])
        names = [k.principal.name for k in keys]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise AuthConfigError(f"API key names must be unique: {', '.join(duplicates)}")
        combined._stored = tuple(keys)
        return combined


class StreamTokens:
    """Mints and checks HS256 stream tokens. ``secret`` None: a random one for this process only."""

    def __init__(self, secret: str | None, *, max_ttl: float, default_ttl: float = DEFAULT_TOKEN_TTL) -> None:
        self._key = secret.encode("utf-8") if secret else secrets.token_bytes(32)
        self.max_ttl = max_ttl
        self.default_ttl = min(default_ttl, max_ttl)

    def issue(self, subject: str, scopes: Iterable[str], ttl: float | None = None) -> tuple[str, float]:
        """``(token, expires_at)`` for ``scopes`` (``generation:<id>`` / ``topic:<pattern>``)."""
        lifetime = self.default_ttl if ttl is None else min(ttl, self.max_ttl)
        now = time.time()
        # JWT expiry is checked in whole seconds (NumericDate): round up so a token never dies
        # before its ttl, and report the instant that is actually enforced.
        expires_at = float(math.ceil(now + lifetime))
        claims = {
            "sub": subject,
            "aud": TOKEN_AUDIENCE,
            "iat": int(now),
            "exp": int(expires_at),
            "scp": sorted(set(scopes)),
        }
        return jwt.encode(claims, self._key, algorithm=TOKEN_ALGORITHM), expires_at

    def _check_lifetime(self, claims: dict[str, object]) -> None:
        """A correctly signed token still may not live longer than this server's maximum: not from
        when it was issued, and not from now (a leaked secret or an old server's long-lived token
        would otherwise be good for years)."""
        issued, expires = claims.get("iat"), claims.get("exp")
        if not isinstance(issued, int | float) or not isinstance(expires, int | float):
            raise InvalidToken("invalid_token", "the stream token is not valid")
        longest = self.max_ttl + _LIFETIME_SLACK
        if expires - issued > longest or expires - time.time() > longest:
            raise InvalidToken(
                "invalid_token",
                f"the stream token lives longer than this server's maximum ({self.max_ttl:g} s); "
                "ask for a new one",
            )

    def verify(self, token: str) -> tuple[Principal, float]:
        """``(principal, expires_at)``; raises :class:`InvalidToken`."""
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[TOKEN_ALGORITHM],
                audience=TOKEN_AUDIENCE,
                options={"require": ["exp", "iat", "sub", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("token_expired", "the stream token has expired; ask for a new one") from None
        except jwt.InvalidTokenError:
            raise InvalidToken("invalid_token", "the stream token is not valid") from None
        scopes = claims.get("scp")
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise InvalidToken("invalid_token", "the stream token is not valid")
        self._check_lifetime(claims)
        principal = Principal(str(claims["sub"]), token_scopes=frozenset(scopes), via_token=True)
        return principal, float(claims["exp"])
