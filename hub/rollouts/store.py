"""Rollouts persisted as JSON documents in ``hub.db`` (table ``rollouts``) with an
optimistic version counter: a save names the version it read."""

from __future__ import annotations

import builtins
import json
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.errors import ValidationError
from hub.db import open_database
from hub.rollouts.errors import RolloutConflictError, RolloutNotFoundError, RolloutStoreError
from hub.rollouts.machine import Rollout

# ---------------------------------------------------------------------------- store


@dataclass(frozen=True)
class StoredRollout:
    """A rollout as stored, with its optimistic version counter."""

    rollout: Rollout
    version: int


class RolloutStore:
    """Rollouts in their own table of the hub's SQLite file, as JSON documents.

    Every :meth:`save` names the version it read; a mismatch means another writer won
    and raises :class:`RolloutConflictError`. Thread-safe (one lock). Does I/O.
    """

    def __init__(self, db_path: Path) -> None:
        """Open the hub database at ``db_path`` (see :mod:`hub.db`).

        Raises:
            RolloutStoreError: the file cannot be opened or the table created.
        """
        self.path = db_path
        self._lock = threading.Lock()
        self._conn = open_database(
            db_path, label=f"rollout store {db_path}", error=RolloutStoreError
        )

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

    def save(self, rollout: Rollout, expected_version: int = 0) -> int:
        """Store ``rollout``; ``expected_version`` 0 creates it. Returns the new version.

        Raises:
            RolloutConflictError: it exists (when creating) or was saved by someone else
                since ``expected_version`` was read.
            RolloutStoreError: the database failed.
        """
        doc = json.dumps(rollout.to_json(), separators=(",", ":"), sort_keys=True)
        rid = rollout.spec.id
        row = (rollout.spec.model, rollout.state.value, int(rollout.active), doc)
        try:
            with self._lock:
                if expected_version == 0:
                    try:
                        self._conn.execute(
                            "INSERT INTO rollouts (model, state, active, doc, id, version)"
                            " VALUES (?, ?, ?, ?, ?, 1)",
                            (*row, rid),
                        )
                    except sqlite3.IntegrityError as exc:
                        raise RolloutConflictError(f"rollout {rid}: already exists") from exc
                    return 1
                cur = self._conn.execute(
                    "UPDATE rollouts SET model = ?, state = ?, active = ?, doc = ?,"
                    " version = version + 1 WHERE id = ? AND version = ?",
                    (*row, rid, expected_version),
                )
        except sqlite3.Error as exc:
            raise RolloutStoreError(f"rollout {rid}: cannot save ({exc})") from exc
        if cur.rowcount != 1:
            raise RolloutConflictError(
                f"rollout {rid}: changed since version {expected_version} was read; reload it"
            )
        return expected_version + 1

    def get(self, rollout_id: str) -> StoredRollout:
        """Load one rollout.

        Raises:
            RolloutNotFoundError: no such rollout.
            RolloutStoreError: the database failed or the stored document is malformed.
        """
        rows = self._query("SELECT doc, version FROM rollouts WHERE id = ?", (rollout_id,))
        if not rows:
            raise RolloutNotFoundError(f"rollout {rollout_id!r}: not found")
        return self._load(rows[0])

    def list(self, active_only: bool = False) -> builtins.list[StoredRollout]:
        """All rollouts (or only running, waiting and paused ones), by id.

        Raises:
            RolloutStoreError: the database failed or a stored document is malformed.
        """
        where = " WHERE active = 1" if active_only else ""
        rows = self._query(f"SELECT doc, version FROM rollouts{where} ORDER BY id", ())  # noqa: S608
        return [self._load(r) for r in rows]

    def _query(self, sql: str, args: Sequence[Any]) -> builtins.list[tuple[str, int]]:
        try:
            with self._lock:
                return list(self._conn.execute(sql, args).fetchall())
        except sqlite3.Error as exc:
            raise RolloutStoreError(f"rollout store {self.path}: cannot read ({exc})") from exc

    @staticmethod
    def _load(row: tuple[str, int]) -> StoredRollout:
        try:
            return StoredRollout(Rollout.from_json(json.loads(row[0])), int(row[1]))
        except (ValueError, ValidationError) as exc:
            raise RolloutStoreError(f"stored rollout is malformed: {exc}") from exc
