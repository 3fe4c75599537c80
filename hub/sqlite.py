"""One SQLite connection behind a lock: the read and write-transaction pattern the hub's
store and registry share."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from typing import Self

from hub.errors import HubError


@contextlib.contextmanager
def reading(
    lock: threading.Lock | threading.RLock,
    conn: sqlite3.Connection | None,
    error: type[HubError],
    label: str,
) -> Iterator[sqlite3.Connection]:
    """Hold ``lock`` and yield ``conn`` for reads.

    Raises:
        HubError: (as ``error``) the connection is closed, or SQLite failed.
    """
    with lock:
        if conn is None:
            raise error(f"{label} is closed")
        try:
            yield conn
        except sqlite3.Error as exc:
            raise error(f"{label}: cannot read ({exc})") from exc


@contextlib.contextmanager
def writing(
    lock: threading.Lock | threading.RLock,
    conn: sqlite3.Connection | None,
    error: type[HubError],
    label: str,
    what: str,
) -> Iterator[sqlite3.Connection]:
    """Hold ``lock`` and run the block in one ``BEGIN IMMEDIATE`` transaction.

    Raises:
        HubError: (as ``error``) the connection is closed, or SQLite failed (rolled back).
    """
    with lock:
        if conn is None:
            raise error(f"{label} is closed")
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise error(f"{label}: cannot {what} ({exc})") from exc


class LockedDatabase:
    """Base for a class that owns one connection behind a lock (``_conn``, ``_lock``).

    Subclasses set ``_error`` (their exception type) and ``_label`` (how errors name
    them) and assign ``_conn`` once the database is open.
    """

    _error: type[HubError] = HubError
    _label: str = "database"

    def __init__(self) -> None:
        """No connection yet."""
        self._lock: threading.Lock | threading.RLock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def __enter__(self) -> Self:
        """Use as a context manager that closes the connection."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the connection."""
        self.close()

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _read(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return reading(self._lock, self._conn, self._error, self._label)

    def _write(self, what: str) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return writing(self._lock, self._conn, self._error, self._label, what)
