"""The hub's store: devices, metric windows, events, in one SQLite file (WAL).

Everything goes through :class:`Store`, so a PostgreSQL backend can follow behind the
same methods. Its tables are defined with every other of ``hub.db`` in
:mod:`hub.db.schema`.

Metrics are stored idempotently by (device, sequence range), following the agent's
outbox contract (``edge_agent/daemon/outbox.py``): an outbox row covers ``[seq_lo, seq_hi]``
and rows only ever merge with adjacent rows, so the ranges a device sends are nested
or disjoint, never partially overlapping. The ranges stored for one device are kept
pairwise disjoint:

- a message whose range is covered by stored ranges is a duplicate (replay) and ignored;
- a message whose range contains stored ranges (the device compacted rows after sending
  some of them) must contain their windows (same model, version and role; checked with
  :func:`~edge_agent.contract.window.subtract_windows`, the remainder being what the hub never
  saw); it then replaces those rows, so every prediction is counted once. The stored
  rows' finer time resolution is given up, as the device already did;
- a message that partially overlaps a stored range breaks the contract: it is rejected
  (logged), nothing is changed.

``device_seqs`` keeps, per device, the highest ``n`` such that every sequence in
``1..n`` is stored (what the hub acknowledges), advanced incrementally.

Epochs. A device whose outbox is wiped starts its sequences at 1 again, under a new
random epoch (``edge_agent/daemon/outbox.py``). The store keeps one sequence line per device
("hub sequences") and gives each epoch its own block of it: the first epoch starts at
base 0; a later one at the next multiple of :data:`EPOCH_BLOCK` above everything stored
(its base), so two epochs' ranges can never meet, even while both are live (a cloned
device, a forgery). Messages are stored at ``seq + base``, so the rules above hold
unchanged within each epoch, and sequences past the block (``seq >= EPOCH_BLOCK``) are
rejected. The newest epoch is the device's current one: ``device_seqs`` holds its mark
(which jumps to the base when the epoch starts: the earlier life's gaps can never be
filled); every other epoch keeps its own mark in ``device_epochs.contiguous``. Every
epoch a batch touched is acknowledged in its own numbering (:attr:`MetricsResult.acks`),
so the agent of an older epoch that is still alive is never left unacknowledged.

Identity conflicts. Two devices writing under one device id show in three ways, each
reported in :attr:`MetricsResult.conflicts` (the ingest turns them into
``identity_conflict`` events): an older epoch stores windows that start after the current
epoch's first window (two live epochs: a wiped outbox's late windows were made before
the new life began, so they never qualify); a range that is already stored arrives with
different windows (two devices sharing one epoch: a cloned outbox); a range partially
overlapping a stored one.

Restamped windows. A window the ingest restamped to the hub's clock (it ended more than
a day after the hub's clock: :mod:`hub.plausibility`) arrives as :class:`Restamped`: its
row's ``start``, ``"end"`` and ``payload`` hold the hub's times (every query and roll-up
reads those), and ``original`` keeps the device's document. Whatever compares a range
with what was stored for it (a resend, a compacted range) compares the device's
documents (``COALESCE(original, payload)``), so a resend restamped at a later arrival is
the same range, not a conflict.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Final, NamedTuple

import orjson

from edge_agent.contract.canonical import canonical_bytes
from edge_agent.contract.messages import Event, EventKind, MetricsMessage, ModelVersion, State
from edge_agent.contract.window import (
    MetricsWindow,
    largest_mergeable,
    merge_documents,
    merge_windows,
    subtract_windows,
)
from edge_agent.errors import ValidationError
from hub.db import applied_migrations, open_database
from hub.db.schema import LONG_WINDOW_S, MINUTE_S
from hub.errors import HubError
from hub.rollups import HOUR_S, hour_of
from hub.sqlite import LockedDatabase

log = logging.getLogger("edgefleet.hub")

#: Most devices :meth:`Store.list_devices` returns per page.
MAX_PAGE: Final = 1000


class StoreError(HubError):
    """The hub's database cannot be opened, read or written (one line says why)."""


#: Each epoch after a device's first gets its own block of this many hub sequences.
EPOCH_BLOCK: Final = 1 << 40


