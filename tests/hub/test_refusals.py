"""The refusal log: refused device messages in the audit log, rate-limited."""

from __future__ import annotations

from typing import Any

from hub.errors import HubError
from hub.refusals import ACTION, RefusalLog, device_of


class Audit:
    def __init__(self, fail: bool = False) -> None:
        self.entries: list[tuple[str, str, str, dict[str, Any]]] = []
        self.fail = fail

    def append(self, actor: str, action: str, target: str, details: dict[str, object]) -> None:
        if self.fail:
            raise HubError("audit: disk full")
        self.entries.append((actor, action, target, dict(details)))


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


T = "edgefleet/v1/devices/{}/metrics"


def test_a_flood_of_refused_messages_is_one_entry_per_device_and_kind_per_interval():
    audit, clock = Audit(), Clock()
    log = RefusalLog(audit, interval_s=60, clock=clock)
    assert log.record(T.format("pump-1"), "malformed", "not JSON")
    assert not any(log.record(T.format("pump-1"), "malformed", "not JSON") for _ in range(999))
    assert log.record(T.format("pump-1"), "device_mismatch", "claims pump-2")
    clock.t += 60
    assert log.record(T.format("pump-1"), "malformed", "not JSON")
    assert [(e[2], e[3]["kind"], e[3]["count"]) for e in audit.entries] == [
        ("pump-1", "malformed", 1), ("pump-1", "device_mismatch", 1), ("pump-1", "malformed", 1000),
    ]  # fmt: skip
    assert all(e[0] == "ingest" and e[1] == ACTION for e in audit.entries)


def test_invented_device_ids_cannot_flood_the_audit_log():
    audit, clock = Audit(), Clock()
    log = RefusalLog(audit, interval_s=60, max_per_interval=10, clock=clock)
    for i in range(5000):
        log.record(T.format(f"fake-{i}"), "malformed", "garbage")
    assert len(audit.entries) == 10
    clock.t += 61
    log.record(T.format("fake-x"), "malformed", "garbage")
    assert len(audit.entries) == 11


def test_an_audit_failure_never_raises():
    assert not RefusalLog(Audit(fail=True)).record(T.format("pump-1"), "malformed", "x")


def test_device_of_a_topic_is_printable_and_bounded():
    assert device_of(T.format("pump-1")) == "pump-1"
    assert device_of("edgefleet/v1/devices/a\x00b/metrics") == "a?b"
    assert len(device_of(T.format("x" * 5000))) == 200
    assert device_of("odd") == "odd"
