"""The hash-chained audit log: each test is named after the tampering it catches."""

from __future__ import annotations

import itertools
import sqlite3
import threading
from pathlib import Path

import pytest

from hub.audit import GENESIS, AuditError, AuditLog, entry_hash


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        self.now += 1.5
        return self.now


def filled(path: Path, n: int = 5) -> AuditLog:
    log = AuditLog(path, clock=Clock())
    for i in range(n):
        log.append("alice", "rollout.start", f"model-{i}", {"stage": i, "share": 0.1 * i})
    return log


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def test_valid_chain_verifies(tmp_path: Path) -> None:
    log = filled(tmp_path / "a.db")
    result = log.verify()
    assert result.ok and result.checked == 5 and result.first_bad_id is None
    assert str(result).startswith("ok: 5 entries, head 5")
    entries = log.entries()
    assert [e.id for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].prev_hash == GENESIS
    for before, after in itertools.pairwise(entries):
        assert after.prev_hash == before.hash
    e = entries[2]
    assert e.hash == entry_hash(e.prev_hash, e.ts, e.actor, e.action, e.target, e.details)
    assert e.details == {"stage": 2, "share": pytest.approx(0.2)}
    assert log.verify(anchor=log.head()).ok
    assert [x.id for x in log.entries(after_id=3, limit=1)] == [4]


def test_empty_log_verifies(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.db")
    assert log.head() is None
    assert log.verify().ok and str(log.verify()) == "ok: 0 entries, empty"


def test_append_returns_the_stored_entry(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.db", clock=Clock())
    first = log.append("ci", "bundle.sign", "m:1", {"digest": "ab" * 32})
    assert log.entries() == [first]
    assert log.head() == (first.id, first.hash)


def test_edited_entry_detected(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    log = filled(path)
    raw(path).execute("""UPDATE audit SET details = '{"stage":9}' WHERE id = 3""")
    result = log.verify()
    assert not result.ok
    assert (result.first_bad_id, result.problem) == (3, "edited")
    assert str(result).startswith("entry 3: edited:")
    assert "\n" not in str(result)


def test_edited_actor_detected(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    log = filled(path)
    raw(path).execute("UPDATE audit SET actor = 'mallory' WHERE id = 2")
    assert (log.verify().first_bad_id, log.verify().problem) == (2, "edited")


def test_edited_and_rehashed_entry_detected_at_the_next(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    log = filled(path)
    e = log.entries()[1]
    forged = entry_hash(e.prev_hash, e.ts, "mallory", e.action, e.target, e.details)
    raw(path).execute("UPDATE audit SET actor = 'mallory', hash = ? WHERE id = 2", (forged,))
    result = log.verify()
    assert (result.first_bad_id, result.problem) == (3, "broken")


def test_removed_entry_detected(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    log = filled(path)
    raw(path).execute("DELETE FROM audit WHERE id = 3")
    result = log.verify()
    assert (result.first_bad_id, result.problem) == (4, "removed")
    assert "3..3" in str(result)


def test_removed_first_entry_detected(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    log = filled(path)
    raw(path).execute("DELETE FROM audit WHERE id = 1")
    result = log.verify()
    assert (result.first_bad_id, result.problem) == (2, "removed")


def test_truncated_tail_detected_with_anchor(tmp_path: Path) -> None:
    """Cutting off the tail leaves a valid shorter chain: only an external anchor shows it."""
    path = tmp_path / "a.db"
    log = filled(path)
    anchor = log.head()
    assert anchor is not None and anchor[0] == 5
    raw(path).execute("DELETE FROM audit WHERE id >= 4")
    assert log.verify().ok  # the chain alone cannot tell
    result = log.verify(anchor=anchor)
    assert (result.ok, result.first_bad_id, result.problem) == (False, 5, "truncated")
    assert "ends at entry 3" in str(result)


def test_rewritten_chain_detected_with_anchor(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    log = filled(path, 3)
    anchor = log.head()
    assert anchor is not None
    raw(path).execute("DELETE FROM audit")
    raw(path).execute("DELETE FROM sqlite_sequence WHERE name = 'audit'")
    forger = AuditLog(path, clock=Clock())  # a consistent, different chain of the same length
    for i in range(3):
        forger.append("mallory", "rollout.start", f"model-{i}", {"stage": i})
    assert forger.verify().ok
    result = forger.verify(anchor=anchor)
    assert (result.first_bad_id, result.problem) == (3, "edited")


def test_reordered_entries_detected(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    log = filled(path)
    conn = raw(path)
    cols = "ts, actor, action, target, details, prev_hash, hash"
    two = conn.execute(f"SELECT {cols} FROM audit WHERE id = 2").fetchone()
    three = conn.execute(f"SELECT {cols} FROM audit WHERE id = 3").fetchone()
    sets = ", ".join(f"{c.strip()} = ?" for c in cols.split(","))
    conn.execute(f"UPDATE audit SET {sets} WHERE id = 2", three)
    conn.execute(f"UPDATE audit SET {sets} WHERE id = 3", two)
    result = log.verify()
    assert (result.first_bad_id, result.problem) == (2, "reordered")
    assert "follows entry 3, not entry 1" in str(result)


def test_concurrent_appends_keep_a_valid_chain(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    shared = AuditLog(path)
    other = AuditLog(path)  # a second connection to the same file
    errors: list[BaseException] = []

    def work(log: AuditLog, who: str) -> None:
        try:
            for i in range(100):
                log.append(who, "act", f"t{i}", {"i": i})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=work, args=(shared, "a")),
        threading.Thread(target=work, args=(shared, "b")),
        threading.Thread(target=work, args=(other, "c")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    result = shared.verify()
    assert result.ok and result.checked == 300, str(result)


def test_given_connection_is_used_and_not_closed() -> None:
    conn = sqlite3.connect(":memory:")
    with AuditLog(conn) as log:
        log.append("ops", "key.rotate", "root", None)
    assert conn.execute("SELECT count(*) FROM audit").fetchone() == (1,)
    assert AuditLog(conn).verify().ok


def test_bad_arguments_refused(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.db")
    with pytest.raises(AuditError, match="actor must be a non-empty string"):
        log.append("", "act", "t")
    with pytest.raises(AuditError, match="details are not canonical JSON"):
        log.append("a", "act", "t", {"x": float("nan")})
    with pytest.raises(AuditError, match=r"limit must be in \[1, 1000\], got 0"):
        log.entries(limit=0)
    with pytest.raises(AuditError, match="anchor id must be >= 1, got 0"):
        log.verify(anchor=(0, "x"))
    assert log.verify().checked == 0  # nothing was written
