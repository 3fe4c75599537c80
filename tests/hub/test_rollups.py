"""Hourly roll-ups: fleet, device and cohort queries equal merging every stored window."""

from __future__ import annotations

import dataclasses
import sqlite3
from functools import reduce

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.contract.messages import MetricsMessage
from edge_agent.contract.window import MetricsWindow, merge_documents, merge_windows
from edge_agent.errors import ValidationError
from hub.rollups import HOUR_S, hour_of
from hub.store import LONG_WINDOW_S, Store
from tests.hub.test_store import row, window


def assert_same(a: MetricsWindow, b: MetricsWindow) -> None:
    """Counts equal exactly; means and M2 up to rounding (merge order differs)."""
    ja, jb = a.to_json(), b.to_json()
    fa, fb = ja.pop("features"), jb.pop("features")
    sa, sb = ja.pop("confidence_sum", None), jb.pop("confidence_sum", None)
    assert (sa is None) == (sb is None)
    if sa is not None:  # float sums: equal up to the rounding of another merge order
        np.testing.assert_allclose(sa, sb, rtol=1e-12, atol=1e-12)
    assert ja == jb
    for k in ("counts", "count", "min", "max", "out_of_range"):
        assert fa[k] == fb[k], k
    for k in ("mean", "m2"):
        np.testing.assert_allclose(fa[k], fb[k], rtol=1e-9, atol=1e-9)


def merged(windows: list[MetricsWindow]) -> MetricsWindow:
    return reduce(merge_windows, windows)


def one(windows: list[MetricsWindow]) -> MetricsWindow:
    assert windows, "expected a merged window"
    return merged(windows)


@given(st.lists(st.integers(1, 400), min_size=1, max_size=12))
@settings(max_examples=30, deadline=None)
def test_merging_documents_at_once_equals_merging_pairwise(seqs):
    ws = [window(s) for s in seqs]
    assert_same(MetricsWindow.from_json(merge_documents([w.to_json() for w in ws])), merged(ws))


def test_documents_of_another_model_or_shape_do_not_merge():
    a, b = window(1).to_json(), window(2).to_json()
    with pytest.raises(ValidationError, match="another model"):
        merge_documents([a, {**b, "version": 2}])
    b["classes"] = [*b["classes"], 0]
    with pytest.raises(ValidationError, match="do not fit"):
        merge_documents([a, b])


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "hub.db") as s:
        # three devices, 3 hours of 60 s windows each (sequence q starts at 60 q)
        s.store_metrics_batch([row(d, q) for d in ("a", "b", "c") for q in range(1, 181)])
        yield s


@pytest.mark.parametrize("since", [None, 0.0, 3600.0, 4000.5, 7199.0, 99_999.0])
@pytest.mark.parametrize("devices", [None, ["a"], ["b", "c"]])
def test_rolled_up_query_equals_merging_every_window(store, since, devices):
    got = store.merged_windows("demo", 1, devices=devices, since=since)
    raw = [
        w
        for d in (devices or ["a", "b", "c"])
        for w in store.windows_for(device=d, model="demo", version=1, since=since)
    ]
    if not raw:
        assert got == []
        return
    assert_same(one(got), merged(raw))


def test_the_roller_finishes_and_is_idempotent(store):
    assert store.roll_up(max_buckets=2) == 2  # short transactions: a few buckets at a time
    while store.roll_up(max_buckets=2):
        pass
    before = store.merged_windows("demo", 1)
    assert store.roll_up() == 0
    assert_same(one(store.merged_windows("demo", 1)), one(before))


def test_a_late_window_for_a_rolled_up_hour_is_counted(store):
    assert store.merged_windows("demo", 1, devices=["a"])[0].n == sum(
        w.n for w in store.windows_for(device="a")
    )
    store.store_metrics_batch([row("a", 181), row("d", 5)])  # late, and a new device
    got = one(store.merged_windows("demo", 1))
    raw = [w for d in "abcd" for w in store.windows_for(device=d)]
    assert_same(got, merged(raw))


def test_a_compacted_range_that_replaces_stored_windows_stays_exact(tmp_path):
    with Store(tmp_path / "hub.db") as s:
        s.store_metrics_batch([row("a", 1), row("a", 2)])
        assert (
            s.merged_windows("demo", 1)[0].n == row("a", 1).windows[0].n + row("a", 2).windows[0].n
        )
        # the device compacted 1..4 after the hub stored 1 and 2: the range replaces them
        s.store_metrics_batch([row("a", 1, 4)])
        expected = merged([row("a", q).windows[0] for q in (1, 2, 3, 4)])
        assert_same(one(s.merged_windows("demo", 1)), expected)


def test_windows_stored_before_roll_ups_existed_are_rolled_up(tmp_path):
    path = tmp_path / "hub.db"
    with Store(path) as s:
        s.store_metrics_batch([row("a", q) for q in range(1, 70)])
    raw = sqlite3.connect(path)  # back to the schema before 0003_hourly_rollups
    for table in ("rollups", "rollup_dirty"):
        raw.execute(f"DROP TABLE {table}")
    raw.execute("DROP INDEX windows_device_model_start")
    raw.execute("DELETE FROM migrations WHERE name = '0003_hourly_rollups'")
    raw.commit()
    raw.close()
    with Store(path) as s:
        assert_same(one(s.merged_windows("demo", 1)), merged(s.windows_for(device="a")))


def test_a_device_reporting_another_shape_does_not_block_the_fleet(store, caplog):
    odd = window(7).to_json()
    odd["classes"] = [*odd["classes"], 0]  # one class more than the model has
    bad = MetricsWindow.from_json(odd)
    store.store_metrics_batch([MetricsMessage("z", 1, 1, (bad,))])
    got = one(store.merged_windows("demo", 1))
    raw = [w for d in "abc" for w in store.windows_for(device=d)]
    assert_same(got, merged(raw))
    assert "leaves out 1 window" in caplog.text