def minute_of(start: float) -> int:
    """The fleet minute bucket of a window that starts at ``start`` (floor, as hour_of)."""
    return int(start // MINUTE_S)


@dataclass(frozen=True)
class Restamped:
    """A metrics message to store at other times than the device stamped: ``message`` as
    the device sent it (what resends are compared with), ``windows`` as the hub stores
    them, one per window of the message, in the same order (see
    :func:`hub.plausibility.judge_message`)."""

    message: MetricsMessage
    windows: tuple[MetricsWindow, ...]


class StoreOutcome(Enum):
    """What :meth:`Store.store_metrics_batch` did with one message."""

    STORED = "stored"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


@dataclass(frozen=True)
class MetricsResult:
    """The result of storing a batch of metrics messages."""

    contiguous: dict[str, int]
    """Highest contiguous hub sequence stored, per device the batch touched."""
    outcomes: tuple[StoreOutcome, ...]
    """One per message, in order."""
    acks: dict[tuple[str, str], int] = field(default_factory=dict)
    """What to acknowledge per (device, epoch) the batch touched: the highest contiguous
    sequence stored in that epoch's own numbering."""
    current: dict[str, str] = field(default_factory=dict)
    """The current (newest) epoch of each device the batch touched."""
    conflicts: tuple[tuple[str, str], ...] = ()
    """(device, one line) per sign that two devices write under one device id."""

    def count(self, outcome: StoreOutcome) -> int:
        """How many messages had ``outcome``."""
        return sum(1 for o in self.outcomes if o is outcome)


@dataclass(frozen=True)
class DeviceRecord:
    """What the hub knows about one device."""

    id: str
    tags: tuple[str, ...]
    enrolled_at: float | None
    last_seen: float | None
    online: bool
    offline_since: float | None
    active: ModelVersion | None
    previous: ModelVersion | None
    shadow: ModelVersion | None
    health: dict[str, Any] = field(default_factory=dict)
    buffer_depth: int = 0
    state: dict[str, Any] | None = None
    revoked_at: float | None = None  # when its enrolment was revoked (None: it is not)


@dataclass(frozen=True)
class EventRecord:
    """A stored event, with its id (for paging)."""

    id: int
    event: Event


class Store(LockedDatabase):
    """The hub's SQLite store. Thread-safe (one connection behind a lock).

    Every method that touches the database raises :class:`StoreError` when SQLite
    fails, and after :meth:`close`.
    """

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        """Open (or create) the hub database at ``path`` (see :mod:`hub.db`).

        Raises:
            StoreError: the file cannot be opened, is not a store, or WAL is unavailable.
        """
        self.path = path
        self._clock = clock
        # device -> [(epoch, base)], newest (current) last; a cache of device_epochs
        self._epochs: dict[str, list[tuple[str, int]]] = {}
        # device -> highest hub sequence stored (a cache: this Store is the only writer)
        self._tops: dict[str, int] = {}
        # device -> its device_seqs.contiguous (a cache, likewise)
        self._contiguous: dict[str, int] = {}
        super().__init__()
        # Reentrant: store_metrics_batch holds it across its transaction and the cache
        # updates after the commit, so no other writer reads the caches in between.
        self._lock = threading.RLock()
        self._error = StoreError
        self._label = f"store {path}"
        conn = open_database(path, label=f"store {path}", error=StoreError)
        self._conn = conn
        try:
            # Checkpoint every ~80 MB of WAL rather than 4 MB (fewer, larger copies on
            # the ingest's thread), and truncate the WAL back to 64 MB afterwards.
            conn.execute("PRAGMA wal_autocheckpoint=20000")
            conn.execute("PRAGMA journal_size_limit=67108864")
        except sqlite3.Error as exc:
            self.close()
            raise StoreError(f"store {path}: cannot open ({exc})") from exc

    def migrations(self) -> list[str]:
        """Names of the applied migrations, in order.

        Raises:
            StoreError: SQLite failed, or closed.
        """
        with self._read() as conn:
            return applied_migrations(conn)

    # --- metrics ----------------------------------------------------------------------

    def store_metrics(self, messages: Sequence[MetricsMessage]) -> dict[str, int]:
        """Store a batch of metrics messages in one transaction, idempotently.

        Returns the highest contiguous sequence stored per device the batch touched.
        See the module doc for the de-duplication rules.

        Raises:
            StoreError: SQLite failed (nothing of the batch is stored), or closed.
        """
        return self.store_metrics_batch(messages).contiguous

    def store_metrics_batch(self, messages: Sequence[MetricsMessage | Restamped]) -> MetricsResult:
        """Like :meth:`store_metrics`, also saying what happened to each message; a
        :class:`Restamped` one is stored with its restamped windows (module doc).

        Raises:
            StoreError: SQLite failed (nothing of the batch is stored), or closed.
            ValueError: a :class:`Restamped` whose windows do not match its message's.
        """
        for item in messages:
            if isinstance(item, Restamped) and [w.key for w in item.windows] != [
                w.key for w in item.message.windows
            ]:
                raise ValueError(
                    f"store: restamped windows of {item.message.device_id}"
                    f" [{item.message.seq_lo}, {item.message.seq_hi}] do not match its windows"
                )
        with self._lock:
            with self._write("store metrics") as conn:
                batch = _Batch(conn, self._tops)
                epochs = _Epochs(conn, self._epochs, self._clock(), batch)
                outcomes = tuple(
                    epochs.store(m.message, m.windows)
                    if isinstance(m, Restamped)
                    else epochs.store(m)
                    for m in messages
                )
                batch.flush()
                conn.executemany(_MARK_DIRTY, batch.dirty)
                conn.executemany(_MARK_MINUTE_DIRTY, batch.minutes)
                touched = dict.fromkeys(
                    (m.message if isinstance(m, Restamped) else m).device_id for m in messages
                )
                contiguous = {d: batch.advance(d, self._contiguous.get(d)) for d in touched}
                conn.executemany(_SET_CONTIGUOUS, batch.marks)
                acks = epochs.acks(contiguous)
                current = {d: epochs.current(d) for d in touched}
            # Committed, and still under the lock: no other writer sees stale caches.
            self._epochs.update(epochs.learned)
            self._tops.update(batch.tops)
            self._contiguous.update(contiguous)
        return MetricsResult(contiguous, outcomes, acks, current, tuple(batch.conflicts))

    def contiguous(self, device_id: str) -> int:
        """The highest ``n`` such that every sequence ``1..n`` of the device is stored.

        Raises:
            StoreError: SQLite failed, or closed.
        """
        with self._read() as conn:
            return _read_contiguous(conn, device_id)

    def windows_for(
        self,
        device: str | None = None,
        model: str | None = None,
        version: int | None = None,
        since: float | None = None,
        role: str | None = None,
    ) -> list[MetricsWindow]:
        """Stored windows matching every given filter, oldest start first.

        ``since`` keeps windows that end at or after it.

        Raises:
            StoreError: SQLite failed, a stored payload is invalid, or closed.
        """
        where, params = _where(
            ("device_id = ?", device),
            ("model = ?", model),
            ("version = ?", version),
            ('"end" >= ?', since),
            ("role = ?", role),
        )
        sql = f"SELECT payload FROM windows{where} ORDER BY start, device_id, seq_lo"  # noqa: S608
        with self._read() as conn:
            rows = conn.execute(sql, params).fetchall()
        try:
            return [MetricsWindow.from_json(json.loads(r[0])) for r in rows]
        except (ValueError, ValidationError) as exc:
            raise StoreError(f"store {self.path}: a stored window is invalid ({exc})") from exc

    # --- hourly roll-ups ------------------------------------------------------------------

    def roll_up(self, max_buckets: int = 500) -> int:
        """Recompute up to ``max_buckets`` changed hour buckets from the stored windows,
        then the fleet-wide buckets they belong to, and, within the same budget of
        ``max_buckets``, changed fleet minute buckets; returns how many device-hour and
        minute buckets were done (0: all roll-ups are current). Each call is one short
        transaction, so the ingest is never held up for long: call it until it returns 0.

        Raises:
            StoreError: SQLite failed, a stored payload is invalid, or closed.
        """
        with self._write("roll up") as conn:
            keys = conn.execute(
                "SELECT model, version, role, device_id, hour FROM rollup_dirty"
                " WHERE device_id != '' LIMIT ?",
                (max_buckets,),
            ).fetchall()
            fleet = {(m, v, r, h) for m, v, r, _, h in keys}
            for key in keys:
                _roll_bucket(conn, *key)
            for m, v, r, h in sorted(fleet):
                _roll_fleet_bucket(conn, m, v, r, h)
            conn.executemany(
                "DELETE FROM rollup_dirty WHERE model = ? AND version = ? AND role = ?"
                " AND device_id = ? AND hour = ?",
                keys,
            )
            minutes = conn.execute(
                "SELECT model, version, role, minute FROM rollup_minute_dirty LIMIT ?",
                (max(0, max_buckets - len(keys)),),
            ).fetchall()
            for key in minutes:
                _roll_minute(conn, *key)
            conn.executemany(
                "DELETE FROM rollup_minute_dirty WHERE model = ? AND version = ? AND role = ?"
                " AND minute = ?",
                minutes,
            )
        return len(keys) + len(minutes)

    def merged_windows(
        self,
        model: str,
        version: int,
        role: str = "active",
        devices: Sequence[str] | None = None,
        since: float | None = None,
    ) -> list[MetricsWindow]:
        """What :meth:`windows_for` returns for the fleet (``devices`` None) or the given
        devices, merged into a few windows whose merge is the same (up to floating-point
        rounding of means and M2): hourly roll-ups for whole hours, for the fleet the
        minute roll-ups for the whole minutes before the first whole hour, and the
        stored windows that start before those and end at or after ``since`` (exact:
        ``since`` is never rounded; see :func:`_edge_rows`). Changed buckets are rolled
        up first, so nothing is stale.

        Raises:
            StoreError: SQLite failed, a stored payload is invalid, or closed.
        """
        while self.roll_up():
            pass
        first_hour = None if since is None else hour_of(since) + (since % HOUR_S > 0)
        out: list[MetricsWindow] = []
        with self._read() as conn:
            scopes: Sequence[str] = [""] if devices is None else devices
            rows: list[Any] = []
            for device_id in scopes:
                sql = (
                    "SELECT payload FROM rollups WHERE model = ? AND version = ? AND role = ?"
                    " AND device_id = ? AND hour >= ?"
                )
                lowest = -(2**62) if first_hour is None else first_hour
                rows += conn.execute(sql, (model, version, role, device_id, lowest)).fetchall()
            if since is not None and first_hour is not None:
                before = first_hour * HOUR_S
                if devices is None:  # the fleet: whole minutes from the minute roll-ups
                    first_minute = minute_of(since) + (since % MINUTE_S > 0)
                    before = min(before, first_minute * MINUTE_S)
                    rows += conn.execute(
                        "SELECT payload FROM rollups_minute WHERE model = ? AND version = ?"
                        " AND role = ? AND minute >= ? AND minute < ?",
                        (model, version, role, first_minute, first_hour * (HOUR_S // MINUTE_S)),
                    ).fetchall()
                rows += _edge_rows(conn, model, version, role, devices, since, before)
        if not rows:
            return out
        merged_window = self._merge_rows([r[0] for r in rows])
        if merged_window is not None:
            out.append(merged_window)
        return out

    def device_hours(
        self, devices: Mapping[str, tuple[str, int]], first_hour: int, role: str = "active"
    ) -> dict[str, list[str]]:
        """Each device's hourly roll-up documents of the given (model, version) from
        ``first_hour`` on (one statement per version, an index seek per device; devices
        without any are left out). Changed buckets are rolled up first.

        Raises:
            StoreError: SQLite failed, or closed.
        """
        while self.roll_up():
            pass
        by_version: dict[tuple[str, int], list[str]] = {}
        for device_id, key in devices.items():
            by_version.setdefault(key, []).append(device_id)
        sql = (
            "SELECT device_id, payload FROM rollups WHERE model = ? AND version = ?"
            " AND role = ? AND device_id IN (SELECT value FROM json_each(?)) AND hour >= ?"
            " ORDER BY device_id, hour"
        )
        out: dict[str, list[str]] = {}
        with self._read() as conn:
            for (model, version), ids in by_version.items():
                args = (model, version, role, _json_text(ids), first_hour)
                for device_id, payload in conn.execute(sql, args):
                    out.setdefault(str(device_id), []).append(str(payload))
        return out

    def stored_ranges(self, device_id: str) -> list[tuple[int, int]]:
        """The device's stored sequence ranges ``(seq_lo, seq_hi)``, in order (disjoint).

        Raises:
            StoreError: SQLite failed, or closed.
        """
        with self._read() as conn:
            rows = conn.execute(
                "SELECT DISTINCT seq_lo, seq_hi FROM windows WHERE device_id = ? ORDER BY seq_lo",
                (device_id,),
            ).fetchall()
        return [(int(lo), int(hi)) for lo, hi in rows]

    # --- devices ----------------------------------------------------------------------

    def record_state(self, state: State, now: float | None = None) -> None:
        """Record a device's reported state (creating the device on first sight).

        An offline message (the last will) only marks the device offline: it claims
        nothing about models or health, so those are kept.

        Raises:
            StoreError: SQLite failed, or closed.
        """
        now = self._clock() if now is None else now
        with self._write("record state") as conn:
            conn.execute(
                "INSERT OR IGNORE INTO devices (id, enrolled_at) VALUES (?, ?)",
                (state.device_id, now),
            )
            if not state.online:
                conn.execute(
                    "UPDATE devices SET online = 0,"
                    " offline_since = COALESCE(offline_since, ?) WHERE id = ?",
                    (now, state.device_id),
                )
                return
            conn.execute(
                "UPDATE devices SET last_seen = ?, online = 1, offline_since = NULL,"
                " active_model = ?, active_version = ?, previous_model = ?,"
                " previous_version = ?, shadow_model = ?, shadow_version = ?, health = ?,"
                " buffer_depth = ?, state = ? WHERE id = ?",
                (
                    now,
                    *_model_columns(state.active),
                    *_model_columns(state.previous),
                    *_model_columns(state.shadow),
                    _json_text(state.health.to_json()),
                    state.buffer_depth,
                    state.to_bytes().decode(),
                    state.device_id,
                ),
            )

    def set_tags(self, device_id: str, tags: Sequence[str], now: float | None = None) -> None:
        """Set a device's tags (creating the device if new).

        Raises:
            StoreError: SQLite failed, or closed.
        """
        now = self._clock() if now is None else now
        text = _json_text(sorted(set(tags)))
        with self._write("set tags") as conn:
            conn.execute(
                "INSERT INTO devices (id, enrolled_at, tags) VALUES (?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET tags = excluded.tags",
                (device_id, now, text),
            )

    def device(self, device_id: str) -> DeviceRecord | None:
        """The device's record, or None when the hub never heard of it.

        Raises:
            StoreError: SQLite failed, a stored value is invalid, or closed.
        """
        with self._read() as conn:
            row = conn.execute(f"{_SELECT_DEVICE} WHERE id = ?", (device_id,)).fetchone()
        return None if row is None else self._device_record(row)

    def list_devices(
        self,
        *,
        after: str | None = None,
        limit: int = 100,
        online: bool | None = None,
        tag: str | None = None,
        revoked: bool | None = False,
        ids: Collection[str] | None = None,
        faulty: tuple[bool, Collection[str]] | None = None,
    ) -> list[DeviceRecord]:
        """A page of devices in id order: ids above ``after``, at most ``limit``.

        ``online`` and ``tag`` filter (a device matches ``tag`` when it carries it),
        ``ids`` keeps only the devices it names (one JSON parameter, however many), and
        ``faulty`` = ``(True, marked)`` the devices not online or marked (``(False,
        marked)``: the others).
        Revoked devices are left out unless ``revoked`` is True (only them) or None (all).

        Raises:
            StoreError: SQLite failed, or closed.
            ValueError: ``limit`` is not in ``1..MAX_PAGE``.
        """
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"store: limit must be in 1..{MAX_PAGE}")
        where, params = _where(
            ("id > ?", after),
            ("online = ?", None if online is None else int(online)),
            ("EXISTS (SELECT 1 FROM json_each(devices.tags) WHERE value = ?)", tag),
            (
                "id IN (SELECT value FROM json_each(?))",
                None if ids is None else _json_text(sorted(ids)),
            ),
            (
                "(online = 0 OR id IN (SELECT value FROM json_each(?))) = ?",
                None if faulty is None else _json_text(sorted(faulty[1])),
            ),
        )
        if faulty is not None:
            params = (*params, int(faulty[0]))
        if revoked is not None:
            clause = _NOT_REVOKED if not revoked else f"NOT {_NOT_REVOKED}"
            where = f"{where} AND {clause}" if where else f" WHERE {clause}"
        sql = f"{_SELECT_DEVICE}{where} ORDER BY id LIMIT ?"
        with self._read() as conn:
            rows = conn.execute(sql, (*params, limit)).fetchall()
        return [self._device_record(r) for r in rows]

    def all_devices(self, tag: str | None = None) -> list[DeviceRecord]:
        """Every device that is not revoked (carrying ``tag``, if given) in id order,
        read page by page: what rollouts, cohorts and alerts may select.

        Raises:
            StoreError: SQLite failed, or closed.
        """
        out: list[DeviceRecord] = []
        after: str | None = None
        while page := self.list_devices(after=after, limit=MAX_PAGE, tag=tag):
            out += page
            if len(page) < MAX_PAGE:
                break
            after = page[-1].id
        return out

    def active_versions(self) -> dict[str, tuple[str, int]]:
        """Each device that is not revoked and runs a model: its active (model,
        version), from one narrow read (no record is parsed).

        Raises:
            StoreError: SQLite failed, or closed.
        """
        sql = (
            "SELECT id, active_model, active_version FROM devices"  # noqa: S608
            f" WHERE active_model IS NOT NULL AND {_NOT_REVOKED} ORDER BY id"
        )
        with self._read() as conn:
            rows = conn.execute(sql).fetchall()
        return {str(i): (str(m), int(v)) for i, m, v in rows}

    def cohort(self, tag: str, device: str | None = None) -> list[str]:
        """The ids of the devices carrying ``tag``; with ``device``, just that one if it
        carries the tag (a drift or alert scope naming both).

        Raises:
            StoreError: SQLite failed, or closed.
        """
        return [d.id for d in self.all_devices(tag) if device is None or d.id == device]

    def is_revoked(self, device_id: str) -> bool:
        """Whether the device's enrolment was revoked (seen by the hub or not).

        Raises:
            StoreError: SQLite failed, or closed.
        """
        with self._read() as conn:
            row = conn.execute(
                "SELECT 1 FROM enrollments WHERE device_id = ? AND revoked_at IS NOT NULL",
                (device_id,),
            ).fetchone()
        return row is not None

    def revoked_with_directive(self) -> list[str]:
        """Revoked devices whose retained directive the hub has not cleared yet.

        Raises:
            StoreError: SQLite failed, or closed.
        """
        with self._read() as conn:
            rows = conn.execute(
                "SELECT device_id FROM enrollments WHERE revoked_at IS NOT NULL"
                " AND directive_cleared_at IS NULL ORDER BY device_id"
            ).fetchall()
        return [str(r[0]) for r in rows]

    def mark_directive_cleared(self, device_id: str, when: float) -> None:
        """Record that the revoked device's retained directive was removed.

        Raises:
            StoreError: SQLite failed, or closed.
        """
        with self._write("mark directive cleared") as conn:
            conn.execute(
                "UPDATE enrollments SET directive_cleared_at = ? WHERE device_id = ?",
                (when, device_id),
            )

    def _merge_rows(self, payloads: Sequence[Any]) -> MetricsWindow | None:
        """Merge stored window documents; rows that cannot be merged are skipped and
        reported (:func:`merge_stored`), never break the query."""
        merged = merge_stored(payloads)
        if merged.skipped:
            log.error(
                "store %s: %d stored window row(s) skipped: %s",
                self.path, merged.skipped, merged.why,
            )  # fmt: skip
        return merged.window

    # --- events -----------------------------------------------------------------------

    def record_event(self, event: Event) -> int:
        """Store one deployment event; returns its id.

        Raises:
            StoreError: SQLite failed, or closed.
        """
        model, version = _model_columns(event.model)
        with self._write("record event") as conn:
            cur = conn.execute(
                "INSERT INTO events (device_id, ts, kind, model, version, directive_seq,"
                " progress, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    event.device_id,
                    event.ts,
                    event.kind.value,
                    model,
                    version,
                    event.directive_seq,
                    event.progress,
                    event.detail,
                ),
            )
            return int(cur.lastrowid or 0)

    def devices_with_event(self, kind: EventKind, since: float) -> set[str]:
        """The devices that have an event of ``kind`` stamped at or after ``since``.

        Raises:
            StoreError: SQLite failed, or closed.
        """
        with self._read() as conn:
            rows = conn.execute(
                "SELECT DISTINCT device_id FROM events WHERE kind = ? AND ts >= ?",
                (kind.value, since),
            ).fetchall()
        return {str(r[0]) for r in rows}

    def events_of_kinds(
        self, kinds: Collection[EventKind], after_id: int = 0
    ) -> list[tuple[int, str, EventKind]]:
        """``(id, device, kind)`` of the events of ``kinds`` with ids above ``after_id``,
        oldest first (by the primary key: a reader that keeps the last id reads only
        what is new).

        Raises:
            StoreError: SQLite failed, or closed.
        """
        if not kinds:
            return []
        marks = ", ".join("?" for _ in kinds)
        sql = (
            "SELECT id, device_id, kind FROM events"  # noqa: S608
            f" WHERE id > ? AND kind IN ({marks}) ORDER BY id"
        )
        with self._read() as conn:
            rows = conn.execute(sql, (after_id, *(k.value for k in kinds))).fetchall()
        return [(int(i), str(d), EventKind(k)) for i, d, k in rows]

    def events(
        self, device: str | None = None, after_id: int = 0, limit: int = 100
    ) -> list[EventRecord]:
        """Stored events with ids above ``after_id``, oldest first, at most ``limit``.

        Raises:
            StoreError: SQLite failed, a stored value is invalid, or closed.
            ValueError: ``limit`` is not in ``1..MAX_PAGE``.
        """
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"store: limit must be in 1..{MAX_PAGE}")
        where, params = _where(("id > ?", after_id), ("device_id = ?", device))
        sql = f"{_SELECT_EVENT}{where} ORDER BY id LIMIT ?"
        with self._read() as conn:
            rows = conn.execute(sql, (*params, limit)).fetchall()
        try:
            return [_event_record(r) for r in rows]
        except ValueError as exc:
            raise StoreError(f"store {self.path}: a stored event is invalid ({exc})") from exc

    # --- internals --------------------------------------------------------------------

    def _device_record(self, row: Sequence[Any]) -> DeviceRecord:
        try:
            return _device_record(row)
        except (ValueError, TypeError) as exc:
            raise StoreError(f"store {self.path}: device {row[0]!r} is invalid ({exc})") from exc


