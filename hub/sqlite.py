"""One SQLite connection behind a lock: the read and write-transaction pattern the hub's
store and registry share."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator

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
