"""A hash-chained, append-only audit log in SQLite.

Every entry records who (``actor``) did what (``action``) to what (``target``), with
JSON ``details``, and is chained to the entry before it::

    hash = SHA-256(prev_hash_hex + canonical_bytes({"ts", "actor", "action", "target",
                                                    "details"}))

(:func:`edge_agent.contract.canonical.canonical_bytes`; the first entry's ``prev_hash`` is
:data:`GENESIS`.) :meth:`AuditLog.verify` walks the chain in id order and names the
first broken entry: *edited* (its content no longer matches its hash), *removed* (its
predecessor is missing: a gap), *reordered* (it links to an entry other than the one
before it) or *broken* (it links to no entry at all: the one before it was edited
and re-hashed, or removed and the ids renumbered).

What a chain cannot show on its own: cutting off the tail leaves a valid, shorter
chain, and whoever can write the database can rewrite the whole chain consistently.
Both are caught only against an *anchor* kept outside the database: record
:meth:`AuditLog.head` (last id and hash) elsewhere — a signed directive, a ticket, a
second machine — and pass it to ``verify(anchor=...)``.

Appends are serialised (a lock per log object and ``BEGIN IMMEDIATE`` across
connections), so concurrent writers keep one valid chain.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal

from edge_agent.contract.canonical import canonical_bytes, parse_json
from edge_agent.errors import ValidationError
from hub.db import migrate, open_database
from hub.errors import HubError

#: ``prev_hash`` of the first entry.
GENESIS: Final = "0" * 64
#: Longest actor, action or target accepted.
MAX_FIELD: Final = 256
#: Most entries :meth:`AuditLog.entries` returns at once.
MAX_LIMIT: Final = 1000

Problem = Literal["edited", "removed", "reordered", "broken", "truncated"]

_COLUMNS: Final = "id, ts, actor, action, target, details, prev_hash, hash"


class AuditError(HubError):
    """The audit log cannot be opened, written or read (bad arguments or database)."""


@dataclass(frozen=True)
class AuditEntry:
    """One entry of the log, as stored."""

    id: int
    ts: float
    actor: str
    action: str
    target: str
    details: dict[str, Any]
    prev_hash: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "id": self.id,
            "ts": self.ts,
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "details": self.details,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of :meth:`AuditLog.verify`: the first problem found, if any."""

    ok: bool
    checked: int
    head: tuple[int, str] | None
    first_bad_id: int | None = None
    problem: Problem | None = None
    reason: str | None = None

    def __str__(self) -> str:
        """One line: ``ok: ...`` or ``entry N: problem: why``."""
        if self.ok:
            last = "empty" if self.head is None else f"head {self.head[0]} {self.head[1][:12]}"
            return f"ok: {self.checked} entries, {last}"
        return f"entry {self.first_bad_id}: {self.problem}: {self.reason}"


def entry_hash(
    prev_hash: str, ts: float, actor: str, action: str, target: str, details: Any
) -> str:
    """SHA-256 hex of ``prev_hash`` followed by the entry's canonical bytes.

    Raises:
        ValidationError: ``details`` holds NaN/infinity or non-JSON types.
    """
    body = canonical_bytes(
        {"ts": ts, "actor": actor, "action": action, "target": target, "details": details}
    )
    return hashlib.sha256(prev_hash.encode("ascii") + body).hexdigest()