_SELECT_DEVICE: Final = (
    "SELECT id, tags, enrolled_at, last_seen, online, offline_since, active_model,"
    " active_version, previous_model, previous_version, shadow_model, shadow_version,"
    " health, buffer_depth, state,"
    " (SELECT revoked_at FROM enrollments WHERE enrollments.device_id = devices.id)"
    " FROM devices"
)
_NOT_REVOKED: Final = (
    "NOT EXISTS (SELECT 1 FROM enrollments WHERE enrollments.device_id = devices.id"
    " AND revoked_at IS NOT NULL)"
)
_SELECT_EVENT: Final = (
    "SELECT id, device_id, ts, kind, model, version, directive_seq, progress, detail FROM events"
)
_MARK_DIRTY: Final = (
    "INSERT OR IGNORE INTO rollup_dirty (model, version, role, device_id, hour)"
    " VALUES (?, ?, ?, ?, ?)"
)
_MARK_MINUTE_DIRTY: Final = (
    "INSERT OR IGNORE INTO rollup_minute_dirty (model, version, role, minute) VALUES (?, ?, ?, ?)"
)
_SET_CONTIGUOUS: Final = (
    "INSERT INTO device_seqs (device_id, contiguous) VALUES (?, ?)"
    " ON CONFLICT (device_id) DO UPDATE SET contiguous = excluded.contiguous"
)
_INSERT_WINDOW: Final = (
    'INSERT INTO windows (device_id, seq_lo, seq_hi, model, version, role, start, "end", n,'
    " payload, original) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


@dataclass
class _Batch:
    """What :meth:`Store.store_metrics_batch` keeps while it stores messages in one
    transaction: the window rows not inserted yet (one statement for the lot, unless a
    read of ``windows`` needs them in the table first: :meth:`flush`), the roll-up
    buckets changed, the highest stored sequence per device this transaction knows
    (``tops``, over ``committed``; ``before``: as it was before the batch), the ranges
    appended per device, and the devices for which anything else happened (a range
    compared with stored ones, a new epoch): ``irregular``."""

    conn: sqlite3.Connection
    committed: dict[str, int]
    tops: dict[str, int] = field(default_factory=dict)
    before: dict[str, int] = field(default_factory=dict)
    dirty: set[tuple[str, int, str, str, int]] = field(default_factory=set)
    minutes: set[tuple[str, int, str, int]] = field(default_factory=set)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    appended: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    irregular: set[str] = field(default_factory=set)
    marks: list[tuple[str, int]] = field(default_factory=list)  # for _SET_CONTIGUOUS
    conflicts: list[tuple[str, str]] = field(default_factory=list)  # (device, one line)

    def flush(self) -> None:
        """Insert the pending window rows.

        Raises:
            sqlite3.Error: SQLite failed.
        """
        if self.rows:
            self.conn.executemany(_INSERT_WINDOW, self.rows)
            self.rows.clear()

    def advance(self, device_id: str, cached: int | None) -> int:
        """Advance the device's contiguous mark over what the batch stored; returns it.

        ``cached`` is the committed mark (None: unknown). When it was also the highest
        sequence stored before the batch and the batch only appended ranges above it
        (the usual case), the stored ranges past the mark are exactly those appended,
        in order: no need to read them back (see :func:`_advance_contiguous`); the new
        mark then joins ``marks``, for the caller to write with the others.

        Raises:
            sqlite3.Error: SQLite failed.
        """
        ranges = self.appended.get(device_id)
        if (
            cached is None
            or ranges is None
            or device_id in self.irregular
            or self.before.get(device_id) != cached
        ):
            return _advance_contiguous(self.conn, device_id)
        c = cached
        for lo, hi in ranges:
            if lo != c + 1:
                break
            c = hi
        if c != cached:
            self.marks.append((device_id, c))
        return c


def _store_message(
    batch: _Batch, m: MetricsMessage, stamped: tuple[MetricsWindow, ...] | None = None
) -> StoreOutcome:
    """Store one message inside the batch's transaction (rules in the module doc), with
    the windows ``stamped`` instead of its own when the ingest restamped them.

    Raises:
        sqlite3.Error: SQLite failed.
    """
    dev, lo, hi = m.device_id, m.seq_lo, m.seq_hi
    if len({w.key for w in m.windows}) != len(m.windows):
        log.warning("store: %s [%d, %d] rejected: two windows of one model and role", dev, lo, hi)
        return StoreOutcome.REJECTED
    conn, tops = batch.conn, batch.tops
    top = tops.get(dev)
    if top is None:  # the device's first message in the batch
        top = batch.committed.get(dev)
        if top is None:
            row = conn.execute("SELECT MAX(seq_hi) FROM windows WHERE device_id = ?", (dev,))
            top = int(row.fetchone()[0] or 0)
        tops[dev] = batch.before[dev] = top
    if lo > top:  # the usual message: the next sequence, nothing to compare with
        batch.appended.setdefault(dev, []).append((lo, hi))
        return _insert(batch, m, stamped)
    batch.irregular.add(dev)
    batch.flush()  # the reads below must see this batch's rows
    below = conn.execute(
        "SELECT seq_lo, seq_hi FROM windows WHERE device_id = ? AND seq_lo < ?"
        " ORDER BY seq_lo DESC LIMIT 1",
        (dev, lo),
    ).fetchone()
    if below is not None and below[1] >= lo:
        if below[1] >= hi:
            return StoreOutcome.DUPLICATE
        return _reject(batch, m, (int(below[0]), int(below[1])))
    inner = [
        (int(a), int(b))
        for a, b in conn.execute(
            "SELECT DISTINCT seq_lo, seq_hi FROM windows WHERE device_id = ?"
            " AND seq_lo BETWEEN ? AND ? ORDER BY seq_lo",
            (dev, lo, hi),
        )
    ]
    if inner and inner[-1][1] > hi:
        return _reject(batch, m, inner[-1])
    if sum(b - a + 1 for a, b in inner) == hi - lo + 1:
        if inner == [(lo, hi)]:
            _check_same_windows(batch, m)
        return StoreOutcome.DUPLICATE
    if inner:
        # The message already counts the stored windows: check that it contains them
        # (what is left after subtracting them is what the hub never saw), then let
        # it replace them, so each prediction is counted exactly once.
        stored = conn.execute(
            "SELECT COALESCE(original, payload) FROM windows"
            " WHERE device_id = ? AND seq_lo BETWEEN ? AND ?",
            (dev, lo, hi),
        ).fetchall()
        try:
            parts = [MetricsWindow.from_json(json.loads(r[0])) for r in stored]
            _subtract_all(m.windows, parts)
        except (ValueError, ValidationError) as exc:
            log.warning("store: %s [%d, %d] rejected: %s", dev, lo, hi, exc)
            return StoreOutcome.REJECTED
        replaced = conn.execute(
            "SELECT model, version, role, start FROM windows"
            " WHERE device_id = ? AND seq_lo BETWEEN ? AND ?",
            (dev, lo, hi),
        ).fetchall()
        batch.dirty.update(
            (str(model), int(version), str(role), dev, hour_of(float(start)))
            for model, version, role, start in replaced
        )
        batch.minutes.update(
            (str(model), int(version), str(role), minute_of(float(start)))
            for model, version, role, start in replaced
        )
        conn.execute(
            "DELETE FROM windows WHERE device_id = ? AND seq_lo BETWEEN ? AND ?", (dev, lo, hi)
        )
    return _insert(batch, m, stamped)


def _insert(
    batch: _Batch, m: MetricsMessage, stamped: tuple[MetricsWindow, ...] | None = None
) -> StoreOutcome:
    """Add the message's windows (``stamped`` ones, keeping the device's, when given) to
    the batch's pending rows."""
    dev, lo, hi = m.device_id, m.seq_lo, m.seq_hi
    if stamped is None:
        batch.rows += [_window_row(dev, lo, hi, w) for w in m.windows]
        windows: Sequence[MetricsWindow] = m.windows
    else:
        batch.rows += [
            _window_row(dev, lo, hi, s, None if s is w else w)
            for s, w in zip(stamped, m.windows, strict=True)
        ]
        windows = stamped
    batch.dirty.update(
        (w.model_name, w.model_version, w.role, dev, hour_of(w.start)) for w in windows
    )
    batch.minutes.update(
        (w.model_name, w.model_version, w.role, minute_of(w.start)) for w in windows
    )
    batch.tops[dev] = max(batch.tops.get(dev, 0), hi)
    return StoreOutcome.STORED


class _Epochs:
    """Maps each message's epoch onto its device's hub sequences, inside one write
    transaction (see the module doc). ``learned`` holds the cache entries to keep once
    the transaction commits."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        cache: dict[str, list[tuple[str, int]]],
        now: float,
        batch: _Batch,
    ) -> None:
        """``batch``: the transaction's (a new epoch's base reads the windows stored so
        far, and moves the device's contiguous mark)."""
        self.conn, self.cache, self.now, self.batch = conn, cache, now, batch
        self.learned: dict[str, list[tuple[str, int]]] = {}
        self.touched: dict[tuple[str, str], None] = {}  # (device, epoch), in order

    def _known(self, device_id: str) -> list[tuple[str, int]]:
        known = self.learned.get(device_id) or self.cache.get(device_id)
        if known is None:
            rows = self.conn.execute(
                "SELECT epoch, base FROM device_epochs WHERE device_id = ? ORDER BY id",
                (device_id,),
            ).fetchall()
            known = [(str(e), int(b)) for e, b in rows]
            self.cache[device_id] = known
        return known

    def current(self, device_id: str) -> str:
        """The device's newest epoch."""
        return self._known(device_id)[-1][0]

    def base(self, device_id: str, epoch: str) -> int:
        """The epoch's base, a new block's when the epoch is new (recorded).

        Raises:
            sqlite3.Error: SQLite failed.
        """
        known = self._known(device_id)
        for e, b in known:
            if e == epoch:
                return b
        self.batch.flush()
        self.batch.irregular.add(device_id)
        row = self.conn.execute(
            "SELECT MAX(seq_hi) FROM windows WHERE device_id = ?", (device_id,)
        ).fetchone()
        top = max([int(row[0] or 0), *(b for _, b in known)])
        # Legacy data (no epochs yet, empty epoch) stays at base 0.
        base = (top // EPOCH_BLOCK + 1) * EPOCH_BLOCK if known or (epoch and top) else 0
        if known:
            log.info(
                "store: %s started a new sequence space (epoch %r at hub sequence %d)",
                device_id, epoch, base,
            )  # fmt: skip
        self.conn.execute(
            "INSERT INTO device_epochs (device_id, epoch, base, since) VALUES (?, ?, ?, ?)",
            (device_id, epoch, base, self.now),
        )
        # The earlier life's gaps can never be filled: acknowledge from the base on.
        self.conn.execute(
            "INSERT INTO device_seqs (device_id, contiguous) VALUES (?, ?)"
            " ON CONFLICT (device_id) DO UPDATE"
            " SET contiguous = MAX(contiguous, excluded.contiguous)",
            (device_id, base),
        )
        self.learned[device_id] = [*known, (epoch, base)]
        return base

    def store(
        self, m: MetricsMessage, stamped: tuple[MetricsWindow, ...] | None = None
    ) -> StoreOutcome:
        """Store one message in its epoch's block (see :func:`_store_message`; ``stamped``:
        its restamped windows).

        Raises:
            sqlite3.Error: SQLite failed.
        """
        if m.seq_hi >= EPOCH_BLOCK:
            log.warning(
                "store: %s [%d, %d] rejected: sequences stop at %d",
                m.device_id, m.seq_lo, m.seq_hi, EPOCH_BLOCK - 1,
            )  # fmt: skip
            return StoreOutcome.REJECTED
        base = self.base(m.device_id, m.epoch)
        self.touched[(m.device_id, m.epoch)] = None
        hub = m
        if base:
            hub = MetricsMessage(m.device_id, m.seq_lo + base, m.seq_hi + base, m.windows, m.epoch)
        outcome = _store_message(self.batch, hub, stamped)
        if outcome is StoreOutcome.STORED and m.epoch != self.current(m.device_id):
            self._check_live(m, stamped or m.windows)
        return outcome

    def _check_live(self, m: MetricsMessage, windows: Sequence[MetricsWindow]) -> None:
        """An older epoch stored windows: a conflict if they were made after the current
        epoch's first window (both alive), not if they are a wiped outbox's late ones."""
        current_base = self._known(m.device_id)[-1][1]
        self.batch.flush()
        row = self.conn.execute(
            "SELECT MIN(start) FROM windows WHERE device_id = ? AND seq_lo > ?",
            (m.device_id, current_base),
        ).fetchone()
        first = None if row is None or row[0] is None else float(row[0])
        latest = max(w.start for w in windows) if windows else None
        if first is not None and latest is not None and latest >= first:
            self.batch.conflicts.append(
                (
                    m.device_id,
                    f"two live sequence spaces: epoch {m.epoch!r} sent windows [{m.seq_lo},"
                    f" {m.seq_hi}] made after epoch {self.current(m.device_id)!r} began",
                )
            )

    def acks(self, contiguous: dict[str, int]) -> dict[tuple[str, str], int]:
        """The mark to acknowledge per (device, epoch) touched, in the epoch's numbering;
        ``contiguous``: each touched device's current mark (hub sequences).

        Raises:
            sqlite3.Error: SQLite failed.
        """
        out: dict[tuple[str, str], int] = {}
        for device_id, epoch in self.touched:
            known = self._known(device_id)
            base = next(b for e, b in known if e == epoch)
            if epoch == known[-1][0]:
                out[(device_id, epoch)] = max(0, contiguous[device_id] - base)
                continue
            # An older epoch: its own mark, up to the next epoch's base.
            limit = min((b for _, b in known if b > base), default=EPOCH_BLOCK + base)
            row = self.conn.execute(
                "SELECT contiguous FROM device_epochs WHERE device_id = ? AND epoch = ?",
                (device_id, epoch),
            ).fetchone()
            start = int(row[0]) if row is not None else 0
            mark = _advance_from(self.conn, device_id, base + start, limit) - base
            if mark != start:
                self.conn.execute(
                    "UPDATE device_epochs SET contiguous = ? WHERE device_id = ? AND epoch = ?",
                    (mark, device_id, epoch),
                )
            out[(device_id, epoch)] = mark
        return out


def _edge_rows(
    conn: sqlite3.Connection,
    model: str,
    version: int,
    role: str,
    devices: Sequence[str] | None,
    since: float,
    before: float,
) -> list[Any]:
    """Payloads of the windows that start before ``before`` (the first whole hour) and
    end at or after ``since``: short windows by the start index (they start at most
    :data:`LONG_WINDOW_S` before ``since``), long ones by the partial end index."""
    # The span bound is a literal (an int constant), not a parameter: SQLite uses a
    # partial index only when the query's WHERE visibly implies the index's.
    short = (
        "SELECT payload FROM windows WHERE model = ? AND version = ? AND role = ?"  # noqa: S608
        f' AND start >= ? AND start < ? AND "end" >= ? AND "end" - start <= {LONG_WINDOW_S}'
    )
    long = (
        "SELECT payload FROM windows WHERE model = ? AND version = ? AND role = ?"  # noqa: S608
        f' AND "end" >= ? AND start < ? AND "end" - start > {LONG_WINDOW_S}'
    )
    short_args = (model, version, role, since - LONG_WINDOW_S, before, since)
    long_args = (model, version, role, since, before)
    rows: list[Any] = []
    for device_id in [None] if devices is None else devices:
        extra, more = ("", ()) if device_id is None else (" AND device_id = ?", (device_id,))
        rows += conn.execute(short + extra, (*short_args, *more)).fetchall()
        rows += conn.execute(long + extra, (*long_args, *more)).fetchall()
    return rows


def _roll_bucket(
    conn: sqlite3.Connection, model: str, version: int, role: str, device_id: str, hour: int
) -> None:
    """Recompute one device's hour bucket from its stored windows (inside a transaction)."""
    rows = conn.execute(
        "SELECT payload FROM windows WHERE device_id = ? AND model = ? AND version = ?"
        " AND role = ? AND start >= ? AND start < ?",
        (device_id, model, version, role, hour * HOUR_S, (hour + 1) * HOUR_S),
    ).fetchall()
    _put_rollup(conn, (model, version, role, device_id, hour), [r[0] for r in rows])


def _roll_minute(
    conn: sqlite3.Connection, model: str, version: int, role: str, minute: int
) -> None:
    """Recompute one fleet minute bucket from the stored windows starting in it."""
    rows = conn.execute(
        "SELECT payload FROM windows WHERE model = ? AND version = ? AND role = ?"
        " AND start >= ? AND start < ?",
        (model, version, role, minute * MINUTE_S, (minute + 1) * MINUTE_S),
    ).fetchall()
    key = (model, version, role, minute)
    merged = _rollup_document("minute roll-up", key, [r[0] for r in rows])
    if merged is None:
        conn.execute(
            "DELETE FROM rollups_minute WHERE model = ? AND version = ? AND role = ?"
            " AND minute = ?",
            key,
        )
        return
    conn.execute(
        "INSERT OR REPLACE INTO rollups_minute (model, version, role, minute, n, windows,"
        " payload) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (*key, merged["n"], len(rows), orjson.dumps(merged).decode()),
    )


def _roll_fleet_bucket(
    conn: sqlite3.Connection, model: str, version: int, role: str, hour: int
) -> None:
    """Recompute the fleet-wide hour bucket from its device buckets."""
    rows = conn.execute(
        "SELECT payload FROM rollups WHERE model = ? AND version = ? AND role = ?"
        " AND hour = ? AND device_id != ''",
        (model, version, role, hour),
    ).fetchall()
    _put_rollup(conn, (model, version, role, "", hour), [r[0] for r in rows])


class StoredMerge(NamedTuple):
    """What :func:`merge_stored` made of some stored rows."""

    window: MetricsWindow | None  # checked against the wire contract; None: nothing merged
    document: dict[str, Any] | None  # the same as a document (what roll-ups store)
    skipped: int  # rows left out
    why: str  # why they were left out


def merge_stored(payloads: Sequence[Any]) -> StoredMerge:
    """Merge stored window documents (JSON) of one model, version and role.

    The fast path merges the documents of the most common shape (see
    :func:`~edge_agent.contract.window.largest_mergeable`) and checks the result against
    the wire contract; when that fails (an unreadable row, or counts past the contract's 2**53,
    as absurd rows stored before the plausibility check could give), it merges row by
    row, smallest first, and keeps every row that merges within the contract's bounds.
    """
    try:
        docs = [orjson.loads(p) for p in payloads]
        fitting = largest_mergeable(docs)
        merged = merge_documents(fitting)
        checked = MetricsWindow.from_json(merged)
        left_out = len(docs) - len(fitting)
        return StoredMerge(checked, merged, left_out, "their count lengths differ from others'")
    except (ValueError, TypeError, OverflowError, ValidationError) as exc:
        first = f"they cannot be merged ({exc})"
    window: MetricsWindow | None = None
    skipped = 0
    parsed: list[MetricsWindow] = []
    for payload in payloads:
        try:
            parsed.append(MetricsWindow.from_json(orjson.loads(payload)))
        except (ValueError, TypeError, OverflowError, ValidationError):
            skipped += 1
    # smallest first: when the sum outgrows the contract, the absurd rows are left out
    for one in sorted(parsed, key=lambda w: w.n):
        try:
            candidate = one if window is None else merge_windows(window, one)
            MetricsWindow.from_json(candidate.to_json())  # still within the contract
        except (ValueError, OverflowError, ValidationError):
            skipped += 1
            continue
        window = candidate
    return StoredMerge(window, None if window is None else window.to_json(), skipped, first)


def _rollup_document(
    what: str, key: tuple[Any, ...], payloads: Sequence[Any]
) -> dict[str, Any] | None:
    """The merged document a roll-up bucket stores (None: delete the bucket); rows left
    out are logged in one line."""
    if not payloads:
        return None
    merged = merge_stored(payloads)
    if merged.skipped:
        log.warning(
            "store: %s %s leaves out %d window(s): %s", what, key, merged.skipped, merged.why
        )
    return merged.document


def _put_rollup(conn: sqlite3.Connection, key: tuple[Any, ...], payloads: list[str]) -> None:
    merged = _rollup_document("roll-up", key, payloads)
    if merged is None:
        conn.execute(
            "DELETE FROM rollups WHERE model = ? AND version = ? AND role = ?"
            " AND device_id = ? AND hour = ?",
            key,
        )
        return
    conn.execute(
        "INSERT OR REPLACE INTO rollups (model, version, role, device_id, hour, n, windows,"
        " payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (*key, merged["n"], len(payloads), orjson.dumps(merged).decode()),
    )


def _subtract_all(
    incoming: Sequence[MetricsWindow], stored: Sequence[MetricsWindow]
) -> tuple[MetricsWindow, ...]:
    """The incoming windows less the stored ones of the same model, version and role.

    Raises:
        ValidationError: a stored window has no incoming counterpart, or is not
            contained in it.
    """
    rest = {w.key: w for w in incoming}
    for part in stored:
        total = rest.get(part.key)
        if total is None:
            raise ValidationError(f"stored window {part.key} has no counterpart in the range")
        rest[part.key] = subtract_windows(total, part)
    return tuple(rest[w.key] for w in incoming)


def _reject(batch: _Batch, m: MetricsMessage, stored: tuple[int, int]) -> StoreOutcome:
    line = (
        f"metrics range [{m.seq_lo}, {m.seq_hi}] partially overlaps the stored range"
        f" [{stored[0]}, {stored[1]}]: two devices may share this id and sequence space"
    )
    log.warning("store: %s rejected: %s", m.device_id, line)
    batch.conflicts.append((m.device_id, line))
    return StoreOutcome.REJECTED


def _check_same_windows(batch: _Batch, m: MetricsMessage) -> None:
    """A resent range must carry the windows stored for it; other windows under the same
    range mean two devices share the id and its sequence space (a cloned outbox)."""
    stored = sorted(
        str(r[0])
        for r in batch.conn.execute(
            "SELECT COALESCE(original, payload) FROM windows"
            " WHERE device_id = ? AND seq_lo = ? AND seq_hi = ?",
            (m.device_id, m.seq_lo, m.seq_hi),
        )
    )
    sent = sorted(_payload(w) for w in m.windows)
    if stored != sent:
        batch.conflicts.append(
            (
                m.device_id,
                f"metrics range [{m.seq_lo}, {m.seq_hi}] arrived again with other windows:"
                " two devices share this id and sequence space (a cloned outbox?)",
            )
        )


def _payload(w: MetricsWindow) -> str:
    # Validated windows hold only finite numbers, so orjson's output is plain JSON. The
    # windows the ingest parsed keep their received document: not built a second time.
    return orjson.dumps(w.wire_json()).decode()


def _window_row(
    dev: str, lo: int, hi: int, w: MetricsWindow, original: MetricsWindow | None = None
) -> tuple[Any, ...]:
    """The ``windows`` row of ``w``; ``original``: the device's window ``w`` restamps."""
    kept = None if original is None else _payload(original)
    row = (dev, lo, hi, w.model_name, w.model_version, w.role, w.start, w.end, w.n)
    return (*row, _payload(w), kept)


def _read_contiguous(conn: sqlite3.Connection, device_id: str) -> int:
    row = conn.execute(
        "SELECT contiguous FROM device_seqs WHERE device_id = ?", (device_id,)
    ).fetchone()
    return 0 if row is None else int(row[0])


def _advance_contiguous(conn: sqlite3.Connection, device_id: str) -> int:
    """Advance the device's contiguous mark over newly stored ranges; returns it.

    Stored ranges are disjoint, so the only one that can cover ``c + 1`` is the one
    starting last at or before it: one indexed look-up per range advanced over.
    """
    start = c = _read_contiguous(conn, device_id)
    while True:
        row = conn.execute(
            "SELECT seq_hi FROM windows WHERE device_id = ? AND seq_lo <= ?"
            " ORDER BY seq_lo DESC LIMIT 1",
            (device_id, c + 1),
        ).fetchone()
        if row is None or int(row[0]) <= c:
            break
        c = int(row[0])
    if c != start:
        _set_contiguous(conn, device_id, c)
    return c


def _advance_from(conn: sqlite3.Connection, device_id: str, c: int, limit: int) -> int:
    """The highest ``n >= c`` such that every hub sequence in ``c+1..n`` is stored, over
    ranges that end below ``limit`` (an older epoch's mark, which stops at the next
    epoch's base)."""
    while True:
        row = conn.execute(
            "SELECT seq_hi FROM windows WHERE device_id = ? AND seq_lo <= ?"
            " ORDER BY seq_lo DESC LIMIT 1",
            (device_id, c + 1),
        ).fetchone()
        if row is None or int(row[0]) <= c or int(row[0]) >= limit:
            return c
        c = int(row[0])


def _set_contiguous(conn: sqlite3.Connection, device_id: str, contiguous: int) -> None:
    conn.execute(_SET_CONTIGUOUS, (device_id, contiguous))


def _where(*conditions: tuple[str, Any]) -> tuple[str, tuple[Any, ...]]:
    """A WHERE clause from the conditions whose value is not None."""
    used = [(sql, value) for sql, value in conditions if value is not None]
    if not used:
        return "", ()
    return " WHERE " + " AND ".join(sql for sql, _ in used), tuple(v for _, v in used)


def _json_text(value: Any) -> str:
    return canonical_bytes(value).decode()


def _model_columns(m: ModelVersion | None) -> tuple[str | None, int | None]:
    return (None, None) if m is None else (m.name, m.version)


def _model(name: Any, version: Any) -> ModelVersion | None:
    return None if name is None else ModelVersion(str(name), int(version))


def _device_record(row: Sequence[Any]) -> DeviceRecord:
    tags = json.loads(row[1])
    if not isinstance(tags, list):
        raise ValueError("tags are not a list")
    return DeviceRecord(
        id=str(row[0]),
        tags=tuple(str(t) for t in tags),
        enrolled_at=row[2],
        last_seen=row[3],
        online=bool(row[4]),
        offline_since=row[5],
        active=_model(row[6], row[7]),
        previous=_model(row[8], row[9]),
        shadow=_model(row[10], row[11]),
        health=json.loads(row[12]),
        buffer_depth=int(row[13]),
        state=None if row[14] is None else json.loads(row[14]),
        revoked_at=row[15],
    )


def _event_record(row: Sequence[Any]) -> EventRecord:
    return EventRecord(
        id=int(row[0]),
        event=Event(
            device_id=str(row[1]),
            ts=float(row[2]),
            kind=EventKind(row[3]),
            model=_model(row[4], row[5]),
            directive_seq=row[6],
            progress=row[7],
            detail=str(row[8]),
        ),
    )
