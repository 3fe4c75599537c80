"""`edgefleet agent run` as a real child process, for the fault tests.

:class:`Daemon` starts the daemon from a TOML config, finds its loopback API port in
its log, kills it with SIGKILL or stops it with SIGTERM (and checks that a stop exits
0). With ``crash_at``, the child is this module run as a program instead: it arms one
crash point, then runs the very same ``edgefleet`` command line. At that point of
activating the bundle with the given SHA-256 the process kills itself with SIGKILL, so
a kill -9 lands in a known state rather than wherever the scheduler happens to be:

- ``staged``: the download is complete and digest-checked in ``downloads/``, the
  bundle's signatures are not verified yet and nothing is in ``slots/``;
- ``verified``: the bundle is verified and renamed into ``slots/``, the pointer still
  names the old model;
- ``switched``: the pointer names the new model (on probation), the new model has not
  served yet and no ``activated`` event went out.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
CRASH_POINTS = ("staged", "verified", "switched")
_API = re.compile(rb"running on http://127\.0\.0\.1:(\d+)")


def poll(predicate: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Check ``predicate`` every 20 ms until it returns something true (returned);
    AssertionError naming ``what`` after ``timeout`` seconds. For conditions nothing
    signals across a process boundary (a file appearing, another process's state)."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


class Daemon:
    """`edgefleet agent run --config <toml>` in a child process of ``python`` (default:
    this interpreter; another environment's runs the agent on its TFLite runtime). A
    reader thread keeps what it logs (also appended to ``<toml>.log``) and wakes whoever
    waits for a line."""

    def __init__(
        self,
        toml: Path,
        crash_at: tuple[str, str] | None = None,
        python: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.toml = toml
        self.crash_at = crash_at
        self.python = python or sys.executable  # another environment's: another runtime
        self.env = env or {}  # set on top of this process's environment
        self.log = toml.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None
        self._lines: list[bytes] = []
        self._ended = False
        self._cond = threading.Condition()
        self._api: str | None = None

    def start(self, crash_at: tuple[str, str] | None = None) -> Daemon:
        """Start the daemon (``crash_at``: (point, sha256) for this run only)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        crash = crash_at or self.crash_at
        if crash is None:
            args = ["-m", "edge_agent.cli"]
        else:
            assert crash[0] in CRASH_POINTS, crash
            args = ["-m", "tests.support.agent_process", *crash]
        env = {**os.environ, **self.env, "PYTHONPATH": str(ROOT)}
        with self._cond:
            self._lines, self._ended, self._api = [], False, None
        self.proc = subprocess.Popen(
            [self.python, *args, "agent", "run", "--config", str(self.toml)],
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        return self

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        with proc.stdout, self.log.open("ab") as log:
            for line in proc.stdout:  # ends when the process is gone
                log.write(line)
                log.flush()
                with self._cond:
                    self._lines.append(line)
                    self._cond.notify_all()
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def output(self) -> str:
        """What this run of the daemon logged so far."""
        with self._cond:
            return b"".join(self._lines).decode(errors="replace")

    def api(self, timeout: float = 60.0) -> str:
        """The base URL of this run's loopback API (once it is listening)."""
        if self._api is None:
            deadline = time.monotonic() + timeout
            with self._cond:
                while not (found := _API.search(b"".join(self._lines))):
                    left = deadline - time.monotonic()
                    assert not self._ended, f"the agent exited:\n{self.output()}"
                    assert left > 0, f"the agent API never listened:\n{self.output()}"
                    self._cond.wait(left)
            self._api = f"http://127.0.0.1:{int(found.group(1))}"
        return self._api

    def predict(self, inputs: Any) -> dict[str, Any]:
        """POST ``inputs`` to the daemon's ``/v1/predict``; the JSON answer (200 only)."""
        response = httpx.post(f"{self.api()}/v1/predict", json={"inputs": inputs}, timeout=60)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def health(self) -> dict[str, Any]:
        """The daemon's ``/v1/health`` (its state)."""
        response = httpx.get(f"{self.api()}/v1/health", timeout=60)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def kill(self) -> None:
        """kill -9, and wait for the process to be gone."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(60) == -signal.SIGKILL

    def wait_crashed(self, timeout: float = 60.0) -> None:
        """Wait for the process to kill itself at its crash point (exit by SIGKILL)."""
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            output = self.output()
            raise AssertionError(f"the agent never reached its crash point:\n{output}") from None
        assert code == -signal.SIGKILL, f"exit {code} instead of a crash:\n{self.output()}"

    def stop(self) -> None:
        """SIGTERM; the daemon must stop cleanly: exit status 0."""
        assert self.proc is not None and self.proc.poll() is None, "not running"
        self.proc.terminate()
        try:
            code = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(60)
            raise AssertionError(f"the agent ignored SIGTERM:\n{self.output()}") from None
        assert code == 0, f"SIGTERM gave exit status {code}:\n{self.output()}"

    def close(self) -> None:
        """Kill a daemon a failed test left running (fixture teardown)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(60)


def write_toml(path: Path, **settings: Any) -> Path:
    """An agent TOML: ``device_id``, ``data_dir``, ``trust_file``, ``broker`` (host, port),
    then optional ``window_s``, ``outbox_budget_bytes``, ``resend_after_s``, ``checkpoint_s``,
    ``attempts``."""
    host, port = settings["broker"]
    lines = [
        f'device_id = "{settings["device_id"]}"',
        f'data_dir = "{settings["data_dir"]}"',
        f'trust_file = "{settings["trust_file"]}"',
        "[broker]",
        f'url = "mqtt://{host}:{port}"',
        "[monitoring]",
        f"window_s = {settings.get('window_s', 3600)}",
        "state_interval_s = 3600",
        f"resend_after_s = {settings.get('resend_after_s', 30)}",
        f"outbox_budget_bytes = {settings.get('outbox_budget_bytes', 8 << 20)}",
        f"checkpoint_s = {settings.get('checkpoint_s', 5)}",
        "[download]",
        f"attempts = {settings.get('attempts', 5)}",
        "[local_api]",
        "port = 0",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _arm(point: str, sha256: str) -> None:
    """Make this process SIGKILL itself at ``point`` of activating bundle ``sha256``."""
    from edge_agent.daemon.slots import Pointer, ProbationRecord, SlotRef, SlotStore

    install, activate = SlotStore.install, SlotStore.activate

    def crash() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def install_or_crash(self: SlotStore, downloaded: Path) -> SlotRef:
        if point == "staged" and downloaded.name.startswith(sha256):
            crash()
        return install(self, downloaded)

    def activate_or_crash(
        self: SlotStore, ref: SlotRef, probation: ProbationRecord | None
    ) -> Pointer:
        if point == "verified" and ref.sha256 == sha256:
            crash()
        pointer = activate(self, ref, probation)
        if point == "switched" and ref.sha256 == sha256:
            crash()
        return pointer

    SlotStore.install = install_or_crash  # type: ignore[method-assign]
    SlotStore.activate = activate_or_crash  # type: ignore[method-assign]


if __name__ == "__main__":
    _arm(sys.argv[1], sys.argv[2])
    from edge_agent.cli import cli

    cli.main(args=sys.argv[3:], prog_name="edgefleet")
