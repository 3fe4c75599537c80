"""The demo's --data directory: refused when it is not the demo's, locked while a demo runs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hub.demo.workdir import FORMAT, LOCK, MARKER, DemoDirError, open_workdir

HOLD = """
import sys, time
from pathlib import Path
from hub.demo.workdir import open_workdir
work = open_workdir(Path(sys.argv[1]))
print("locked", flush=True)
sys.stdin.readline()
"""


def test_new_directory_is_created_and_counts_runs(tmp_path):
    d = tmp_path / "demo"
    first = open_workdir(d)
    assert first.fresh and first.run == 1
    first.close()
    second = open_workdir(d)
    assert second.run == 2 and not second.fresh
    second.close()
    assert json.loads((d / MARKER).read_text()) == {"format": FORMAT, "runs": 2}


def test_empty_existing_directory_is_accepted(tmp_path):
    open_workdir(tmp_path).close()
    assert (tmp_path / MARKER).exists()


def test_non_edgefleet_directory_is_refused_and_left_untouched(tmp_path):
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(DemoDirError, match="is not an EdgeFleet demo directory"):
        open_workdir(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.tex"]


def test_directory_of_another_demo_version_is_refused(tmp_path):
    (tmp_path / MARKER).write_text(json.dumps({"format": "edgefleet-demo/0", "runs": 3}))
    with pytest.raises(DemoDirError, match=r"another EdgeFleet demo version .*edgefleet-demo/0"):
        open_workdir(tmp_path)
    assert json.loads((tmp_path / MARKER).read_text())["runs"] == 3  # not counted


def test_corrupt_marker_is_refused(tmp_path):
    (tmp_path / MARKER).write_text("{not json")
    with pytest.raises(DemoDirError, match="cannot be read"):
        open_workdir(tmp_path)


def test_a_file_is_refused(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(DemoDirError, match="is not a directory"):
        open_workdir(f)


def test_second_demo_on_the_same_directory_is_refused_while_the_first_runs(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(DemoDirError, match=f"pid {holder.pid}\\) is running on"):
            open_workdir(tmp_path)
    finally:
        holder.communicate("\n", timeout=30)
    again = open_workdir(tmp_path)  # the lock went with the process
    assert again.run == 2
    again.close()
    assert (tmp_path / LOCK).exists()
