"""The hub's SQLite store: idempotent, de-duplicating metrics ingest; devices; events.

Real SQLite files in ``tmp_path``; windows counted by the agent's own accumulator.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from functools import reduce

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.contract.messages import (
    Event,
    EventKind,
    Health,
    MetricsMessage,
    ModelVersion,
    State,
)
from edge_agent.contract.reference import ReferenceStats
from edge_agent.contract.window import MetricsWindow, merge_windows
from edge_agent.inference.accumulator import WindowAccumulator
from hub.store import EPOCH_BLOCK, Store, StoreError, StoreOutcome

F, C = 3, 3


def make_reference(seed: int = 0) -> ReferenceStats:
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(300, F))
    probs = rng.dirichlet(np.ones(C), size=300)
    return ReferenceStats.from_data(
        data,
        probs,
        [f"f{j}" for j in range(F)],
        ["a", "b", "c"],
        8,
        tuple(np.linspace(0.0, 1.0, 6)),
    )


REF = make_reference()


def window(seq: int, role: str = "active", n: int | None = None, at: float = 0.0) -> MetricsWindow:
    """Window ``seq`` of a stream: one minute from ``at + 60 seq``, counts varying with
    ``seq``."""
    rng = np.random.default_rng(seq + (1000 if role == "shadow" else 0))
    n = n if n is not None else 10 + seq % 7
    start = at + 60.0 * seq
    acc = WindowAccumulator(REF, "demo", 1, role, clock=lambda: start)
    acc.record(rng.normal(size=(n, F)), rng.dirichlet(np.ones(C), size=n), 0.001)
    acc.record_error("invoke_error", seq % 2 + 1)
    w = acc.close(now=start + 60.0)
    assert w is not None
    return w


def row(
    dev: str, lo: int, hi: int | None = None, shadow: bool = False, at: float = 0.0
) -> MetricsMessage:
    """The message an outbox row [lo, hi] produces: its windows merged, as compaction does."""
    hi = hi or lo
    roles = ("active", "shadow") if shadow else ("active",)
    windows = tuple(
        reduce(merge_windows, [window(s, role, at=at) for s in range(lo, hi + 1)]) for role in roles
    )
    return MetricsMessage(dev, lo, hi, windows)


def total(windows: list[MetricsWindow]) -> MetricsWindow:
    return reduce(merge_windows, windows)


def assert_same_counts(a: MetricsWindow, b: MetricsWindow) -> None:
    assert a.n == b.n
    assert a.class_counts == b.class_counts
    assert a.confidence == b.confidence
    assert a.latency == b.latency
    assert a.errors == b.errors
    for fa, fb in zip(a.features, b.features, strict=True):
        assert fa.counts == fb.counts
        assert fa.count == fb.count
        assert fa.mean == pytest.approx(fb.mean, rel=1e-9, abs=1e-12)
        assert fa.m2 == pytest.approx(fb.m2, rel=1e-9, abs=1e-9)


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "hub.db") as s:
        yield s


def test_migrations_are_recorded_and_not_reapplied(tmp_path):
    path = tmp_path / "hub.db"
    names = [
        "0001_devices_windows_events",
        "0002_device_epochs",
        "0003_hourly_rollups",
        "0004_drop_windows_device_lo",
        "0005_enrollments",
        "0006_windows_long_span",
        "0007_fleet_minute_rollups",
        "0008_epoch_marks",
        "0009_registry",
        "0010_api_tokens",
        "0011_audit",
        "0012_directive_seqs",
        "0013_rollouts",
        "0014_alerts",
        "0015_windows_original",
    ]
    with Store(path) as s:
        assert s.migrations() == names
    with Store(path) as s:  # reopening applies nothing twice
        assert s.migrations() == names
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT COUNT(*) FROM migrations").fetchone()[0] == len(names)
    conn.close()


def test_not_a_database_raises_store_error(tmp_path):
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open"):
        Store(path)


def test_closed_store_raises_store_error(tmp_path):
    s = Store(tmp_path / "hub.db")
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.contiguous("dev")


def test_replayed_metrics_counted_once(store):
    batch = [row("d1", s, shadow=True) for s in range(1, 6)]
    assert store.store_metrics(batch) == {"d1": 5}
    result = store.store_metrics_batch(batch + batch[:2])  # the device resends everything
    assert result.contiguous == {"d1": 5}
    assert result.count(StoreOutcome.DUPLICATE) == 7
    active = store.windows_for(device="d1", role="active")
    assert len(active) == 5
    assert_same_counts(total(active), total([window(s) for s in range(1, 6)]))
    assert len(store.windows_for(device="d1", role="shadow")) == 5


def test_range_inside_a_stored_compacted_range_is_a_duplicate(store):
    store.store_metrics([row("d1", 1, 4)])
    result = store.store_metrics_batch([row("d1", 2), row("d1", 3, 4), row("d1", 1, 4)])
    assert result.outcomes == (StoreOutcome.DUPLICATE,) * 3
    assert store.stored_ranges("d1") == [(1, 4)]


def test_messages_of_one_batch_see_the_rows_stored_before_them(store):
    # The batch's window rows are inserted together at its end, unless a message needs
    # to compare itself with them first.
    result = store.store_metrics_batch(
        [row("d1", 1), row("d1", 2), row("d1", 1, 2), row("d2", 2), row("d2", 1, 2)]
    )
    assert (
        result.outcomes
        == (StoreOutcome.STORED,) * 2 + (StoreOutcome.DUPLICATE,) + (StoreOutcome.STORED,) * 2
    )
    assert store.stored_ranges("d1") == [(1, 1), (2, 2)]
    assert store.stored_ranges("d2") == [(1, 2)]  # the compacted row replaced seq 2
    assert len(store.windows_for(device="d2")) == 1


def test_a_compared_message_keeps_the_devices_top_for_the_next_in_its_batch(store):
    """[2] fills a gap below the stored [3, 6]; [4, 5] after it in the same batch is a
    replay inside [3, 6], not a new range to store again."""
    store.store_metrics_batch([row("d", 1), row("d", 3, 6)])
    result = store.store_metrics_batch([row("d", 2), row("d", 4, 5)])
    assert result.outcomes == (StoreOutcome.STORED, StoreOutcome.DUPLICATE)
    assert store.stored_ranges("d") == [(1, 1), (2, 2), (3, 6)]
    assert store.contiguous("d") == 6


class _BlockingProbe:
    """Wraps the store's lock: sets ``b_blocked`` when the thread named ``B`` finds it
    held by another thread (B is about to block)."""

    def __init__(self, lock, b_blocked: threading.Event) -> None:
        self.lock = lock
        self.b_blocked = b_blocked

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self.lock.acquire(blocking=False):
            return True
        if threading.current_thread().name == "B":
            self.b_blocked.set()
        return self.lock.acquire(blocking, timeout) if blocking else False

    def release(self) -> None:
        self.lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def test_a_second_writer_never_sees_the_caches_of_an_uncounted_commit(store, monkeypatch):
    """Writer A commits [2, 5]; writer B, a replay of 3, must not run between A's
    commit and A's cache update (it would take 3 for new and store it twice).

    A is parked right after its commit; the test then waits until B either finished
    (the lock did not hold it: the race is lost for sure) or is blocked on the store's
    lock, so the outcome does not depend on how fast either thread runs."""
    import contextlib

    store.store_metrics_batch([row("d", 1)])
    real_write = Store._write
    parked, gate = threading.Event(), threading.Event()

    @contextlib.contextmanager
    def write_then_park(self, what):
        with real_write(self, what) as conn:
            yield conn
        if threading.current_thread().name == "A":  # committed; caches not updated yet
            parked.set()
            assert gate.wait(60), "the test never released writer A"

    monkeypatch.setattr(Store, "_write", write_then_park)
    b_stopped = threading.Event()  # B blocked on the lock, or B finished
    monkeypatch.setattr(store, "_lock", _BlockingProbe(store._lock, b_stopped))
    outcomes = {}

    def writer_b() -> None:
        try:
            outcomes["b"] = store.store_metrics_batch([row("d", 3)]).outcomes
        finally:
            b_stopped.set()

    a = threading.Thread(target=lambda: store.store_metrics_batch([row("d", 2, 5)]), name="A")
    b = threading.Thread(target=writer_b, name="B")
    a.start()
    try:
        assert parked.wait(60), "writer A never committed"
        b.start()
        assert b_stopped.wait(60), "writer B neither finished nor blocked on the lock"
        assert "b" not in outcomes, f"B ran while A's caches were stale: {outcomes}"
    finally:
        gate.set()
        a.join(60)
        if b.ident is not None:
            b.join(60)
    assert not a.is_alive() and not b.is_alive()
    assert outcomes["b"] == (StoreOutcome.DUPLICATE,)
    assert store.stored_ranges("d") == [(1, 1), (2, 5)]


def test_compacted_range_after_partial_delivery_counts_each_window_once(store):
    # The hub stored seqs 1, 2 and 4; then the device compacted 1..4 into one row
    # (3 never arrived) and sends the merged row again, plus its newer rows.
    store.store_metrics([row("d1", 1, shadow=True), row("d1", 2, shadow=True)])
    assert store.store_metrics([row("d1", 4, shadow=True)]) == {"d1": 2}
    result = store.store_metrics_batch(
        [row("d1", 1, 4, shadow=True), row("d1", 5, shadow=True), row("d1", 6, 7, shadow=True)]
    )
    assert result.outcomes == (StoreOutcome.STORED,) * 3
    assert result.contiguous == {"d1": 7}
    assert store.stored_ranges("d1") == [(1, 4), (5, 5), (6, 7)]
    for role in ("active", "shadow"):
        stored = store.windows_for(device="d1", role=role)
        assert_same_counts(total(stored), total([window(s, role) for s in range(1, 8)]))
    # and the compacted row, replayed once more, changes nothing
    assert store.store_metrics_batch([row("d1", 1, 4, shadow=True)]).outcomes == (
        StoreOutcome.DUPLICATE,
    )
    assert sum(w.n for w in store.windows_for(device="d1", role="active")) == sum(
        window(s).n for s in range(1, 8)
    )


def test_compacted_range_containing_only_stored_windows_is_a_duplicate(store):
    store.store_metrics([row("d1", 1), row("d1", 2)])
    assert store.store_metrics_batch([row("d1", 1, 2)]).outcomes == (StoreOutcome.DUPLICATE,)
    assert store.stored_ranges("d1") == [(1, 1), (2, 2)]


def test_partially_overlapping_range_rejected_without_change(store):
    store.store_metrics([row("d1", 1, 2)])
    result = store.store_metrics_batch([row("d1", 2, 3), row("d1", 3)])
    assert result.outcomes == (StoreOutcome.REJECTED, StoreOutcome.STORED)
    assert store.stored_ranges("d1") == [(1, 2), (3, 3)]


def test_stored_window_not_contained_in_the_compacted_range_rejected(store):
    store.store_metrics([row("d1", 1, shadow=True)])
    # claims to cover seq 1 but holds no shadow window: subtracting is impossible
    assert store.store_metrics_batch([row("d1", 1, 2)]).outcomes == (StoreOutcome.REJECTED,)
    shrunk = MetricsMessage("d1", 1, 2, (window(2, n=1),))  # fewer counts than stored
    assert store.store_metrics_batch([shrunk]).outcomes == (StoreOutcome.REJECTED,)
    assert store.stored_ranges("d1") == [(1, 1)]


def test_two_windows_of_one_model_and_role_in_one_message_rejected(store):
    w = window(1)
    assert store.store_metrics_batch([MetricsMessage("d1", 1, 1, (w, w))]).outcomes == (
        StoreOutcome.REJECTED,
    )
    assert store.contiguous("d1") == 0


def test_contiguity_stops_at_gaps_and_advances_when_they_fill(store):
    assert store.store_metrics([row("d1", 2), row("d1", 3), row("d1", 6, 8)]) == {"d1": 0}
    assert store.store_metrics([row("d1", 1)]) == {"d1": 3}
    assert store.store_metrics([row("d1", 4, 5), row("d2", 1)]) == {"d1": 8, "d2": 1}
    assert store.contiguous("d1") == 8
    assert store.contiguous("unknown") == 0


def test_one_bad_message_does_not_spoil_the_batch(store):
    w = window(3)
    batch = [row("d1", 1), MetricsMessage("d1", 2, 2, (w, w)), row("d1", 3)]
    result = store.store_metrics_batch(batch)
    assert result.outcomes == (StoreOutcome.STORED, StoreOutcome.REJECTED, StoreOutcome.STORED)
    assert result.contiguous == {"d1": 1}


def test_hub_restart_mid_ingest_loses_nothing(tmp_path):
    path = tmp_path / "hub.db"
    with Store(path) as s:
        s.store_metrics([row("d1", s_) for s_ in range(1, 4)] + [row("d2", 1)])
    with Store(path) as s:  # restarted: the device resends what was not acked, and more
        result = s.store_metrics_batch([row("d1", s_) for s_ in range(2, 7)])
        assert result.outcomes == (StoreOutcome.DUPLICATE,) * 2 + (StoreOutcome.STORED,) * 3
        assert result.contiguous == {"d1": 6}
    with Store(path) as s:
        s.store_metrics([row("d1", 1, 8)])  # compacted on the device meanwhile
        assert s.contiguous("d1") == 8
        assert s.contiguous("d2") == 1
        assert_same_counts(
            total(s.windows_for(device="d1")), total([window(q) for q in range(1, 9)])
        )


def test_a_failed_batch_stores_nothing(tmp_path):
    path = tmp_path / "hub.db"
    with Store(path) as s:
        s.store_metrics([row("d1", 1)])
        conn = sqlite3.connect(path)
        conn.execute(
            "CREATE TRIGGER boom BEFORE INSERT ON windows WHEN NEW.seq_lo = 3"
            " BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
        )
        conn.commit()
        conn.close()
        with pytest.raises(StoreError, match="disk on fire"):
            s.store_metrics([row("d1", 2), row("d1", 3)])
        assert s.stored_ranges("d1") == [(1, 1)]
        assert s.contiguous("d1") == 1


def test_windows_for_filters(store):
    v2 = dataclasses.replace(window(2), model_version=2)
    store.store_metrics([row("d1", 1), MetricsMessage("d2", 1, 1, (v2,)), row("d2", 2)])
    assert len(store.windows_for()) == 3
    assert [w.model_version for w in store.windows_for(version=2)] == [2]
    assert len(store.windows_for(device="d2", model="demo", version=1)) == 1
    assert len(store.windows_for(since=150.0)) == 2  # windows ending at or after 150 s
    assert store.windows_for(model="other") == []


def state(dev: str, **kw) -> State:
    base = {
        "online": True, "ts": 10.0, "agent_version": "0.1.0",
        "active": ModelVersion("demo", 2), "previous": ModelVersion("demo", 1),
        "health": Health(cpu_percent=5.0, rss_bytes=100), "buffer_depth": 3,
    }  # fmt: skip
    base.update(kw)
    return State(device_id=dev, **base)


def test_state_recorded_and_last_will_keeps_what_device_said(store):
    store.record_state(state("d1"), now=100.0)
    d = store.device("d1")
    assert d is not None and d.online and d.enrolled_at == 100.0 and d.last_seen == 100.0
    assert d.active == ModelVersion("demo", 2) and d.previous == ModelVersion("demo", 1)
    assert d.shadow is None and d.buffer_depth == 3 and d.health["rss_bytes"] == 100
    assert d.state is not None and d.state["agent_version"] == "0.1.0"
    store.record_state(State("d1", online=False), now=200.0)  # the last will
    store.record_state(State("d1", online=False), now=300.0)
    d = store.device("d1")
    assert d is not None and not d.online and d.offline_since == 200.0
    assert d.active == ModelVersion("demo", 2) and d.last_seen == 100.0
    store.record_state(state("d1", buffer_depth=0), now=400.0)
    d = store.device("d1")
    assert d is not None and d.online and d.offline_since is None and d.buffer_depth == 0
    assert store.device("nobody") is None


def test_list_devices_pages_and_filters(store):
    for i in range(7):
        store.record_state(state(f"dev-{i}", online=i % 2 == 0), now=1.0)
        store.set_tags(f"dev-{i}", ["site=berlin"] if i < 3 else ["site=oslo"])
    first = store.list_devices(limit=3)
    assert [d.id for d in first] == ["dev-0", "dev-1", "dev-2"]
    rest = store.list_devices(after=first[-1].id, limit=100)
    assert [d.id for d in rest] == ["dev-3", "dev-4", "dev-5", "dev-6"]
    assert [d.id for d in store.list_devices(online=True, tag="site=oslo")] == ["dev-4", "dev-6"]
    assert [d.id for d in store.list_devices(online=False)] == ["dev-1", "dev-3", "dev-5"]
    assert store.list_devices(tag="site=paris") == []
    with pytest.raises(ValueError, match="limit"):
        store.list_devices(limit=0)


def test_events_recorded_and_paged(store):
    ids = [
        store.record_event(Event("d1", float(i), EventKind.RECEIVED, "x", ModelVersion("m", 1), i))
        for i in range(1, 5)
    ]
    store.record_event(Event("d2", 1.0, EventKind.FAILED, "smoke test"))
    page = store.events(device="d1", limit=2)
    assert [r.id for r in page] == ids[:2]
    assert page[0].event == Event("d1", 1.0, EventKind.RECEIVED, "x", ModelVersion("m", 1), 1)
    assert [r.id for r in store.events(device="d1", after_id=ids[1])] == ids[2:]
    assert [r.event.kind for r in store.events(device="d2")] == [EventKind.FAILED]
    assert len(store.events()) == 5


# --- epochs: a device whose outbox was wiped starts again at 1 ---------------------------

E1, E2, E3 = "1111111111111111", "2222222222222222", "3333333333333333"


def in_epoch(m: MetricsMessage, epoch: str) -> MetricsMessage:
    return dataclasses.replace(m, epoch=epoch)


B = EPOCH_BLOCK  # where a device's second epoch starts on the hub's sequence line
LATER = 100_000.0  # a new life's windows start this much later than the old life's


def test_a_wiped_device_new_windows_are_stored_not_taken_for_replays(tmp_path):
    with Store(tmp_path / "hub.db") as s:
        first = s.store_metrics_batch([in_epoch(row("d", q), E1) for q in (1, 2, 3)])
        assert first.acks == {("d", E1): 3} and first.current == {"d": E1}
        again = s.store_metrics_batch([in_epoch(row("d", q, at=LATER), E2) for q in (1, 2)])
        assert again.outcomes == (StoreOutcome.STORED, StoreOutcome.STORED)  # not duplicates
        assert again.acks == {("d", E2): 2} and again.current == {"d": E2}
        assert len(s.windows_for(device="d")) == 5 and s.stored_ranges("d")[-1] == (B + 2, B + 2)
        replay = s.store_metrics_batch([in_epoch(row("d", 1, at=LATER), E2)])
        assert replay.outcomes == (StoreOutcome.DUPLICATE,) and replay.acks == {("d", E2): 2}
        assert not first.conflicts and not again.conflicts and not replay.conflicts


def test_the_earlier_lifes_late_windows_are_acked_in_their_epoch_without_a_conflict(tmp_path):
    """A wiped outbox's last windows, delivered late, were made before the new life
    began: stored, acknowledged in their own epoch, and not taken for a second device."""
    with Store(tmp_path / "hub.db") as s:
        assert s.store_metrics_batch([in_epoch(row("d", q), E1) for q in (1, 3)]).acks == {
            ("d", E1): 1
        }
        new = s.store_metrics_batch([in_epoch(row("d", 1, at=LATER), E2)])
        assert new.acks == {("d", E2): 1}  # the earlier life's gap does not hold it
        late = s.store_metrics_batch([in_epoch(row("d", 2), E1)])  # the old life, late
        assert late.outcomes == (StoreOutcome.STORED,) and late.acks == {("d", E1): 3}
        assert late.current == {"d": E2} and late.conflicts == ()
        sent = [row("d", q).windows[0].n for q in (1, 3, 1, 2)]
        assert sum(w.n for w in s.windows_for(device="d")) == sum(sent)


def test_a_forged_new_epoch_neither_collides_with_nor_silences_the_real_device(tmp_path):
    """Someone with the device's credentials sends seq 1 under a new epoch (what a cloned
    image with a fresh outbox does too). The real agent's next sequences are not taken
    for duplicates of the forged ones, it is still acknowledged in its own epoch, and
    the two live epochs are reported as an identity conflict."""
    with Store(tmp_path / "hub.db") as s:
        s.store_metrics_batch([in_epoch(row("d", q), E1) for q in (1, 2, 3)])
        forged = s.store_metrics_batch([in_epoch(row("d", 1, at=200.0), E2)])
        assert forged.outcomes == (StoreOutcome.STORED,) and forged.conflicts == ()
        real = s.store_metrics_batch([in_epoch(row("d", q, at=200.0), E1) for q in (4, 5, 6)])
        assert real.outcomes == (StoreOutcome.STORED,) * 3  # not duplicates of the forged seq
        assert real.acks == {("d", E1): 6}  # the real agent is acknowledged
        [(device, line)] = {c[0]: c for c in real.conflicts}.values()
        assert device == "d" and "two live sequence spaces" in line and E1 in line
        assert len(s.windows_for(device="d")) == 7
        more = s.store_metrics_batch([in_epoch(row("d", 2, at=300.0), E2)])
        assert more.acks == {("d", E2): 2} and more.outcomes == (StoreOutcome.STORED,)


def test_a_cloned_outbox_resending_a_range_with_other_windows_is_an_identity_conflict(store):
    """Two devices from one SD-card image share the epoch and number their windows alike:
    the second one's range arrives as a 'replay' with other counts. It is not stored
    twice, and it is reported."""
    store.store_metrics_batch([in_epoch(row("d", q), E1) for q in (1, 2)])
    clone = in_epoch(row("d", 2, at=30.0), E1)
    result = store.store_metrics_batch([clone])
    assert result.outcomes == (StoreOutcome.DUPLICATE,)
    [(device, line)] = result.conflicts
    assert device == "d" and "[2, 2] arrived again with other windows" in line
    same = store.store_metrics_batch([in_epoch(row("d", 2), E1)])  # a true resend
    assert same.outcomes == (StoreOutcome.DUPLICATE,) and same.conflicts == ()


def test_a_partially_overlapping_range_is_rejected_as_an_identity_conflict(store):
    store.store_metrics_batch([in_epoch(row("d", 1, 2), E1)])
    result = store.store_metrics_batch([in_epoch(row("d", 2, 3), E1)])
    assert result.outcomes == (StoreOutcome.REJECTED,)
    [(device, line)] = result.conflicts
    assert device == "d" and "partially overlaps" in line


def test_sequences_past_an_epochs_block_are_rejected(store):
    """A sequence that would reach into the next epoch's block is refused."""
    ok = store.store_metrics_batch([in_epoch(row("d", 1), E1)])
    far = dataclasses.replace(in_epoch(row("d", 2), E1), seq_lo=B, seq_hi=B)
    result = store.store_metrics_batch([far])
    assert ok.outcomes == (StoreOutcome.STORED,) and result.outcomes == (StoreOutcome.REJECTED,)
    assert store.stored_ranges("d") == [(1, 1)]


