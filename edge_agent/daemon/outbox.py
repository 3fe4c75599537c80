"""The offline outbox: closed metrics windows in SQLite until the hub acknowledges them.

A row holds the windows closed together (the active model's, and a shadow
challenger's when one runs), stored as a JSON array. Each appended group gets the
next sequence number of this device. Sequences never go
backwards: the counter is a row of its own, updated in the same transaction as the
insert, so it survives acks that delete every row and process restarts. A row covers
the sequence range ``[seq_lo, seq_hi]``: a fresh window has ``seq_lo == seq_hi``.

Rows leave only through :meth:`Outbox.ack` (the hub's end-to-end acknowledgement of
everything up to a sequence). When the stored payload bytes exceed the budget, the
oldest rows are merged pairwise with :func:`~edge_agent.contract.window.merge_windows`: two
rows that are adjacent in the table and hold windows of the same models, versions and
roles (the same ``group_key``) become one row over the union of their ranges, window
by window. Grouping is what lets a shadow stage compact: active and shadow windows
closed together share a row instead of alternating. Every count survives; only time resolution is
lost. Because only table-adjacent rows merge, the ranges stay disjoint and ordered
(a laminar family: the hub can subtract a window it already stored from a merged
range that contains it).

Durability: WAL with ``synchronous=FULL``. A commit returns only after the WAL is
fsynced, so a window :meth:`Outbox.append` returned a sequence for survives kill -9
*and* power loss. ``NORMAL`` would survive kill -9 too (the WAL is written before the
commit returns) but may lose the last commits on power loss, which on an edge device
is the common failure; FULL costs one fsync per window, i.e. one a minute.

Disk full: see :meth:`Outbox.append` for the contract (the caller keeps the window).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from edge_agent.contract.canonical import canonical_bytes, parse_json
from edge_agent.contract.window import MetricsWindow, merge_windows
from edge_agent.errors import OutboxError, ValidationError

log = logging.getLogger("edgefleet.agent")

#: Default budget for stored window payloads (the database file is somewhat larger).
DEFAULT_BUDGET_BYTES: Final = 8 << 20
#: Compaction stops once the stored payload bytes are at most this share of the budget.
COMPACT_TARGET: Final = 0.8
_CHUNK: Final = 64
_COLUMNS: Final = (
    "SELECT seq_lo, seq_hi, created, model, version, role, payload, size, group_key FROM outbox"
)
# Ranges are disjoint and ordered, so seq_hi order is seq_lo order.
_SELECT_PENDING: Final = _COLUMNS + " WHERE seq_hi > ? ORDER BY seq_hi LIMIT ?"
_SELECT_PAGE: Final = _COLUMNS + " WHERE seq_lo > ? ORDER BY seq_lo LIMIT ?"
_INSERT: Final = (
    "INSERT INTO outbox (seq_lo, seq_hi, created, model, version, role, payload, size,"
    " group_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

#: Named schema migrations, applied in order and recorded in the ``migrations`` table.
MIGRATIONS: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    (
        "0001_outbox",
        (
            "CREATE TABLE outbox ("
            " seq_lo INTEGER PRIMARY KEY,"
            " seq_hi INTEGER NOT NULL,"
            " created REAL NOT NULL,"
            " model TEXT NOT NULL,"
            " version INTEGER NOT NULL,"
            " role TEXT NOT NULL,"
            " payload BLOB NOT NULL,"
            " size INTEGER NOT NULL,"
            " CHECK (seq_lo >= 1 AND seq_lo <= seq_hi))",
            # Serves ack (seq_hi <= ?) and, as a covering index, SUM(size).
            "CREATE INDEX outbox_seq_hi ON outbox (seq_hi, size)",
            "CREATE TABLE outbox_state ("
            " id INTEGER PRIMARY KEY CHECK (id = 1),"
            " last_seq INTEGER NOT NULL,"
            " compactions INTEGER NOT NULL)",
            "INSERT INTO outbox_state (id, last_seq, compactions) VALUES (1, 0, 0)",
        ),
    ),
    (
        "0002_window_groups",
        ("ALTER TABLE outbox ADD COLUMN group_key TEXT NOT NULL DEFAULT ''",),
    ),
    (
        # A fresh outbox (a new device, or one whose data directory was wiped) starts
        # its sequences at 1 again: a random epoch tells the hub it is a new sequence
        # space, not a replay, and lets the agent ignore acks meant for the old one.
        # An outbox that already handed out sequences keeps the empty (legacy) epoch,
        # so its sequences continue where the hub expects them.
        "0003_epoch",
        (
            "ALTER TABLE outbox_state ADD COLUMN epoch TEXT NOT NULL DEFAULT ''",
            "UPDATE outbox_state SET epoch = lower(hex(randomblob(8))) WHERE last_seq = 0",
        ),
    ),
    (
        # The open windows (and closed ones not stored yet), saved every few seconds so
        # a kill -9 loses at most that interval; every append deletes it in the same
        # transaction, so nothing it holds is ever stored twice.
        "0004_checkpoint",
        (
            "CREATE TABLE checkpoint ("
            " id INTEGER PRIMARY KEY CHECK (id = 1),"
            " created REAL NOT NULL,"
            " payload BLOB NOT NULL)",
        ),
    ),
)


def group_key(windows: Sequence[MetricsWindow]) -> str:
    """What must match for two rows to merge: each window's model, version and role."""
    return ";".join(f"{w.model_name}:{w.model_version}:{w.role}" for w in windows)


