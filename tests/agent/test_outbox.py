"""The SQLite outbox: durable, ordered, bounded, and never losing a count.

Agent-only: nothing here imports the hub. Real SQLite files in ``tmp_path``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import sqlite3
import stat
import subprocess
import sys
from functools import reduce
from pathlib import Path

import numpy as np
import pytest

from edge_agent.contract.canonical import canonical_bytes
from edge_agent.contract.messages import Ack, MetricsMessage
from edge_agent.contract.reference import ReferenceStats
from edge_agent.contract.window import MetricsWindow, merge_windows
from edge_agent.daemon import outbox
from edge_agent.daemon.outbox import Outbox, OutboxRow
from edge_agent.errors import OutboxError, ValidationError
from edge_agent.inference.accumulator import WindowAccumulator

ROOT = Path(__file__).resolve().parents[2]
F, C = 4, 3


def make_reference(seed: int = 0) -> ReferenceStats:
    """Reference statistics from a small random dataset, as the hub's bundler derives them."""
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(400, F))
    probs = rng.dirichlet(np.ones(C), size=400)
    return ReferenceStats.from_data(data, probs, [f"f{j}" for j in range(F)], ["a", "b", "c"], 16)


REF = make_reference()


def make_window(
    seed: int, n: int = 50, role: str = "active", version: int = 1, start: float = 0.0
) -> MetricsWindow:
    rng = np.random.default_rng(seed)
    acc = WindowAccumulator(REF, "demo", version, role, clock=lambda: start)
    acc.record(rng.normal(size=(n, F)), rng.dirichlet(np.ones(C), size=n), 0.002)
    acc.record_error("invoke_error", seed % 3 + 1)
    window = acc.close(now=start + 60.0)
    assert window is not None
    return window


WINDOWS = [make_window(seed, n=20 + seed) for seed in range(8)]


def nth_window(i: int, **changes) -> MetricsWindow:
    """Window ``i`` of a stream: varied counts, one minute each."""
    w = WINDOWS[i % len(WINDOWS)]
    return dataclasses.replace(w, start=60.0 * i, end=60.0 * (i + 1), **changes)


def all_rows(box: Outbox) -> list[OutboxRow]:
    return box.pending(limit=1_000_000)


def assert_laminar_and_contiguous(rows: list[OutboxRow], first: int = 1) -> None:
    """Ranges are disjoint, in order, and cover every sequence from ``first``."""
    expected = first
    for row in rows:
        assert row.seq_lo == expected and row.seq_lo <= row.seq_hi
        expected = row.seq_hi + 1


def totals(windows) -> tuple:
    merged = reduce(merge_windows, windows)
    return (
        merged.n,
        tuple(f.counts for f in merged.features),
        merged.class_counts,
        merged.latency,
        merged.errors,
    )


# --- basic behaviour ------------------------------------------------------------------------


def test_append_pending_ack_in_sequence(tmp_path):
    with Outbox(tmp_path / "outbox.db") as box:
        seqs = [box.append(nth_window(i)) for i in range(5)]
        assert seqs == [1, 2, 3, 4, 5]
        rows = box.pending()
        assert [(r.seq_lo, r.seq_hi) for r in rows] == [(s, s) for s in seqs]
        assert rows[0].payload == canonical_bytes([nth_window(0).to_json()])
        assert rows[0].size == len(rows[0].payload)
        assert (rows[0].model_name, rows[0].model_version, rows[0].role) == ("demo", 1, "active")
        assert [r.window() for r in rows] == [nth_window(i) for i in range(5)]
        assert [r.seq_lo for r in box.pending(limit=2, after=2)] == [3, 4]
        assert box.depth() == 5 and box.size_bytes() == sum(r.size for r in rows)
        assert box.ack(3) == 3
        assert [r.seq_lo for r in box.pending()] == [4, 5]
        assert box.ack(3) == 0


def test_sequences_never_go_backwards_after_acks_and_restarts(tmp_path):
    path = tmp_path / "outbox.db"
    with Outbox(path) as box:
        for i in range(3):
            box.append(nth_window(i))
        assert box.ack(3) == 3 and box.depth() == 0
    with Outbox(path) as box:
        assert box.last_seq == 3
        assert box.append(nth_window(3)) == 4


def test_outbox_file_is_private_and_in_wal_mode(tmp_path):
    path = tmp_path / "data" / "outbox.db"
    with Outbox(path) as box:
        box.append(nth_window(0))
        for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
        other = sqlite3.connect(path)
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert other.execute("SELECT name FROM migrations").fetchall() == [
            ("0001_outbox",),
            ("0002_window_groups",),
            ("0003_epoch",),
            ("0004_checkpoint",),
        ]
        other.close()