def test_a_new_epoch_within_one_batch_starts_after_the_rows_stored_before_it(store):
    ms = [in_epoch(row("d", q), E1) for q in (1, 2)] + [in_epoch(row("d", 1, at=LATER), E2)]
    result = store.store_metrics_batch(ms)
    assert result.outcomes == (StoreOutcome.STORED,) * 3
    assert result.acks == {("d", E1): 2, ("d", E2): 1} and result.current == {"d": E2}
    assert store.stored_ranges("d") == [(1, 1), (2, 2), (B + 1, B + 1)]


def test_epochs_survive_a_restart_of_the_hub(tmp_path):
    with Store(tmp_path / "hub.db") as s:
        s.store_metrics_batch([in_epoch(row("d", 1), E1), in_epoch(row("d", 1, at=LATER), E2)])
    with Store(tmp_path / "hub.db") as s:
        assert s.store_metrics_batch([in_epoch(row("d", 2, at=LATER), E2)]).acks == {("d", E2): 2}
        again = s.store_metrics_batch([in_epoch(row("d", 1), E1)])
        assert again.outcomes == (StoreOutcome.DUPLICATE,) and again.acks == {("d", E1): 1}


def test_an_older_epochs_mark_survives_a_restart(tmp_path):
    with Store(tmp_path / "hub.db") as s:
        s.store_metrics_batch([in_epoch(row("d", 1), E1), in_epoch(row("d", 1, at=LATER), E2)])
        assert s.store_metrics_batch([in_epoch(row("d", 3), E1)]).acks == {("d", E1): 1}
        assert s.store_metrics_batch([in_epoch(row("d", 2), E1)]).acks == {("d", E1): 3}
    with Store(tmp_path / "hub.db") as s:
        assert s.store_metrics_batch([in_epoch(row("d", 4), E1)]).acks == {("d", E1): 4}


