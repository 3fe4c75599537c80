"""Where the console finds its hub and token (pure; the CLI passes the environment).

The token comes from ``--token-file``, else ``EDGEFLEET_TOKEN``, else the config file
``$XDG_CONFIG_HOME/edgefleet/console.toml`` (default ``~/.config/...``) — never from
the command line, where other users can read it in the process list. The config file
may also give ``hub`` and ``hub_ca``; a config file or token file holding a token must
not be readable by others.
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HUB = "http://127.0.0.1:8700"


class SettingsError(ValueError):
    """The console cannot start: one line saying what to fix."""


@dataclass(frozen=True)
class Settings:
    """What the console connects with."""

    hub_url: str
    token: str
    hub_ca: Path | None = None
    token_source: str = ""


def config_path(env: Mapping[str, str]) -> Path:
    """The console's config file under the user's config directory."""
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".config")
    return Path(base) / "edgefleet" / "console.toml"


def _private_text(path: Path, what: str) -> str:
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except OSError as exc:
        raise SettingsError(f"{what} {path}: cannot be read ({exc.strerror})") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SettingsError(f"{what} {path} is readable by others: chmod 600 {path}")
    return text


def resolve(
    env: Mapping[str, str],
    *,
    hub: str | None = None,
    hub_ca: Path | None = None,
    token_file: Path | None = None,
) -> Settings:
    """Combine options, environment and config file (in that order of precedence).

    Raises:
        SettingsError: no token anywhere, an unreadable or over-shared token or config
            file, a malformed config file, or a hub URL that is not http(s).
    """
    cfg: dict[str, object] = {}
    path = config_path(env)
    if path.exists():
        try:
            cfg = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"config {path}: {exc}") from exc
    hub_url = hub or env.get("EDGEFLEET_HUB") or str(cfg.get("hub") or DEFAULT_HUB)
    if not hub_url.startswith(("http://", "https://")):
        raise SettingsError(f"hub URL {hub_url!r}: use http://host:port or https://host:port")
    ca_text = env.get("EDGEFLEET_HUB_CA") or cfg.get("hub_ca")
    ca = hub_ca or (Path(str(ca_text)).expanduser() if ca_text else None)
    if token_file is not None:
        token, source = _private_text(token_file, "token file").strip(), f"file {token_file}"
    elif env.get("EDGEFLEET_TOKEN"):
        token, source = env["EDGEFLEET_TOKEN"].strip(), "EDGEFLEET_TOKEN"
    elif "token" in cfg:
        _private_text(path, "config")
        token, source = str(cfg["token"]).strip(), f"config {path}"
    else:
        raise SettingsError(
            'no API token: set EDGEFLEET_TOKEN, pass --token-file, or put token = "..." '
            f"in {path} (mode 600)"
        )
    if not token:
        raise SettingsError(f"the token from {source} is empty")
    return Settings(hub_url.rstrip("/"), token, ca, source)


def environment() -> dict[str, str]:
    """The process environment (a seam for tests)."""
    return dict(os.environ)