def test_world_readable_outbox_is_made_private_on_open(tmp_path):
    path = tmp_path / "outbox.db"
    Outbox(path).close()
    path.chmod(0o644)
    Outbox(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_reopening_does_not_reapply_migrations(tmp_path):
    path = tmp_path / "outbox.db"
    with Outbox(path) as box:
        box.append(nth_window(0))
    with Outbox(path) as box:
        assert box.depth() == 1 and box.last_seq == 1


def test_file_that_is_not_an_outbox_rejected(tmp_path):
    path = tmp_path / "outbox.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(OutboxError, match="cannot open") as info:
        Outbox(path)
    assert "\n" not in str(info.value)


def test_closed_outbox_refuses_with_outbox_error(tmp_path):
    box = Outbox(tmp_path / "outbox.db")
    box.close()
    box.close()
    with pytest.raises(OutboxError, match="closed"):
        box.append(nth_window(0))
    with pytest.raises(OutboxError, match="closed"):
        box.pending()


# --- budget and compaction -----------------------------------------------------------------


def test_shadow_stage_windows_closed_together_compact_and_keep_counts(tmp_path):
    """Active and shadow windows closed together share a row, so a shadow stage compacts."""
    groups = [[nth_window(i), nth_window(i, role="shadow", model_version=2)] for i in range(60)]
    one = len(canonical_bytes([w.to_json() for w in groups[0]]))
    budget = 10 * one
    with Outbox(tmp_path / "outbox.db", budget) as box:
        for group in groups:
            box.append(group)
            assert box.size_bytes() <= budget
        rows = all_rows(box)
        assert box.compactions > 0 and len(rows) < 60
        assert_laminar_and_contiguous(rows)
        for role_index in (0, 1):
            got = [r.windows()[role_index] for r in rows]
            assert {w.role for w in got} == {("active", "shadow")[role_index]}
            assert totals(got) == totals([g[role_index] for g in groups])


def test_rows_of_different_groups_never_merge(tmp_path):
    one = len(canonical_bytes([nth_window(0).to_json()]))
    with Outbox(tmp_path / "outbox.db", 4 * one) as box:
        for i in range(12):
            box.append(nth_window(i) if i % 2 else [nth_window(i), nth_window(i, role="shadow")])
        for r in all_rows(box):
            assert r.key in ("demo:1:active", "demo:1:active;demo:1:shadow")


def test_over_budget_compaction_keeps_every_count(tmp_path):
    windows = [nth_window(i) for i in range(60)]
    one = len(canonical_bytes(windows[0].to_json()))
    budget = 10 * one
    with Outbox(tmp_path / "outbox.db", budget) as box:
        for w in windows:
            box.append(w)
            assert box.size_bytes() <= budget
        rows = all_rows(box)
        assert box.compactions > 0 and len(rows) < 60
        assert_laminar_and_contiguous(rows)
        assert rows[-1].seq_hi == 60
        assert totals([r.window() for r in rows]) == totals(windows)
        for r in rows:  # each row is exactly the merge of the windows in its range
            expected = reduce(merge_windows, windows[r.seq_lo - 1 : r.seq_hi])
            got = r.window()
            assert (got.n, got.class_counts, got.start, got.end) == (
                expected.n,
                expected.class_counts,
                expected.start,
                expected.end,
            )
        # the newest windows keep their full time resolution, the oldest are coarsest
        assert rows[-1].seq_lo == rows[-1].seq_hi
        assert rows[0].seq_hi - rows[0].seq_lo >= rows[-2].seq_hi - rows[-2].seq_lo


def test_ack_keeps_a_compacted_row_that_reaches_past_the_acked_sequence(tmp_path):
    """The hub stored the start of a range before it was merged: the rest must stay."""
    one = len(canonical_bytes(nth_window(0).to_json()))
    with Outbox(tmp_path / "outbox.db", budget_bytes=4 * one) as box:
        for i in range(10):
            box.append(nth_window(i))
        rows = all_rows(box)
        wide = next(r for r in rows if r.seq_hi > r.seq_lo)
        before = sum(1 for r in rows if r.seq_hi < wide.seq_lo)
        assert box.ack(wide.seq_lo) == before
        assert box.pending()[0] == wide
        assert box.ack(wide.seq_hi) == 1


def test_row_merged_past_the_last_sent_sequence_is_not_skipped(tmp_path):
    """Sent up to 4, then 4 and 5 were merged: paging after 4 must still return 4..5."""
    one = len(canonical_bytes(nth_window(0).to_json()))
    with Outbox(tmp_path / "outbox.db", budget_bytes=4 * one) as box:
        for i in range(10):
            box.append(nth_window(i))
        rows = all_rows(box)
        wide = next(r for r in rows if r.seq_hi > r.seq_lo)
        assert box.pending(after=wide.seq_lo)[0] == wide
        assert box.pending(after=wide.seq_hi - 1)[0] == wide
        assert wide not in box.pending(after=wide.seq_hi)


def test_compaction_never_merges_rows_of_another_model_version_or_role(tmp_path):
    keys = [("active", 1)] * 6 + [("shadow", 1), ("active", 1)] * 3 + [("active", 2)] * 6
    windows = [nth_window(i, role=r, model_version=v) for i, (r, v) in enumerate(keys)]
    one = len(canonical_bytes(windows[0].to_json()))
    with Outbox(tmp_path / "outbox.db", budget_bytes=4 * one) as box:
        for w in windows:
            box.append(w)
        rows = all_rows(box)
        assert box.compactions > 0
        assert_laminar_and_contiguous(rows)
        for r in rows:
            covered = {keys[s - 1] for s in range(r.seq_lo, r.seq_hi + 1)}
            assert covered == {(r.role, r.model_version)}
            w = r.window()
            assert (w.role, w.model_version) == (r.role, r.model_version)
        for key in set(keys):
            assert totals([r.window() for r in rows if (r.role, r.model_version) == key]) == totals(
                [w for w in windows if (w.role, w.model_version) == key]
            )


def test_unparseable_row_is_kept_and_skipped_by_compaction(tmp_path):
    path = tmp_path / "outbox.db"
    one = len(canonical_bytes(nth_window(0).to_json()))
    with Outbox(path, budget_bytes=6 * one) as box:
        box.append(nth_window(0))
    raw = sqlite3.connect(path)
    raw.execute("UPDATE outbox SET payload = ?, size = ? WHERE seq_lo = 1", (b"{}" * one, 2 * one))
    raw.commit()
    raw.close()
    with Outbox(path, budget_bytes=6 * one) as box:
        for i in range(1, 12):
            box.append(nth_window(i))
        rows = all_rows(box)
        assert (rows[0].seq_lo, rows[0].seq_hi, rows[0].payload) == (1, 1, b"{}" * one)
        assert_laminar_and_contiguous(rows)


# --- disk full ------------------------------------------------------------------------------


def test_disk_full_keeps_accepted_windows(tmp_path):
    """SQLITE_FULL (a real one, from max_page_count) loses nothing already stored."""
    # alternating roles: no two adjacent rows can merge, so compaction cannot free space
    with Outbox(tmp_path / "outbox.db", budget_bytes=1 << 30, max_db_bytes=48 << 10) as box:
        accepted: dict[int, MetricsWindow] = {}
        for i in range(500):
            w = nth_window(i, role=("active", "shadow")[i % 2])
            try:
                accepted[box.append(w)] = w
            except OutboxError as exc:
                refused = w
                assert "\n" not in str(exc) and "keep it in memory" in str(exc)
                break
        else:
            pytest.fail("the outbox never filled up")
        assert len(accepted) >= 5
        rows = all_rows(box)
        assert {r.seq_lo: r.window() for r in rows} == accepted
        assert box.last_seq == max(accepted)  # the refused window took no sequence
        with pytest.raises(OutboxError):  # still full: the caller keeps retrying later
            box.append(refused)
        half = sorted(accepted)[len(accepted) // 2]
        assert box.ack(half) == len(accepted) // 2 + 1
        seq = box.append(refused)
        assert seq == max(accepted) + 1
        rows = all_rows(box)
        assert [r.seq_lo for r in rows] == [*(s for s in sorted(accepted) if s > half), seq]
        assert rows[-1].window() == refused


def test_disk_full_compacts_and_stores_the_window(tmp_path):
    windows = [nth_window(i) for i in range(80)]
    with Outbox(tmp_path / "outbox.db", budget_bytes=1 << 30, max_db_bytes=48 << 10) as box:
        for i, w in enumerate(windows):
            assert box.append(w) == i + 1
        rows = all_rows(box)
        assert box.compactions > 0
        assert_laminar_and_contiguous(rows)
        assert totals([r.window() for r in rows]) == totals(windows)


# --- kill -9 --------------------------------------------------------------------------------

CHILD = """
import dataclasses, json, sys
from pathlib import Path
from edge_agent.contract.window import MetricsWindow
from edge_agent.daemon.outbox import Outbox

path, window_file, budget = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
window = MetricsWindow.from_json(json.loads(window_file.read_text()))
box = Outbox(path, budget)
i = 0
while True:
    i += 1
    seq = box.append(dataclasses.replace(window, start=60.0 * i, end=60.0 * (i + 1)))
    print(seq, flush=True)
"""


def _run_and_kill(path: Path, window_file: Path, budget: int, after: int) -> list[int]:
    """Start a writer, SIGKILL it once it reported ``after`` seqs; return every seq it reported."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(window_file), str(budget)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    reported = []
    try:
        while len(reported) < after:
            line = proc.stdout.readline()
            if not line:
                pytest.fail(f"writer died: {proc.stderr.read()}")
            reported.append(int(line))
    finally:
        proc.kill()  # SIGKILL, mid-append or mid-compaction
        proc.wait()
    tail = proc.stdout.read()  # printed after the last line we read, before the kill
    proc.stdout.close()
    proc.stderr.close()
    reported += [int(line) for line in tail.splitlines(keepends=True) if line.endswith("\n")]
    return reported


def test_kill_during_outbox_write_loses_no_closed_window(tmp_path):
    path = tmp_path / "outbox.db"
    window = nth_window(0)
    window_file = tmp_path / "window.json"
    window_file.write_text(json.dumps(window.to_json()))
    budget = 6 * len(canonical_bytes(window.to_json()))  # compacts every few appends
    kill_after = [random.randint(3, 40) for _ in range(3)]  # a random moment in each run
    print(f"killing after {kill_after} appends")  # shown with the failure, to reproduce it
    reported: list[int] = []
    for after in kill_after:
        reported += _run_and_kill(path, window_file, budget, after)
    assert reported == sorted(set(reported))  # strictly increasing, across restarts too

    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    raw.close()
    with Outbox(path, budget) as box:
        rows = all_rows(box)
        assert_laminar_and_contiguous(rows)
        last = rows[-1].seq_hi
        assert set(reported) <= set(range(1, last + 1))
        assert sum(r.window().n for r in rows) == window.n * last  # no count lost or doubled
        assert box.append(window) == last + 1


# --- draining speed -------------------------------------------------------------------------


def test_draining_a_day_of_windows_uses_the_index(tmp_path):
    """A day of windows drains in pages through the seq_hi index (the speed itself is
    measured by bench_agent's drain figure, not asserted here)."""
    path = tmp_path / "outbox.db"
    with Outbox(path, budget_bytes=64 << 20) as box:
        for i in range(1440):
            box.append(nth_window(i))
        drained, after = 0, None
        while rows := box.pending(limit=500, after=after):
            drained += len(rows)
            after = rows[-1].seq_hi
        assert box.ack(after) == 1440 and box.depth() == 0
    assert drained == 1440

    raw = sqlite3.connect(path)
    plan = " ".join(
        row[-1] for row in raw.execute(f"EXPLAIN QUERY PLAN {outbox._SELECT_PENDING}", (5, 500))
    )
    assert "outbox_seq_hi" in plan and "TEMP B-TREE" not in plan
    plan = " ".join(
        row[-1] for row in raw.execute("EXPLAIN QUERY PLAN DELETE FROM outbox WHERE seq_hi <= 5")
    )
    assert "outbox_seq_hi" in plan
    raw.close()


# --- epochs -----------------------------------------------------------------------------


def test_a_wiped_outbox_starts_a_new_epoch(tmp_path):
    path = tmp_path / "outbox.db"
    with Outbox(path) as box:
        first = box.epoch
        box.append(nth_window(0))
    with Outbox(path) as box:
        assert box.epoch == first  # a restart keeps the sequence space
    path.unlink()
    with Outbox(path) as box:
        assert box.epoch != first and len(box.epoch) == 16  # wiped: a new one
        assert box.append(nth_window(0)) == 1


def test_an_outbox_from_before_epochs_keeps_the_legacy_epoch(tmp_path):
    """Its sequences continue where the hub expects them, so the epoch stays empty."""
    path = tmp_path / "outbox.db"
    with Outbox(path) as box:
        box.append(nth_window(0))
    raw = sqlite3.connect(path)  # back to the schema before 0003_epoch
    raw.execute("DELETE FROM migrations WHERE name = '0003_epoch'")
    raw.execute("ALTER TABLE outbox_state DROP COLUMN epoch")
    raw.commit()
    raw.close()
    with Outbox(path) as box:
        assert box.epoch == "" and box.append(nth_window(1)) == 2


@pytest.mark.parametrize("epoch", ["", "0123456789abcdef"])
def test_metrics_and_acks_carry_the_epoch_both_ways(epoch):
    m = MetricsMessage("d1", 1, 1, (nth_window(0),), epoch)
    assert MetricsMessage.from_bytes(m.to_bytes()) == m
    assert Ack.from_bytes(Ack("d1", 5, epoch).to_bytes()) == Ack("d1", 5, epoch)
    # the spliced bytes of a drain are the canonical bytes of the message
    assert MetricsMessage.splice("d1", 1, 1, canonical_bytes([nth_window(0).to_json()]), epoch) == (
        m.to_bytes()
    )


@pytest.mark.parametrize("bad", ["ABCDEF0123456789", "0123", "../../etc/passwd", "0" * 17])
def test_malformed_epoch_refused(bad):
    doc = json.loads(MetricsMessage("d1", 1, 1, (nth_window(0),)).to_bytes())
    doc["epoch"] = bad
    with pytest.raises(ValidationError, match="epoch"):
        MetricsMessage.from_bytes(json.dumps(doc).encode())
    with pytest.raises(ValidationError, match="epoch"):
        Ack.from_bytes(
            json.dumps(
                {"format": "edgefleet-ack/1", "device_id": "d1", "seq": 1, "epoch": bad}
            ).encode()
        )


_DROP = object()
_ENVELOPE_VALUES = [
    None, 0, 1, 2, -1, True, 1.5, "", "x", "d1", "../x", 2**64, "0123456789abcdef",
    "ABCDEF0123456789", "edgefleet-metrics/1", "edgefleet-state/1", [], [{}], {}, _DROP,
]  # fmt: skip


@pytest.mark.parametrize(
    "key", ["format", "device_id", "seq_lo", "seq_hi", "windows", "epoch", "extra"]
)
@pytest.mark.parametrize("epoch", ["", "0123456789abcdef"])
def test_metrics_fast_path_accepts_only_what_the_checked_path_accepts(key, epoch):
    """MetricsMessage.from_bytes's fast path declines, or returns what the field-by-field
    checks return, or raises what they raise, whatever one envelope field holds."""
    from edge_agent.contract import messages

    base = json.loads(MetricsMessage("d1", 2, 3, (nth_window(0), nth_window(1)), epoch).to_bytes())
    assert messages._metrics_fast(dict(base)) == messages._metrics_checked(dict(base))

    def outcome(parse, doc):
        try:
            return parse(doc)
        except ValidationError as exc:
            return str(exc)

    values = [
        *_ENVELOPE_VALUES,
        base["windows"][:1],  # sound: one (merged) window may cover a range
        [base["windows"][0]] * 17,
        [{**base["windows"][0], "n": -1}],
    ]
    taken = 0
    for value in values:
        doc = dict(base)
        if value is _DROP:
            doc.pop(key, None)
        else:
            doc[key] = value
        fast = outcome(messages._metrics_fast, doc)
        checked = outcome(messages._metrics_checked, doc)
        assert fast is None or fast == checked, (key, value)
        if isinstance(checked, MetricsMessage) and canonical_bytes(doc) == checked.to_bytes():
            # a message exactly as agents send it: what the fast path is for
            assert fast is not None, ("the fast path declined a sound message", key, value)
            taken += 1
        if (
            (key == "extra" and value is not _DROP)
            or (key not in ("epoch", "extra") and value is _DROP)
            or any(type(value) is type(v) and value == v for v in (None, True, -1, 1.5, 2**64))
            or any(type(value) is type(v) and value == v for v in ([], {}))
        ):
            assert isinstance(checked, str) and (fast is None or fast == checked), (key, value)
    # every field but "extra" has sound values in the sweep (the unchanged one at least)
    assert taken > 0 or key == "extra", key


@pytest.mark.parametrize(
    "ack",
    [
        Ack("d1", 0),
        Ack("pump-7.a_b", 2**63 - 1),
        Ack("d1", 5, "0123456789abcdef"),
        Ack("d1", True),  # not an int: the general path
        Ack('quote"d', 1),  # not a safe name: the general path escapes it
        Ack("d1", 1, "NOT-HEX"),
    ],
)
def test_ack_bytes_are_canonical(ack):
    doc = {"format": "edgefleet-ack/1", "device_id": ack.device_id, "seq": ack.seq}
    if ack.epoch:
        doc["epoch"] = ack.epoch
    assert ack.to_bytes() == canonical_bytes(doc)