def test_windows_stored_before_epochs_existed_stay_in_the_legacy_epoch(tmp_path):
    with Store(tmp_path / "hub.db") as s:
        s.store_metrics_batch([row("d", 1), row("d", 2)])  # an agent without epochs
        assert s.store_metrics_batch([row("d", 3)]).acks == {("d", ""): 3}
        assert s.store_metrics_batch([in_epoch(row("d", 1, at=LATER), E1)]).acks == {("d", E1): 1}


def test_a_failed_batch_teaches_the_store_no_epoch(tmp_path):
    """The epoch cache follows the database: a batch rolled back (disk full) leaves no
    trace, so the epoch is recorded when the batch succeeds later."""
    e3 = "3333333333333333"
    with Store(tmp_path / "hub.db") as s:
        s.store_metrics_batch([in_epoch(row("d", 1), E1)])
        pages = s._conn.execute("PRAGMA page_count").fetchone()[0]
        s._conn.execute(f"PRAGMA max_page_count={pages}")  # the disk is full
        with pytest.raises(StoreError, match=r"cannot store metrics .*full"):
            s.store_metrics_batch([in_epoch(row("d", q), e3) for q in range(1, 40)])
        s._conn.execute("PRAGMA max_page_count=1073741823")
        assert s.store_metrics_batch([in_epoch(row("d", 1), e3)]).acks == {("d", e3): 1}
    with Store(tmp_path / "hub.db") as s:
        assert s.store_metrics_batch([in_epoch(row("d", 2), e3)]).acks == {("d", e3): 2}


