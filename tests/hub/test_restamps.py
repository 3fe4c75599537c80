"""The ``ingest.restamped`` audit entries: one per device per interval, each saying how
many restamped messages it stands for, so a device whose clock stays a day ahead cannot
grow the hash-chained audit log by one entry per message."""

from __future__ import annotations

from hub.errors import HubError
from hub.restamps import ACTION, RestampLog


class Audit:
    def __init__(self, fail: bool = False) -> None:
        self.entries: list[tuple[str, str, str, dict[str, object]]] = []
        self.fail = fail

    def append(self, actor: str, action: str, target: str, details: dict[str, object]) -> None:
        if self.fail:
            raise HubError("audit log: disk full")
        self.entries.append((actor, action, target, details))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_device_whose_clock_stays_ahead_is_audited_once_per_interval_with_a_count():
    audit, clock = Audit(), Clock()
    restamps = RestampLog(audit, interval_s=600.0, clock=clock)
    assert restamps.record("pump-01", {"seq_lo": 1, "seq_hi": 1, "shift_s": -90000.0})
    for seq in range(2, 12):  # ten more messages within the interval: counted, not written
        clock.now += 30
        assert not restamps.record("pump-01", {"seq_lo": seq, "seq_hi": seq, "shift_s": -9e4})
    assert len(audit.entries) == 1
    clock.now += 600
    assert restamps.record("pump-01", {"seq_lo": 12, "seq_hi": 12, "shift_s": -90000.0})
    assert [(a, act, t) for a, act, t, _ in audit.entries] == [("ingest", ACTION, "pump-01")] * 2
    assert [d["messages"] for *_, d in audit.entries] == [1, 11]  # every message accounted for
    assert audit.entries[1][3]["seq_lo"] == 12  # the entry carries its message's details


def test_devices_are_limited_separately():
    audit, clock = Audit(), Clock()
    restamps = RestampLog(audit, interval_s=600.0, clock=clock)
    assert restamps.record("pump-01", {})
    assert restamps.record("pump-02", {})
    assert not restamps.record("pump-01", {})
    assert [t for _, _, t, _ in audit.entries] == ["pump-01", "pump-02"]


def test_an_audit_log_that_cannot_be_written_is_logged_and_never_raises(caplog):
    restamps = RestampLog(Audit(fail=True), clock=Clock())
    assert restamps.record("pump-01", {}) is False
    assert "restamped message not audited: audit log: disk full" in caplog.text