def test_since_keeps_windows_that_end_at_or_after_it(store):
    (got,) = store.merged_windows("demo", 1, devices=["a"], since=HOUR_S)
    assert got.start == HOUR_S - 60 and got.end == 181 * 60  # the window ending at since


@pytest.mark.parametrize(
    "t", [0.0, 1.0, 3599.999999, 3600.0, 1_700_002_799.9999998, 1_700_002_800.0000002]
)
def test_a_window_belongs_to_exactly_the_hour_its_start_falls_in(t):
    h = hour_of(t)
    assert h * HOUR_S <= t < (h + 1) * HOUR_S


def test_windows_right_at_an_hour_boundary_are_rolled_up_exactly(tmp_path):
    """Starts a rounding error away from the boundary, including a compacted range that
    replaces them: the buckets marked and the buckets queried agree."""
    boundary = 1_700_002_800.0
    starts = [boundary - 2e-7, boundary, boundary + 2e-7, boundary + 60.0]
    base = window(3)
    with Store(tmp_path / "hub.db") as s:
        for q, start in enumerate(starts, 1):
            w = dataclasses.replace(base, start=start, end=start + 1.0)
            s.store_metrics_batch([MetricsMessage("a", q, q, (w,))])
        s.merged_windows("demo", 1)  # rolled up
        total = dataclasses.replace(reduce(merge_windows, [base] * 4), start=starts[0])
        s.store_metrics_batch([MetricsMessage("a", 1, 4, (total,))])  # replaces all four
        for since in (None, boundary - 1e-7, boundary):
            raw = s.windows_for(device="a", since=since)
            assert_same(one(s.merged_windows("demo", 1, since=since)), merged(raw))


@pytest.mark.parametrize("since", [3000.0, 5400.5, 7199.0, 9000.0, 10_799.0])
def test_exact_since_counts_windows_that_started_hours_before_it(tmp_path, since):
    """A device's outbox coarsened 150 minutes into one window (60 s .. 9,060 s): a query
    from any second inside it counts it whole, as windows_for does; short windows are
    counted from the second asked for, not from the start of its hour."""
    with Store(tmp_path / "hub.db") as s:
        s.store_metrics_batch([row("long", 1, 150)])
        s.store_metrics_batch([row(d, q) for d in ("a", "b") for q in range(1, 181)])
        for devices in (None, ["long"], ["a", "long"]):
            got = s.merged_windows("demo", 1, devices=devices, since=since)
            raw = [
                w
                for d in (devices or ["long", "a", "b"])
                for w in s.windows_for(device=d, model="demo", version=1, since=since)
            ]
            if raw:
                assert_same(one(got), merged(raw))
            else:
                assert got == []
        if since <= 9060.0:
            assert one(s.merged_windows("demo", 1, devices=["long"], since=since)).n == sum(
                window(q).n for q in range(1, 151)
            )


def test_edge_queries_use_an_index_not_a_scan_of_every_window(store):
    """The partial-hour part of an exact query reads a bounded range of an index, never
    every stored window (the fleet's whole history)."""
    conn = sqlite3.connect(store.path)
    since, before = 5400.5, 5460.0
    short = (
        "EXPLAIN QUERY PLAN SELECT payload FROM windows WHERE model = ? AND version = ?"
        ' AND role = ? AND start >= ? AND start < ? AND "end" >= ? AND "end" - start <= '
        f"{LONG_WINDOW_S}"
    )
    long = (
        "EXPLAIN QUERY PLAN SELECT payload FROM windows WHERE model = ? AND version = ?"
        f' AND role = ? AND "end" >= ? AND start < ? AND "end" - start > {LONG_WINDOW_S}'
    )
    plans = [
        " ".join(str(r[-1]) for r in conn.execute(q, args).fetchall())
        for q, args in (
            (short, ("demo", 1, "active", since - LONG_WINDOW_S, before, since)),
            (long, ("demo", 1, "active", since, before)),
        )
    ]
    assert (
        "USING INDEX windows_model_start (model=? AND version=? AND start>? AND start<?)"
        in (plans[0])
    ), plans[0]
    assert "windows_long_span" in plans[1], plans[1]
    assert all("SCAN" not in p for p in plans), plans


def test_fleet_minute_buckets_stay_exact_after_late_and_compacted_windows(tmp_path):
    """A fleet query from inside an hour reads whole minutes from the minute roll-ups; a
    late window, a new device and a compacted range replacing stored windows (their
    minutes change) are all counted exactly once."""
    with Store(tmp_path / "hub.db") as s:
        # device a sent windows 67 and 68 but not 69 and 70 before compacting 67..70
        s.store_metrics_batch([row("b", q) for q in range(1, 121)])
        s.store_metrics_batch([row("a", q) for q in (*range(1, 69), *range(71, 121))])
        since = 4000.5  # minute 66 and a half
        assert_same(
            one(s.merged_windows("demo", 1, since=since)),
            merged([w for d in "ab" for w in s.windows_for(device=d, since=since)]),
        )
        (stored,) = s.store_metrics_batch([row("a", 67, 70)]).outcomes  # replaces 67, 68
        assert stored.value == "stored"
        s.store_metrics_batch([row("a", 121), row("c", 80)])  # late, and a new device
        raw = [w for d in "abc" for w in s.windows_for(device=d, since=since)]
        assert_same(one(s.merged_windows("demo", 1, since=since)), merged(raw))
        minutes = sqlite3.connect(s.path).execute("SELECT COUNT(*) FROM rollups_minute")
        assert minutes.fetchone()[0] > 0
