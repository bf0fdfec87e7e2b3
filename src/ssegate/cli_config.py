"""Where the client commands find their server and API key: flags, environment, config file.

Each setting is taken from the first place that has it:

1. the command line (``--url``; a key there is allowed but visible in ``ps`` and shell history),
2. the environment (``SSEGATE_URL``, ``SSEGATE_API_KEY``),
3. the config file: ``$SSEGATE_CONFIG``, else ``$XDG_CONFIG_HOME/ssegate/config.toml``
   (``~/.config/ssegate/config.toml`` when XDG_CONFIG_HOME is unset), with top-level
   ``url = "..."`` and ``api_key = "..."``,
4. the built-in default (``http://127.0.0.1:8000``, no key).

The names are disjoint from the server's settings (``SSEGATE_API_KEYS`` is the server's list of keys
it accepts; ``SSEGATE_API_KEY`` is the one key a client sends), so one shell can hold both.
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ssegate.errors import ConfigError

DEFAULT_URL = "http://127.0.0.1:8000"
URL_VARIABLE = "SSEGATE_URL"
KEY_VARIABLE = "SSEGATE_API_KEY"
CONFIG_VARIABLE = "SSEGATE_CONFIG"
# What a config file may hold; anything else is a typo worth naming rather than ignoring.
CONFIG_KEYS = frozenset({"url", "api_key"})
# A config file is a few lines; refuse something that clearly is not one before parsing it.
_MAX_CONFIG_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class ClientConfig:
    url: str
    api_key: str | None
    # Where each value came from, for `ssegate config` and error messages: "--url", "SSEGATE_URL",
    # the config file's path, or "default".
    url_from: str
    api_key_from: str | None
    # Something worth telling the user that does not stop the command (a key file others can read).
    warnings: tuple[str, ...] = ()


def config_path(env: Mapping[str, str]) -> Path:
    """The config file to read (it need not exist)."""
    explicit = env.get(CONFIG_VARIABLE)
    if explicit:
        return Path(explicit).expanduser()
    base = env.get("XDG_CONFIG_HOME") or ""
    # XDG says a relative XDG_CONFIG_HOME is invalid and must be ignored.
    root = Path(base) if os.path.isabs(base) else Path.home() / ".config"
    return root / "ssegate" / "config.toml"


def read_config_file(path: Path, *, required: bool) -> dict[str, str]:
    """The file's settings; an absent file is empty unless ``required`` (named by SSEGATE_CONFIG)."""
    try:
        raw = path.read_bytes()[: _MAX_CONFIG_BYTES + 1]
    except FileNotFoundError:
        if required:
            raise ConfigError(f"{path} (named by {CONFIG_VARIABLE}) does not exist") from None
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(raw) > _MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is larger than {_MAX_CONFIG_BYTES} bytes; is it really the config file?")
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    unknown = sorted(set(document) - CONFIG_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown setting {', '.join(unknown)} (known: url, api_key)")
    settings: dict[str, str] = {}
    for key, value in document.items():
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{path}: {key} must be a non-empty string")
        settings[key] = value.strip()
    return settings


def _readable_by_others(path: Path) -> bool:
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return bool(mode & (stat.S_IRWXG | stat.S_IRWXO))


def resolve(
    *, url: str | None = None, api_key: str | None = None, env: Mapping[str, str] | None = None
) -> ClientConfig:
    """The server URL and API key to use, from the flags given (None: not given) and ``env``."""
    env = os.environ if env is None else env
    path = config_path(env)
    from_file = read_config_file(path, required=bool(env.get(CONFIG_VARIABLE)))
    where = str(path)

    url_value, url_from = DEFAULT_URL, "default"
    for value, origin in (
        (from_file.get("url"), where),
        (env.get(URL_VARIABLE), URL_VARIABLE),
        (url, "--url"),
    ):
        if value:
            url_value, url_from = value, origin

    key_value: str | None = None
    key_from: str | None = None
    for value, origin in (
        (from_file.get("api_key"), where),
        (env.get(KEY_VARIABLE), KEY_VARIABLE),
        (api_key, "--api-key"),
    ):
        if value:
            key_value, key_from = value.strip(), origin

    warnings: list[str] = []
    if "api_key" in from_file and _readable_by_others(path):
        warnings.append(f"{path} holds an API key and others may read it: chmod 600 {path}")
    return ClientConfig(url_value.rstrip("/"), key_value, url_from, key_from, tuple(warnings))