@dataclass(frozen=True)
class OutboxRow:
    """One stored window (or a compacted range of windows) with its sequence range."""

    seq_lo: int
    seq_hi: int
    created: float
    model_name: str
    model_version: int
    role: str
    payload: bytes
    size: int
    group_key: str = ""

    @property
    def key(self) -> str:
        """Rows merge only with rows of the same key (see :func:`group_key`)."""
        return self.group_key

    def windows(self) -> tuple[MetricsWindow, ...]:
        """Parse the payload: a JSON array of :meth:`MetricsWindow.to_json` documents.

        Raises:
            ValidationError: the payload is not an array of valid windows.
        """
        doc = parse_json(self.payload, f"outbox row {self.seq_lo}")
        if not isinstance(doc, list) or not doc:
            raise ValidationError(f"outbox row {self.seq_lo}: not a non-empty array of windows")
        return tuple(MetricsWindow.from_json(w) for w in doc)

    def window(self) -> MetricsWindow:
        """The row's only window.

        Raises:
            ValidationError: the payload is invalid, or holds several windows.
        """
        windows = self.windows()
        if len(windows) != 1:
            raise ValidationError(f"outbox row {self.seq_lo} holds {len(windows)} windows")
        return windows[0]


class Outbox:
    """Closed windows waiting for the hub, in one SQLite file (WAL). Thread-safe.

    Every method that touches the database raises :class:`OutboxError` (one line)
    when SQLite fails, and after :meth:`close`.
    """

    def __init__(
        self,
        path: Path,
        budget_bytes: int = DEFAULT_BUDGET_BYTES,
        *,
        max_db_bytes: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Open (or create, mode 0600) the outbox at ``path`` and apply migrations.

        ``max_db_bytes`` optionally caps the database file (SQLite ``max_page_count``):
        past it, writes fail as on a full disk.

        Raises:
            OutboxError: the file cannot be created or opened, is not an outbox
                database, or WAL mode is unavailable.
            ValueError: ``budget_bytes`` or ``max_db_bytes`` is not positive.
        """
        if budget_bytes < 1 or (max_db_bytes is not None and max_db_bytes < 1):
            raise ValueError("outbox: budget_bytes and max_db_bytes must be positive")
        self.path = path
        self.budget_bytes = budget_bytes
        self._clock = clock
        self._lock = threading.Lock()
        try:
            _create_private(path)
            self._conn: sqlite3.Connection | None = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
        except (OSError, sqlite3.Error) as exc:
            raise OutboxError(f"outbox {path}: cannot open ({exc})") from exc
        try:
            self._configure(max_db_bytes)
            self._migrate()
        except (sqlite3.Error, OutboxError) as exc:
            self.close()
            if isinstance(exc, OutboxError):
                raise
            raise OutboxError(f"outbox {path}: cannot open ({exc})") from exc

    def __enter__(self) -> Outbox:
        """Use as a context manager that closes the outbox."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the outbox."""
        self.close()

    def append(self, window: MetricsWindow | Sequence[MetricsWindow]) -> int:
        """Store a closed window, or the windows closed together, durably as one row.

        Returns the row's sequence number.

        Contract on failure: when SQLite reports a full disk (or the ``max_db_bytes``
        cap), the outbox compacts hard (to half its stored bytes: merging only a few
        rows frees cells, not whole pages, and a new row needs room at the end of the
        table) and retries once; on other SQLite errors it retries once. If that fails
        too it raises :class:`OutboxError` and stores nothing (no sequence is used):
        windows stored before are untouched, and the CALLER keeps ``window`` in memory
        and appends it again later (e.g. after the next ack frees space).

        Raises:
            OutboxError: the window could not be stored (see above), or closed.
            ValidationError: the window cannot be serialised (NaN or infinity), or
                an empty group was given.
        """
        windows = (window,) if isinstance(window, MetricsWindow) else tuple(window)
        if not windows:
            raise ValidationError("outbox: nothing to append (an empty group of windows)")
        payload = canonical_bytes([w.to_json() for w in windows])
        with self._lock:
            conn = self._open_conn()
            try:
                seq = self._insert(conn, windows, payload)
            except sqlite3.Error as first:
                try:
                    if _is_full(first):
                        self._compact(conn, _payload_bytes(conn) // 2)
                    seq = self._insert(conn, windows, payload)
                except sqlite3.Error as exc:
                    raise OutboxError(
                        f"outbox {self.path}: cannot store the window ({exc}); keep it in "
                        "memory and append it again after older windows are acknowledged"
                    ) from exc
            try:
                if _payload_bytes(conn) > self.budget_bytes:
                    self._compact(conn, int(COMPACT_TARGET * self.budget_bytes))
            except sqlite3.Error as exc:  # the window is stored; compaction can wait
                log.warning("outbox %s: compaction failed (%s)", self.path, exc)
        return seq

    def checkpoint(self, groups: Sequence[Sequence[MetricsWindow]]) -> None:
        """Replace the checkpoint with ``groups`` (each a group of windows that would go
        in one row: the closed windows not stored yet, then the open ones as they are
        now); no groups deletes it. :meth:`restore_checkpoint` turns it into rows after
        a crash; the next :meth:`append` deletes it.

        Raises:
            OutboxError: SQLite failed (a full disk, too), or closed.
            ValidationError: a window cannot be serialised (NaN or infinity).
        """
        kept = [tuple(g) for g in groups if g]
        payload = canonical_bytes([[w.to_json() for w in g] for g in kept]) if kept else b""
        with self._lock:
            conn = self._open_conn()
            try:
                with _transaction(conn):
                    conn.execute("DELETE FROM checkpoint")
                    if kept:
                        conn.execute(
                            "INSERT INTO checkpoint (id, created, payload) VALUES (1, ?, ?)",
                            (self._clock(), payload),
                        )
            except sqlite3.Error as exc:
                raise OutboxError(
                    f"outbox {self.path}: cannot save the checkpoint ({exc})"
                ) from exc

    def checkpointed(self) -> list[tuple[MetricsWindow, ...]]:
        """The groups of windows in the checkpoint (none when there is no checkpoint).

        Raises:
            OutboxError: SQLite failed, closed, or the checkpoint is unreadable.
        """
        rows = self._query("SELECT payload FROM checkpoint", ())
        if not rows:
            return []
        try:
            doc = parse_json(bytes(rows[0][0]), "outbox checkpoint")
            if not isinstance(doc, list):
                raise ValidationError("outbox checkpoint: not a list of groups")
            return [
                tuple(MetricsWindow.from_json(w) for w in group)
                for group in doc
                if isinstance(group, list) and group
            ]
        except (ValidationError, TypeError) as exc:
            raise OutboxError(f"outbox {self.path}: unreadable checkpoint ({exc})") from exc

    def restore_checkpoint(self) -> int:
        """Store what a checkpoint left behind (a process that did not stop cleanly) as
        rows, and delete it, in one transaction; returns the number of rows added. An
        unreadable checkpoint is dropped with a warning (it cannot be counted).

        Raises:
            OutboxError: SQLite failed, or closed.
        """
        try:
            groups = self.checkpointed()
        except OutboxError as exc:
            log.warning("%s; dropped", exc)
            groups = []
        with self._lock:
            conn = self._open_conn()
            try:
                with _transaction(conn):
                    for group in groups:
                        payload = canonical_bytes([w.to_json() for w in group])
                        self._insert_row(conn, group, payload)
                    conn.execute("DELETE FROM checkpoint")
            except sqlite3.Error as exc:
                raise OutboxError(
                    f"outbox {self.path}: cannot restore the checkpoint ({exc})"
                ) from exc
        return len(groups)

    def pending(self, limit: int = 500, after: int | None = None) -> list[OutboxRow]:
        """Rows waiting for the hub, oldest first: at most ``limit``, each holding a sequence
        above ``after`` (``seq_hi > after``).

        To page through, pass the last row's ``seq_hi`` as ``after``. A row compacted
        after part of it was sent (``seq_lo <= after < seq_hi``) is returned again, so
        its newer windows are not skipped; the hub subtracts what it already stored.

        Raises:
            OutboxError: SQLite failed, or closed.
            ValueError: ``limit`` < 1.
        """
        if limit < 1:
            raise ValueError("outbox: limit must be >= 1")
        rows = self._query(_SELECT_PENDING, (0 if after is None else after, limit))
        return [OutboxRow(*row) for row in rows]

    def ack(self, seq: int) -> int:
        """Delete every row the hub has stored: those with ``seq_hi <= seq``.

        Returns how many rows were deleted. A row whose range reaches past ``seq``
        stays (it was compacted after the hub stored part of it; the hub de-duplicates).

        Raises:
            OutboxError: SQLite failed, or closed.
        """
        with self._lock:
            conn = self._open_conn()
            try:
                return conn.execute("DELETE FROM outbox WHERE seq_hi <= ?", (seq,)).rowcount
            except sqlite3.Error as exc:
                raise OutboxError(f"outbox {self.path}: cannot acknowledge ({exc})") from exc

    def depth(self) -> int:
        """Number of rows waiting (a compacted row counts once).

        Raises:
            OutboxError: SQLite failed, or closed.
        """
        return int(self._query("SELECT COUNT(*) FROM outbox", ())[0][0])

    def size_bytes(self) -> int:
        """Stored payload bytes (what the budget limits).

        Raises:
            OutboxError: SQLite failed, or closed.
        """
        return int(self._query("SELECT COALESCE(SUM(size), 0) FROM outbox", ())[0][0])

    @property
    def last_seq(self) -> int:
        """The last sequence number handed out (0 before the first append).

        Raises:
            OutboxError: SQLite failed, or closed.
        """
        return int(self._query("SELECT last_seq FROM outbox_state", ())[0][0])

    @property
    def epoch(self) -> str:
        """This outbox's sequence space: 16 hex digits, or "" for one created before
        epochs existed (see migration ``0003_epoch``).

        Raises:
            OutboxError: SQLite failed, or closed.
        """
        return str(self._query("SELECT epoch FROM outbox_state", ())[0][0])

    @property
    def compactions(self) -> int:
        """How many pairwise merges compaction has made, over the outbox's lifetime.

        Raises:
            OutboxError: SQLite failed, or closed.
        """
        return int(self._query("SELECT compactions FROM outbox_state", ())[0][0])

    def close(self) -> None:
        """Close the database (idempotent)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _open_conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise OutboxError(f"outbox {self.path} is closed")
        return self._conn

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        with self._lock:
            conn = self._open_conn()
            try:
                return conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise OutboxError(f"outbox {self.path}: cannot read ({exc})") from exc

    def _configure(self, max_db_bytes: int | None) -> None:
        conn = self._open_conn()
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise OutboxError(f"outbox {self.path}: WAL mode is unavailable (got {mode})")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA journal_size_limit=1048576")
        if max_db_bytes is not None:
            page = int(conn.execute("PRAGMA page_size").fetchone()[0])
            conn.execute(f"PRAGMA max_page_count={max(1, max_db_bytes // page)}")

    def _migrate(self) -> None:
        conn = self._open_conn()
        conn.execute(
            "CREATE TABLE IF NOT EXISTS migrations"
            " (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)"
        )
        for name, statements in MIGRATIONS:
            with _transaction(conn):
                if conn.execute("SELECT 1 FROM migrations WHERE name = ?", (name,)).fetchone():
                    continue
                for sql in statements:
                    conn.execute(sql)
                conn.execute("INSERT INTO migrations VALUES (?, ?)", (name, self._clock()))

    def _insert(
        self, conn: sqlite3.Connection, windows: Sequence[MetricsWindow], payload: bytes
    ) -> int:
        with _transaction(conn):
            seq = self._insert_row(conn, windows, payload)
            conn.execute("DELETE FROM checkpoint")  # what it held is now stored or newer
        return seq

    def _insert_row(
        self, conn: sqlite3.Connection, windows: Sequence[MetricsWindow], payload: bytes
    ) -> int:
        """Insert one row under the next sequence (inside the caller's transaction)."""
        window = windows[0]
        conn.execute("UPDATE outbox_state SET last_seq = last_seq + 1")
        seq = int(conn.execute("SELECT last_seq FROM outbox_state").fetchone()[0])
        conn.execute(
            _INSERT,
            (
                seq,
                seq,
                self._clock(),
                window.model_name,
                window.model_version,
                window.role,
                payload,
                len(payload),
                group_key(windows),
            ),
        )
        return seq

    def _compact(self, conn: sqlite3.Connection, target: int) -> int:
        """Merge oldest adjacent same-key rows pairwise until ``target`` bytes; one transaction.

        Returns the number of merges (0 when nothing can merge).
        """
        merges = 0
        with _transaction(conn):
            size = _payload_bytes(conn)
            while size > target:
                done, size = _compaction_pass(conn, size, target, balanced=True)
                if not done:  # e.g. spans strictly shrinking with age: merge anyway
                    done, size = _compaction_pass(conn, size, target, balanced=False)
                if not done:
                    break
                merges += done
            if merges:
                conn.execute("UPDATE outbox_state SET compactions = compactions + ?", (merges,))
        return merges


def _compaction_pass(
    conn: sqlite3.Connection, size: int, target: int, *, balanced: bool
) -> tuple[int, int]:
    """One pass from the oldest row, merging disjoint adjacent pairs until ``target`` bytes.

    A row merged in this pass is not merged again in it. ``balanced`` merges a row only
    with a newer neighbour covering at least as many sequences, so resolution decays
    gradually with age (spans like 16, 8, 8, 4, 2, 1, 1) instead of the oldest row
    swallowing everything. Returns (merges, new payload bytes).
    """
    merges = 0
    prev: _Row | None = None
    after = 0
    while size > target:
        chunk = [_Row(*r) for r in conn.execute(_SELECT_PAGE, (after, _CHUNK))]
        if not chunk:
            break
        after = chunk[-1].row.seq_lo
        pairs: list[tuple[OutboxRow, OutboxRow, bytes]] = []
        for row in chunk:
            merged = None
            if prev is not None and not (balanced and prev.span > row.span):
                merged = _merged_payload(prev, row)
            if prev is None or merged is None:
                prev = row
                continue
            pairs.append((prev.row, row.row, merged))
            size += len(merged) - prev.row.size - row.row.size
            prev = None
            if size <= target:
                break
        # Deletes first: on a full disk they free the pages the updates need.
        conn.executemany("DELETE FROM outbox WHERE seq_lo = ?", [(b.seq_lo,) for _, b, _ in pairs])
        conn.executemany(
            "UPDATE outbox SET seq_hi = ?, payload = ?, size = ? WHERE seq_lo = ?",
            [(b.seq_hi, m, len(m), a.seq_lo) for a, b, m in pairs],
        )
        merges += len(pairs)
    return merges, size


class _Row:
    """A row read during compaction, its window parsed at most once."""

    def __init__(self, *columns: Any) -> None:
        self.row = OutboxRow(*columns)
        self._windows: tuple[MetricsWindow, ...] | None = None
        self._bad = False

    @property
    def span(self) -> int:
        """How many sequences the row covers."""
        return self.row.seq_hi - self.row.seq_lo + 1

    def windows(self) -> tuple[MetricsWindow, ...] | None:
        if self._windows is None and not self._bad:
            try:
                self._windows = self.row.windows()
            except ValidationError as exc:  # e.g. written by another agent version
                log.warning("outbox: row %d cannot be compacted (%s)", self.row.seq_lo, exc)
                self._bad = True
        return self._windows


def _merged_payload(a: _Row, b: _Row) -> bytes | None:
    """The merged group's canonical bytes, or None when the rows cannot merge."""
    if a.row.key != b.row.key:
        return None
    wa, wb = a.windows(), b.windows()
    if wa is None or wb is None or len(wa) != len(wb):
        return None
    try:
        return canonical_bytes([merge_windows(x, y).to_json() for x, y in zip(wa, wb, strict=True)])
    except ValidationError:
        return None


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # SQLite may have rolled back already (e.g. SQLITE_FULL)
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


def _payload_bytes(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COALESCE(SUM(size), 0) FROM outbox").fetchone()[0])


def _is_full(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (int(code) & 0xFF) == sqlite3.SQLITE_FULL
    return "full" in str(exc)


def _create_private(path: Path) -> None:
    """Create ``path`` (and its directory) readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
