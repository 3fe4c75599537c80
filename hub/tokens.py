"""Operator and pipeline API tokens: random secrets, stored only as SHA-256 hashes.

A token reads ``efb_<id>_<secret>``. The hub keeps the id, a name, the scopes and the
SHA-256 of the secret; the secret itself is shown once, at creation. Scopes:

- ``read``: list and inspect models, devices, metrics, events, audit;
- ``deploy``: push models, start and steer rollouts (implies ``read``);
- ``admin``: tokens, enrolment, revocation (implies ``deploy``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from hub.db import open_database
from hub.errors import HubError

SCOPES: Final = ("read", "deploy", "admin")
_IMPLIES: Final = {"read": {"read"}, "deploy": {"read", "deploy"}, "admin": set(SCOPES)}
PREFIX: Final = "efb"


class TokenError(HubError):
    """A token cannot be created (unknown scope, bad name) or revoked (unknown id)."""


@dataclass(frozen=True)
class TokenInfo:
    """What the hub knows about a token (never its secret)."""

    id: str
    name: str
    scopes: frozenset[str]
    created: float
    revoked: bool = False

    def allows(self, scope: str) -> bool:
        """Whether this token grants ``scope`` (scopes imply the lesser ones)."""
        return any(scope in _IMPLIES[s] for s in self.scopes)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class TokenStore:
    """Tokens in the hub's SQLite file (table ``api_tokens``). Thread-safe."""

    def __init__(self, path: Path) -> None:
        """Open the hub database at ``path`` (see :mod:`hub.db`).

        Raises:
            TokenError: the database cannot be opened.
        """
        self._lock = threading.Lock()
        self._db = open_database(path, label=f"tokens {path}", error=TokenError)

    def create(self, name: str, scopes: Iterable[str]) -> tuple[str, TokenInfo]:
        """Create a token; returns the full token text (shown once) and its info.

        Raises:
            TokenError: an unknown scope, no scope, or an empty name.
        """
        wanted = frozenset(scopes)
        unknown = sorted(wanted - set(SCOPES))
        if unknown or not wanted:
            raise TokenError(f"scopes must be some of {', '.join(SCOPES)} (got {sorted(wanted)})")
        if not name.strip():
            raise TokenError("a token needs a name (who or what uses it)")
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        info = TokenInfo(token_id, name.strip(), wanted, time.time())
        with self._lock:
            self._db.execute(
                "INSERT INTO api_tokens (id, name, secret_sha256, scopes, created)"
                " VALUES (?, ?, ?, ?, ?)",
                (token_id, info.name, _hash(secret), json.dumps(sorted(wanted)), info.created),
            )
        return f"{PREFIX}_{token_id}_{secret}", info

    def authenticate(self, token: str) -> TokenInfo | None:
        """The token's info if it is valid and not revoked, else None (constant-time compare)."""
        parts = token.split("_", 2)
        if len(parts) != 3 or parts[0] != PREFIX:
            return None
        with self._lock:
            row = self._db.execute(
                "SELECT id, name, secret_sha256, scopes, created, revoked FROM api_tokens"
                " WHERE id = ?",
                (parts[1],),
            ).fetchone()
        if row is None or row[5] or not hmac.compare_digest(row[2], _hash(parts[2])):
            return None
        return TokenInfo(row[0], row[1], frozenset(json.loads(row[3])), row[4])

    def revoke(self, token_id: str) -> None:
        """Revoke a token by id.

        Raises:
            TokenError: no such token.
        """
        with self._lock:
            cur = self._db.execute("UPDATE api_tokens SET revoked = 1 WHERE id = ?", (token_id,))
        if cur.rowcount == 0:
            raise TokenError(f"no token with id {token_id!r}")

    def list(self) -> list[TokenInfo]:
        """Every token (secrets are never stored, so never listed)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, name, scopes, created, revoked FROM api_tokens ORDER BY created"
            ).fetchall()
        return [TokenInfo(r[0], r[1], frozenset(json.loads(r[2])), r[3], bool(r[4])) for r in rows]

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()
