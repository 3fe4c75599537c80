"""Opening ``hub.db``: the one place that connects to the hub's database.

Every part of the hub that keeps state (store, registry, tokens, audit log, directive
signer, rollouts, alerts, enrolment) gets its connection from :func:`open_database`:
the file is created private (0600), put in WAL mode, given the same pragmas, and
brought to the current schema (:mod:`hub.db.schema`) before it is handed out. Each
part still holds its own connection, so the ingest's writes never wait behind an API
read in Python (SQLite's WAL lets readers and one writer proceed together).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from sqlite_utils import Database

from hub.db.schema import MIGRATIONS
from hub.errors import HubError

#: How long a connection waits for another writer's lock before failing (seconds).
BUSY_TIMEOUT_S = 10.0


class DatabaseError(HubError):
    """``hub.db`` cannot be opened, is not a hub database, or cannot be migrated."""


def open_database(
    path: Path, *, label: str | None = None, error: type[HubError] = DatabaseError
) -> sqlite3.Connection:
    """A connection to the hub database at ``path`` (created if missing), in WAL mode
    with foreign keys on, its schema migrated to the current one. Autocommit mode
    (``isolation_level=None``): callers open their own transactions. Usable from any
    thread (callers serialise their own use).

    ``label`` (default: the path) and ``error`` name the part opening it in the one-line
    error.

    Raises:
        HubError: (as ``error``) the file cannot be created or opened, WAL is
            unavailable, or the schema cannot be migrated (nothing is half-applied:
            migrations run in one transaction).
    """
    where = label or str(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))  # private from the start
        conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S
        )
    except (OSError, sqlite3.Error) as exc:
        raise error(f"{where}: cannot open ({exc})") from exc
    try:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise error(f"{where}: WAL mode is unavailable (got {mode})")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        migrate(conn)
    except sqlite3.Error as exc:
        conn.close()
        raise error(f"{where}: cannot open ({exc})") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def migrate(conn: sqlite3.Connection) -> list[str]:
    """Apply the migrations ``conn``'s database lacks, in one write transaction (one
    opener at a time); returns the names applied now.

    Raises:
        sqlite3.Error: SQLite failed (nothing applied).
    """
    db = Database(conn)
    if not MIGRATIONS.pending(db):  # the usual open: nothing to do, no write lock taken
        return []
    conn.execute("BEGIN IMMEDIATE")
    try:
        pending = [m.name for m in MIGRATIONS.pending(db)]
        MIGRATIONS.apply(db)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise
    return pending


def applied_migrations(conn: sqlite3.Connection) -> list[str]:
    """Names of the migrations the database has applied, in order.

    Raises:
        sqlite3.Error: SQLite failed.
    """
    return [m.name for m in MIGRATIONS.applied(Database(conn))]


def open_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection to ``path`` (for readers in another process than the
    writer; nothing is created or migrated).

    Raises:
        sqlite3.Error: the file cannot be opened.
    """
    uri = f"{path.resolve().as_uri()}?mode=ro"
    return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S)
