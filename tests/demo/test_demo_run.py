"""`edgefleet demo --headless`: the whole story on a real hub, broker and agent processes.

One short run (4 agents, `--duration 30`: about a minute) serves several tests: the
story's outcomes and the summary, the default ports being taken meanwhile, a second
demo on the same `--data` refused while it runs, and no process left behind. A second
run is stopped with Ctrl-C (SIGINT) half-way.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from hub.demo.brokers import find_mosquitto
from hub.demo.workdir import open_workdir

pytestmark = pytest.mark.timeout(300)  # a whole demo runs in the module fixture

ROOT = Path(__file__).resolve().parents[2]
DEMO = [sys.executable, "-m", "edge_agent.cli", "demo", "--headless"]


def occupy(port: int) -> socket.socket | None:
    """Listen on 127.0.0.1:port (the demo must not need it); None if already taken."""
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        s.close()
        return None
    s.listen()
    return s


class Run:
    """A demo process whose output lines (and descendant processes) are collected."""

    def __init__(self, *args: str) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [*DEMO, *args], cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, env=env,
        )  # fmt: skip
        self.lines: list[str] = []
        self.eof = False
        self.children: set[int] = set()
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._watch_children, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self.eof = True
            self._changed.notify_all()

    def _watch_children(self) -> None:
        with contextlib.suppress(psutil.Error):
            me = psutil.Process(self.proc.pid)
            while self.proc.poll() is None:
                self.children.update(c.pid for c in me.children(recursive=True))
                time.sleep(0.2)  # sampling the process tree, not waiting for an event

    def wait_for(self, pattern: str, timeout: float = 120) -> str:
        """The first output line matching ``pattern`` (fails saying what was awaited)."""
        regex = re.compile(pattern)

        def found() -> str | None:
            return next((ln for ln in self.lines if regex.search(ln)), None)

        with self._changed:
            ok = self._changed.wait_for(
                lambda: found() is not None or self.proc.poll() is not None, timeout
            )
        line = found()
        assert ok and line is not None, (
            f"awaited a line matching {pattern!r} within {timeout} s; got:\n" + self.text()
        )
        return line

    def finish(self, timeout: float = 240) -> int:
        code = self.proc.wait(timeout)
        with self._changed:
            assert self._changed.wait_for(lambda: self.eof, 30), "the demo's output to end"
        return code

    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture(scope="module")
def story(tmp_path_factory):
    """The short headless run, with the default ports taken and a second demo tried."""
    data = tmp_path_factory.mktemp("demo") / "data"
    held = [s for s in (occupy(8700), occupy(1883)) if s is not None]
    try:
        run = Run("--agents", "4", "--duration", "30", "--data", str(data))
        run.wait_for(r"fleet +4 agents")
        second = subprocess.run(
            [*DEMO, "--agents", "3", "--duration", "10", "--data", str(data)],
            cwd=ROOT, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        code = run.finish()
    finally:
        for s in held:
            s.close()
    return {"run": run, "code": code, "second": second, "data": data}


def log_tail(data: Path, lines: int = 60) -> str:
    log = data / "demo.log"
    return "\n".join(log.read_text().splitlines()[-lines:]) if log.exists() else "(no log)"


def test_headless_story_shows_every_outcome_and_exits_0(story):
    run = story["run"]
    assert story["code"] == 0, run.text() + "\n--- demo.log:\n" + log_tail(story["data"])
    for outcome in ("installed", "drift_alert", "canary_completed", "broken_rolled_back",
                    "caught_up"):  # fmt: skip
        run.wait_for(rf"^outcome +{outcome}: ", timeout=1)
    assert run.wait_for(r"^result ", timeout=1) == "result     every outcome happened"


def test_summary_counts_what_agents_produced_as_stored_by_the_hub(story):
    run = story["run"]
    windows = run.wait_for(r"^windows ", timeout=1)
    produced, stored = map(int, re.findall(r"\d+", windows))
    assert produced == stored > 0 and windows.endswith("(equal)")
    served, counted = map(int, re.findall(r"\d+", run.wait_for(r"^predictions ", timeout=1)))
    assert served == counted > 0
    assert run.wait_for(r"^versions ", timeout=1) == "versions   v2: 4, vibration-cnn v1: 2"
    assert "rolled_back (gate failed: failure_share" in run.wait_for(r"^rollout +broken-v3")
    assert run.wait_for(r"^alert ", timeout=1).startswith("alert      drift-line-3 firing")


def test_motors_run_the_vibration_cnn_and_the_loose_mount_shows_on_its_axis(story):
    """The second kind of model beside the pumps: a tensor-input CNN installed on the
    motors only, and the loose accelerometer mount of the last motor flagged by the
    per-channel summaries of its vertical axis (a gain of 1.4 on az)."""
    run = story["run"]
    assert "install-vibration (v1): completed" in run.wait_for(r"^rollout +install-vibration")
    assert "motor-02's az sensor mount is loose" in run.wait_for(r"^\[.*motors +2 devices")
    loose = run.wait_for(r"^motor +motor-02: ", timeout=1)
    assert re.search(r": (drift|major) on .*\baz\.", loose), loose
    assert not re.search(r"\ba[xy]\.", loose), loose  # only its loose axis
    run.wait_for(r"^motor +motor-01: ", timeout=1)
    # the pump rollouts never touched a motor
    assert "v2: 4" in run.wait_for(r"^versions ", timeout=1)


def test_default_ports_in_use_do_not_stop_the_demo(story):
    hub = story["run"].wait_for(r"hub +API ", timeout=1)
    ports = {int(p) for p in re.findall(r":(\d+)", hub)}
    assert ports and not ports & {8700, 1883}


def test_second_demo_on_the_same_data_is_refused_while_the_first_runs(story):
    second = story["second"]
    assert second.returncode == 1
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert "is running on" in lines[0] and str(story["data"]) in lines[0]
    assert str(story["run"].proc.pid) in lines[0]


def test_data_directory_keeps_the_state_for_the_next_run(story):
    data = story["data"]
    assert (data / "hub" / "hub.db").is_file()
    assert (data / "fleet" / "pump-01" / "outbox.db").is_file()
    work = open_workdir(data)  # the finished demo released its lock
    try:
        assert work.run == 2
    finally:
        work.close()


def test_no_process_is_left_behind(story):
    children = story["run"].children
    assert len(children) >= 1  # the fleet worker (and its resource tracker)
    assert gone(children, within=30), alive(children)


def test_data_directory_of_something_else_is_refused_in_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    proc = subprocess.run(
        [*DEMO, "--data", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0
    assert "is not an EdgeFleet demo directory" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def alive(pids: set[int]) -> list[str]:
    """The processes of ``pids`` still running (zombies count as ended), described."""
    out = []
    for p in pids:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(p)
            if proc.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{p}: {' '.join(proc.cmdline())[:160]}")
    return out


def gone(pids: set[int], within: float = 0.0) -> bool:
    """Whether every process of ``pids`` has ended, polling up to ``within`` seconds: a
    helper such as multiprocessing's resource tracker ends a moment after the demo, once
    it reads the end of its pipe (there is no event to await in another process)."""
    deadline = time.monotonic() + within
    while alive(pids):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True


@pytest.fixture(scope="module")
def killed_then_interrupted(tmp_path_factory):
    """A demo killed with SIGKILL mid-install; then a second run on the same --data (on
    Mosquitto where installed) stopped with Ctrl-C (SIGINT) once v1 is installed."""
    data = tmp_path_factory.mktemp("killed") / "d"
    first = Run("--agents", "3", "--duration", "30", "--data", str(data))
    first.wait_for(r"rollout +install-v1: ")
    first.proc.kill()
    first.finish(timeout=60)
    deadline = time.monotonic() + 60
    while not gone(first.children):  # the workers stop when their pipe to the parent closes
        assert time.monotonic() < deadline, "the killed demo's fleet workers to stop"
        time.sleep(0.2)  # polling other processes' exit: there is no event to await
    broker = "mosquitto" if find_mosquitto() else "embedded"
    second = Run("--agents", "3", "--duration", "120", "--data", str(data), "--broker", broker)
    assert f"({broker})" in second.wait_for(r"hub +API ")
    second.wait_for(r"outcome +installed")
    second.proc.send_signal(signal.SIGINT)
    code = second.finish(timeout=120)
    return {"first": first, "second": second, "code": code, "broker": broker}


def test_kill_9_leaves_a_directory_the_next_run_continues(killed_then_interrupted):
    first, second = killed_then_interrupted["first"], killed_then_interrupted["second"]
    assert len(first.children) >= 1 and gone(first.children)  # no orphaned fleet worker
    assert "(run 2)" in second.wait_for(r"demo directory ", timeout=1)  # the lock was freed
    second.wait_for(r"install-v1: aborted \(left active by an earlier run\)", timeout=1)
    assert "on 3 devices" in second.wait_for(r"outcome +installed", timeout=1)


def test_ctrl_c_stops_everything_and_loses_nothing(killed_then_interrupted):
    run, code = killed_then_interrupted["second"], killed_then_interrupted["code"]
    assert code == 1, run.text()  # headless: not every outcome happened
    result = run.wait_for(r"^result ", timeout=1)
    assert "stopped before the story's end" in result and result.endswith("nothing lost")
    expected = 2 if killed_then_interrupted["broker"] == "mosquitto" else 1
    assert len(run.children) >= expected  # the fleet worker (and Mosquitto)
    assert gone(run.children, within=30), alive(run.children)
