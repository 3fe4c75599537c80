"""How the demo spreads its devices over worker processes."""

from __future__ import annotations

from hub.demo.run import worker_groups


def test_three_pumps_and_two_motors_put_every_device_in_exactly_one_worker():
    # 3 pumps with 4 per worker once put motor-01 in the pumps' worker and again in the
    # motors': two agents with one id and one data directory
    pumps = ["pump-01", "pump-02", "pump-03"]
    motors = ["motor-01", "motor-02"]
    groups = worker_groups(pumps, motors, per=4)
    assert groups == [pumps, motors]
    flat = [d for g in groups for d in g]
    assert sorted(flat) == sorted(pumps + motors) and len(flat) == len(set(flat))


def test_each_kind_is_split_at_per_devices_and_never_mixed():
    pumps = [f"pump-{i}" for i in range(9)]
    groups = worker_groups(pumps, ["motor-1"], per=4)
    assert [len(g) for g in groups] == [4, 4, 1, 1]
    assert groups[-1] == ["motor-1"]
    assert worker_groups(pumps, [], per=0) == [[p] for p in pumps]  # at least one per worker