class AuditLog:
    """An append-only, hash-chained log in the ``audit`` table of a SQLite database.

    Give a path (the log opens and owns the connection) or an open connection (the
    caller owns it; appends commit on it, so it must not be inside a transaction).
    """

    def __init__(
        self, db: str | Path | sqlite3.Connection, *, clock: Callable[[], float] = time.time
    ) -> None:
        """Open the log (its table is in :mod:`hub.db.schema`).

        Raises:
            AuditError: the database cannot be opened or the table created.
        """
        self._clock = clock
        self._lock = threading.Lock()
        if isinstance(db, sqlite3.Connection):
            try:
                migrate(db)  # a connection of the caller's: bring it to the hub's schema
            except sqlite3.Error as exc:
                raise AuditError(f"audit log: cannot open {db!r}: {exc}") from exc
            self._conn, self._owned = db, False
        else:
            self._conn = open_database(Path(db), label=f"audit log {db}", error=AuditError)
            self._owned = True

    def close(self) -> None:
        """Close the connection if this log opened it."""
        if self._owned:
            self._conn.close()

    def __enter__(self) -> AuditLog:
        """Return self."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close (see :meth:`close`)."""
        self.close()

    def append(
        self, actor: str, action: str, target: str, details: Mapping[str, Any] | None = None
    ) -> AuditEntry:
        """Append one entry chained to the current last one; returns it as stored.

        Raises:
            AuditError: an empty or too long actor/action/target, details that are not
                a JSON object, or a database failure (nothing is written then).
        """
        for name, value in (("actor", actor), ("action", action), ("target", target)):
            if not isinstance(value, str) or not value or len(value) > MAX_FIELD:
                raise AuditError(f"audit: {name} must be a non-empty string of <= {MAX_FIELD}")
        doc = dict(details or {})
        try:
            text = canonical_bytes(doc).decode("utf-8")
        except ValidationError as exc:
            raise AuditError(f"audit: details are not canonical JSON: {exc}") from exc
        ts = float(self._clock())
        with self._lock:
            try:
                if self._conn.in_transaction:
                    raise AuditError("audit: the connection is inside a transaction")
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    row = self._conn.execute(
                        "SELECT hash FROM audit ORDER BY id DESC LIMIT 1"
                    ).fetchone()
                    prev = GENESIS if row is None else str(row[0])
                    digest = entry_hash(prev, ts, actor, action, target, doc)
                    cur = self._conn.execute(
                        "INSERT INTO audit (ts, actor, action, target, details, prev_hash, hash)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (ts, actor, action, target, text, prev, digest),
                    )
                    new_id = cur.lastrowid
                    self._conn.commit()
                except BaseException:
                    self._conn.rollback()
                    raise
            except sqlite3.Error as exc:
                raise AuditError(f"audit: cannot append: {exc}") from exc
        assert new_id is not None  # noqa: S101 (an INSERT always sets it)
        return AuditEntry(new_id, ts, actor, action, target, doc, prev, digest)

    def entries(self, after_id: int = 0, limit: int = 100) -> list[AuditEntry]:
        """Entries with id > ``after_id``, oldest first, at most ``limit``.

        Raises:
            AuditError: ``limit`` not in [1, MAX_LIMIT], or a stored entry is unreadable.
        """
        if not 1 <= limit <= MAX_LIMIT:
            raise AuditError(f"audit: limit must be in [1, {MAX_LIMIT}], got {limit}")
        rows = self._query(
            f"SELECT {_COLUMNS} FROM audit WHERE id > ? ORDER BY id LIMIT ?",  # noqa: S608
            (after_id, limit),
        )
        return [_entry(r) for r in rows]

    def head(self) -> tuple[int, str] | None:
        """The last entry's (id, hash), to keep outside the database as an anchor.

        Raises:
            AuditError: the database cannot be read.
        """
        rows = self._query("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1", ())
        return None if not rows else (int(rows[0][0]), str(rows[0][1]))

    def verify(self, anchor: tuple[int, str] | None = None) -> VerifyResult:
        """Walk the chain from the first entry and report the first broken one.

        With ``anchor`` (a :meth:`head` recorded earlier), also check that the anchored
        entry is still there with the same hash: this catches a cut-off tail and a
        consistently rewritten chain, which the chain alone cannot show.

        Raises:
            AuditError: the database cannot be read, or the anchor id is below 1.
        """
        rows = self._query(f"SELECT {_COLUMNS} FROM audit ORDER BY id", ())  # noqa: S608
        stored = {str(r[7]): int(r[0]) for r in rows}
        expected_prev, expected_id = GENESIS, 1
        for checked, r in enumerate(rows):
            rid, prev, digest = int(r[0]), str(r[6]), str(r[7])

            def bad(problem: Problem, why: str, rid: int = rid, n: int = checked) -> VerifyResult:
                return VerifyResult(False, n, None, rid, problem, why)

            try:
                details = parse_json(str(r[5]).encode("utf-8"), "details")
                recomputed = entry_hash(prev, float(r[1]), str(r[2]), str(r[3]), str(r[4]), details)
            except ValidationError as exc:
                return bad("edited", f"details are not valid JSON ({exc})")
            if recomputed != digest:
                return bad("edited", "its content no longer matches its hash")
            if prev != expected_prev:
                if prev in stored:
                    return bad(
                        "reordered",
                        f"it follows entry {stored[prev]}, not entry {expected_id - 1 or 'none'}",
                    )
                if rid != expected_id:
                    return bad("removed", f"entries {expected_id}..{rid - 1} are missing")
                return bad(
                    "broken",
                    f"its prev_hash matches no entry (entry {rid - 1} was edited and "
                    "re-hashed, or an entry was removed and the ids renumbered)",
                )
            if rid != expected_id:
                return bad("removed", f"ids jump from {expected_id - 1} to {rid}")
            expected_prev, expected_id = digest, rid + 1
        head = (expected_id - 1, expected_prev) if rows else None
        if anchor is not None:
            a_id, a_hash = anchor
            if a_id < 1:
                raise AuditError(f"audit: anchor id must be >= 1, got {a_id}")
            if head is None or a_id > head[0]:
                last = 0 if head is None else head[0]
                return VerifyResult(
                    False, len(rows), head, a_id, "truncated",
                    f"the anchored entry is missing: the log ends at entry {last}",
                )  # fmt: skip
            actual = next(str(r[7]) for r in rows if int(r[0]) == a_id)
            if actual != a_hash:
                return VerifyResult(
                    False, len(rows), head, a_id, "edited",
                    "its hash differs from the anchor: the chain was rewritten",
                )  # fmt: skip
        return VerifyResult(True, len(rows), head)

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                rows = self._conn.execute(sql, params).fetchall()
                if self._owned and self._conn.in_transaction:
                    self._conn.commit()
            except sqlite3.Error as exc:
                raise AuditError(f"audit: cannot read: {exc}") from exc
        return [tuple(r) for r in rows]


def _entry(r: tuple[Any, ...]) -> AuditEntry:
    try:
        details = parse_json(str(r[5]).encode("utf-8"), "details")
    except ValidationError as exc:
        raise AuditError(f"audit: entry {r[0]} is unreadable: {exc}") from exc
    return AuditEntry(
        int(r[0]), float(r[1]), str(r[2]), str(r[3]), str(r[4]), details, str(r[6]), str(r[7])
    )
