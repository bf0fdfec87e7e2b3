"""API key configuration and principals, without HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ssegate.auth import ApiKeys, AuthConfigError, Principal, StreamTokens, hash_key
from ssegate.config import Settings
from ssegate.server.auth import exposure_problem


def test_api_keys_parse_names_scopes_and_topic_patterns() -> None:
    keys = ApiKeys.parse("web:k1:generate,subscribe:news/*;ops:k2:metrics\n# a comment\nroot:k3:admin")
    web = keys.lookup("k1")
    assert web is not None
    assert web.name == "web"
    assert web.may("generate")
    assert web.may("subscribe", "news/today")
    assert not web.may("subscribe", "sport/today")
    assert not web.may("publish", "news/today")
    assert not web.may("admin")
    root = keys.lookup("k3")
    assert root is not None
    assert root.may("publish", "anything")
    assert keys.lookup("k4") is None
    assert keys.lookup("") is None


def test_api_keys_are_kept_only_as_sha256() -> None:
    keys = ApiKeys.parse("web:plain-secret-key:generate")
    assert "plain-secret-key" not in repr(vars(keys))
    assert all(stored.digest == bytes.fromhex(hash_key("plain-secret-key")) for stored in keys._stored)
    assert b"plain-secret-key" not in b"".join(stored.digest for stored in keys._stored)


def test_api_keys_file_json_with_hashed_keys_and_lines(tmp_path: Path) -> None:
    json_file = tmp_path / "keys.json"
    json_file.write_text(
        json.dumps(
            [
                {"name": "a", "key_sha256": hash_key("secret-a"), "scopes": ["generate"]},
                {"name": "b", "key": "secret-b", "scopes": "subscribe:x/*,publish:x/*"},
            ]
        )
    )
    keys = ApiKeys.load(None, str(json_file))
    assert keys.lookup("secret-a") == Principal("a", frozenset({"generate"}))
    b = keys.lookup("secret-b")
    assert b is not None
    assert b.may("publish", "x/y")
    lines_file = tmp_path / "keys.txt"
    lines_file.write_text("# ops keys\nc:secret-c:metrics\n")
    both = ApiKeys.load("d:secret-d:admin", str(lines_file))
    assert len(both) == 2


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("web:key", "not 'name:key:scope"),
        ("web:key:fly", "unknown scope"),
        ("web:key:generate:x/*", "unknown scope"),
        ("web:key:", "has no scopes"),
        ("a:k1:generate;a:k2:generate", "unique"),
        ("local:k:admin", "reserved"),
    ],
)
def test_api_keys_bad_configuration_is_a_clear_error(text: str, problem: str) -> None:
    with pytest.raises(AuthConfigError, match=problem):
        ApiKeys.parse(text)


def test_stream_token_scopes_and_expiry() -> None:
    tokens = StreamTokens("s" * 32, max_ttl=60)
    token, expires_at = tokens.issue("alice", ["generation:g1", "topic:news/*"], ttl=3600)
    principal, checked_expiry = tokens.verify(token)
    assert principal.name == "alice"
    assert checked_expiry == pytest.approx(expires_at)
    assert expires_at - 60 <= checked_expiry  # capped at max_ttl
    assert principal.may_use_generation("g1", owner="bob")
    assert not principal.may_use_generation("g2", owner="alice")
    assert principal.may("subscribe", "news/today")
    assert not principal.may("generate")
    assert not principal.may("publish", "news/today")
    other = StreamTokens("t" * 32, max_ttl=60)
    with pytest.raises(Exception, match="not valid"):
        other.verify(token)
    expired, _ = tokens.issue("alice", ["generation:g1"], ttl=-1)
    with pytest.raises(Exception, match="expired"):
        tokens.verify(expired)


@pytest.mark.parametrize(
    ("settings", "workers", "problem"),
    [
        (Settings(host="0.0.0.0"), 1, "refusing to serve 0.0.0.0 without API keys"),
        (Settings(host="192.168.1.10"), 1, "without API keys"),
        (Settings(host="0.0.0.0", allow_open=True), 1, None),
        (Settings(host="127.0.0.1"), 1, None),
        (Settings(host="::1"), 1, None),
        (Settings(host="0.0.0.0", api_keys="a:k:generate"), 1, None),
        (Settings(host="0.0.0.0", api_keys="a:k:generate"), 2, "SSEGATE_TOKEN_SECRET"),
        (Settings(host="0.0.0.0", api_keys="a:k:generate", token_secret="x" * 32), 2, None),
        (Settings(api_keys="a:k:nope"), 1, "unknown scope"),
    ],
)
def test_exposure_rules(settings: Settings, workers: int, problem: str | None) -> None:
    found = exposure_problem(settings, workers=workers)
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert problem in found


def test_settings_read_auth_and_limits_from_env() -> None:
    settings = Settings.from_env(
        {
            "SSEGATE_API_KEYS": "a:k:generate",
            "SSEGATE_ALLOW_OPEN": "1",
            "SSEGATE_MAX_STREAMS_PER_PRINCIPAL": "10",
            "SSEGATE_MAX_STREAM_SECONDS": "30",
            "SSEGATE_CORS_ORIGINS": "https://a.example",
        }
    )
    assert settings.api_keys == "a:k:generate"
    assert settings.allow_open is True
    assert settings.max_streams_per_principal == 10
    assert settings.max_stream_seconds == 30.0
    assert settings.cors_origins == "https://a.example"
    with pytest.raises(ValueError, match="not a boolean"):
        Settings.from_env({"SSEGATE_ALLOW_OPEN": "maybe"})