_MESSAGE = st.tuples(
    st.sampled_from(["a", "b"]),  # device
    st.sampled_from(["next", "next", "next", "next", "skip", "replay", "new epoch"]),
    st.sampled_from([0, 0, 0, 1, 3]),  # seq_hi - seq_lo
)


def _messages(specs) -> list[MetricsMessage]:
    """Messages as devices send them: mostly the next range, some skipped (lost, or
    still to come), replayed or compacted ranges, now and then a new epoch."""
    last, epoch, out = {"a": 0, "b": 0}, {"a": 0, "b": 0}, []
    for device, action, k in specs:
        if action == "new epoch":
            last[device], epoch[device] = 0, epoch[device] + 1
        lo = {"skip": last[device] + 2, "replay": max(1, last[device] - k)}.get(
            action, last[device] + 1
        )
        last[device] = max(last[device], lo + k)
        out.append(in_epoch(row(device, lo, lo + k), ["", E1, E2, E3][epoch[device] % 4]))
    return out


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    messages=st.lists(_MESSAGE, min_size=1, max_size=30),
    cuts=st.lists(st.integers(1, 30), max_size=6),
    reopen_at=st.integers(0, 8),
)
def test_contiguous_marks_from_the_cache_equal_those_read_back(
    tmp_path_factory, monkeypatch, messages, cuts, reopen_at
):
    """The contiguous marks (and so the acks) the store derives from what a batch
    appended equal those it reads back from the table, whatever arrives in what order."""
    import hub.store as store_module

    sent = _messages(messages)
    batches, start = [], 0
    for cut in [*sorted(set(cuts)), len(messages)]:
        if start < cut <= len(messages):
            batches.append(sent[start:cut])
            start = cut

    def run(path):
        results = []
        s = Store(path)
        try:
            for i, batch in enumerate(batches):
                if i == reopen_at:  # a restarted hub: the caches start empty
                    s.close()
                    s = Store(path)
                r = s.store_metrics_batch(batch)
                results.append((r.outcomes, r.contiguous, r.acks))
            ranges = {d: s.stored_ranges(d) for d in "ab"}
            return results, ranges, {d: s.contiguous(d) for d in "ab"}
        finally:
            s.close()

    tmp = tmp_path_factory.mktemp("marks")
    fast = run(tmp / "fast.db")
    with monkeypatch.context() as m:
        m.setattr(
            store_module._Batch,
            "advance",
            lambda self, device_id, cached: store_module._advance_contiguous(self.conn, device_id),
        )
        read_back = run(tmp / "read_back.db")
    assert fast == read_back
