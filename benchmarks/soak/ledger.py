"""Each agent's own record of what it produced, written in the same transaction as the
outbox row it describes.

The fleet's worker processes call :func:`install` first (``WorkerSpec.setup``): the
agents then open a :class:`LedgerOutbox`, which is the product's outbox plus one line per
sequence it hands out (the predictions counted in that row's windows) in a
``soak_ledger`` table of the same SQLite file, inside the same transaction. A kill -9
therefore never leaves a row without its line, nor a line without its row, and the
ledger survives every restart on the same data directory, and every acknowledgement
(which deletes outbox rows, never ledger lines).

Only the soak installs it; the product's outbox is unchanged.

:func:`install` also gives each agent an :class:`OffsetClock`, the harness's clock-jump
switch: seconds (a float) in ``<data_dir>/soak-clock-offset`` are added to the agent's
wall clock; removing the file jumps back to time.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.contract.window import MetricsWindow
from edge_agent.daemon.outbox import Outbox

_TABLE = (
    "CREATE TABLE IF NOT EXISTS soak_ledger ("
    " seq INTEGER PRIMARY KEY, created REAL NOT NULL, version INTEGER NOT NULL,"
    " windows INTEGER NOT NULL, predictions INTEGER NOT NULL)"
)


#: Seconds added to a device's agent clock, while this file exists in its data directory.
CLOCK_OFFSET_FILE = "soak-clock-offset"


class LedgerOutbox(Outbox):
    """The product's :class:`~edge_agent.daemon.outbox.Outbox`, recording every new sequence."""

    def __init__(self, path: Path, *args: Any, **kwargs: Any) -> None:
        """Open the outbox, then make sure the ledger table exists.

        Raises:
            OutboxError: as :class:`Outbox`.
            sqlite3.Error: the ledger table cannot be created.
        """
        super().__init__(path, *args, **kwargs)
        with self._lock:
            self._open_conn().execute(_TABLE)

    def _insert_row(
        self, conn: sqlite3.Connection, windows: Sequence[MetricsWindow], payload: bytes
    ) -> int:
        seq = super()._insert_row(conn, windows, payload)
        conn.execute(
            "INSERT INTO soak_ledger (seq, created, version, windows, predictions)"
            " VALUES (?, ?, ?, ?, ?)",
            (seq, self._clock(), windows[0].model_version, len(windows), sum(w.n for w in windows)),
        )
        return seq


class OffsetClock:
    """A wall clock that jumps by the seconds in ``<data_dir>/soak-clock-offset`` (looked at
    twice a second at most; no file: no offset)."""

    def __init__(self, data_dir: Path) -> None:
        """Follow the offset file of ``data_dir``."""
        self.file = data_dir / CLOCK_OFFSET_FILE
        self.offset = 0.0
        self._looked = -1.0

    def __call__(self) -> float:
        """The time now, shifted by the current offset."""
        mono = time.monotonic()
        if mono - self._looked >= 0.5:
            self._looked = mono
            try:
                self.offset = float(self.file.read_text())
            except (OSError, ValueError):
                self.offset = 0.0
        return time.time() + self.offset


def set_clock_offset(data_dir: Path, offset_s: float | None) -> None:
    """Make the agent of ``data_dir`` see its clock jump by ``offset_s`` (None: back)."""
    f = data_dir / CLOCK_OFFSET_FILE
    if offset_s is None:
        f.unlink(missing_ok=True)
    else:
        tmp = f.with_suffix(".tmp")
        tmp.write_text(repr(offset_s))
        tmp.replace(f)


def install() -> None:
    """Make agents started in this process use :class:`LedgerOutbox` and an
    :class:`OffsetClock` (a worker's setup)."""
    import edge_agent.daemon.agent

    agent_cls = edge_agent.daemon.agent.Agent
    if not getattr(agent_cls, "_soak_clock", False):
        original = agent_cls.__init__

        def init(self: Any, config: Any, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("clock", OffsetClock(config.data_dir))
            original(self, config, *args, **kwargs)

        setattr(agent_cls, "__init__", init)  # noqa: B010 - replaced on purpose
        setattr(agent_cls, "_soak_clock", True)  # noqa: B010
    setattr(edge_agent.daemon.agent, "Outbox", LedgerOutbox)  # noqa: B010 - replaced on purpose


@dataclass(frozen=True)
class Produced:
    """What one device's agent produced, read from its ledger and outbox state."""

    last_seq: int  # sequences handed out (the outbox's own counter)
    sequences: int  # ledger lines (must equal last_seq: every row recorded)
    predictions: int  # predictions counted in all those rows' windows
    epoch: str


def read_produced(outbox_db: Path) -> Produced:
    """Read a stopped (or running: WAL readers do not block) agent's ledger.

    Raises:
        sqlite3.Error: the file is not an outbox with a ledger.
    """
    conn = sqlite3.connect(f"file:{outbox_db}?mode=ro", uri=True, timeout=30)
    try:
        last_seq, epoch = conn.execute("SELECT last_seq, epoch FROM outbox_state").fetchone()
        count, total = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(predictions), 0) FROM soak_ledger"
        ).fetchone()
    finally:
        conn.close()
    return Produced(int(last_seq), int(count), int(total), str(epoch))
