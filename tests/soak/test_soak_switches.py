"""The soak harness's disk-full and clock-jump faults (``benchmarks/soak/``) really do
what the fault log says: a real outbox on a filesystem that is full, then has room
again, and an agent clock that jumps and comes back."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from benchmarks.soak.ledger import LedgerOutbox, OffsetClock, read_produced, set_clock_offset
from benchmarks.soak.parts import SmallDisk, SoakError
from edge_agent.errors import OutboxError
from tests.agent.test_outbox import nth_window


@pytest.fixture
def small_disk(tmp_path: Path):
    try:
        disk = SmallDisk(tmp_path / "device", size_mb=2)
    except SoakError as exc:
        pytest.skip(f"the disk-full fault needs a tmpfs mount: {exc}")
    yield disk
    disk.close()


def test_full_filesystem_refuses_the_outbox_then_has_room_again(small_disk: SmallDisk) -> None:
    db = small_disk.dir / "outbox.db"
    box = LedgerOutbox(db)
    try:
        box.append(nth_window(0))
        assert small_disk.fill() > 0
        with pytest.raises(OutboxError, match="full"):
            for i in range(1, 200):  # a few may fit in pages already there
                box.append(nth_window(i))
        refused_at = read_produced(db).last_seq
        small_disk.free()
        box.append(nth_window(500))
        after = read_produced(db)
        assert after.last_seq == refused_at + 1 == after.sequences
    finally:
        box.close()


def test_clock_offset_switch_jumps_and_returns(tmp_path: Path) -> None:
    clock = OffsetClock(tmp_path)
    assert abs(clock() - time.time()) < 60
    set_clock_offset(tmp_path, 7200.0)
    clock._looked = -1.0  # look at the file now, not in half a second
    assert clock() - time.time() > 7000
    set_clock_offset(tmp_path, None)
    clock._looked = -1.0
    assert abs(clock() - time.time()) < 60
