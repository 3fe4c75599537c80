"""The real ``edgefleet console`` in a terminal (tmux), driven by key presses and read
off the screen as a person would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "tests.support.edgefleet_cli"]

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]


class Terminal:
    """A detached tmux session on its own server socket (never the user's tmux)."""

    def __init__(self, command: str, width: int = 120, height: int = 40) -> None:
        self.socket = f"edgefleet-test-{uuid.uuid4().hex[:8]}"
        size = ["-x", str(width), "-y", str(height)]
        self.tmux("new-session", "-d", "-s", "console", *size, command)

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=False
        )
        return done.stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "console")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "console", *keys)

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-t", "console", "-l", text)

    def wait_for(self, check, what: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if check(screen):
                return screen
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}; the screen:\n{screen}")
            time.sleep(0.1)  # a terminal has nothing to await: poll its screen

    def alive(self) -> bool:
        return subprocess.run(
            ["tmux", "-L", self.socket, "has-session", "-t", "console"],
            capture_output=True, check=False,
        ).returncode == 0  # fmt: skip

    def close(self) -> None:
        self.tmux("kill-server")


def test_the_console_command_in_a_terminal(fleet, tmp_path):
    token = tmp_path / "token"
    token.write_text(fleet.tokens["read"] + "\n")
    token.chmod(0o600)
    rc = tmp_path / "rc"
    env = f"env -u EDGEFLEET_TOKEN XDG_CONFIG_HOME={tmp_path / 'cfg'} TERM=xterm-256color"
    cli = " ".join(CLI)
    command = (
        f"cd {ROOT} && {env} {cli} console --hub {fleet.url} --token-file {token}; "
        f"echo $? > {rc}; sleep 60"
    )
    term = Terminal(command)
    try:
        term.wait_for(lambda s: "6 devices" in s and "pump:v2" in s, "the Pulse view")
        term.keys("2")
        screen = term.wait_for(  # the breadcrumb: Pulse's panels name devices too
            lambda s: "Pulse \u203a Fleet" in s and "valve-01" in s and "pump-05" in s,
            "the Fleet view",
        )
        assert "pump-05" in screen and "never" in screen
        term.keys("/")  # a person looks for the box before typing
        term.wait_for(lambda s: "tag:site-a  version:2" in s, "the filter box")
        term.type("tag:site-b")
        term.keys("Enter")
        screen = term.wait_for(
            lambda s: "filter: tag:site-b" in s and "pump-01" not in s, "the filtered fleet"
        )
        assert "pump-04" in screen and "valve-01" in screen
        term.keys(":")
        term.wait_for(lambda s: ":device <id>" in s, "the command prompt")
        term.type("device valve-01")
        term.keys("Enter")
        screen = term.wait_for(lambda s: "Fleet \u203a valve-01" in s, "the Device view")
        screen = term.wait_for(lambda s: "pump:v2" in s and "previous  pump:v1" in s, "versions")
        assert "need the 'deploy' scope" in screen  # a read token: actions disabled, and why
        term.keys("?")
        term.wait_for(lambda s: "keys (Esc closes)" in s, "the help screen")
        term.keys("Escape")  # (Escape then q at once would read as Alt+q)
        term.wait_for(lambda s: "keys (Esc closes)" not in s, "the help screen closed")
        term.keys("q")
        term.wait_for(lambda s: rc.exists() or not s.strip(), "the console to quit")
        deadline = time.monotonic() + 30
        while not rc.exists():
            assert time.monotonic() < deadline, "the console did not exit"
            time.sleep(0.1)
        assert rc.read_text().strip() == "0"
        assert "Traceback" not in term.screen()
    finally:
        term.close()


def test_without_a_token_the_console_says_where_to_put_one(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "EDGEFLEET_TOKEN"}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "cfg")
    done = subprocess.run(
        [*CLI, "console", "--hub", "http://127.0.0.1:9"],
        capture_output=True, text=True, cwd=ROOT, env=env, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f'Error: no API token: set EDGEFLEET_TOKEN, pass --token-file, or put token = "..." '
        f"in {tmp_path / 'cfg' / 'edgefleet' / 'console.toml'} (mode 600)"
    ]


TFLITE_PYTHON = Path("/work/main/.venv-tflite/bin/python")


@pytest.mark.skipif(not TFLITE_PYTHON.exists(), reason="no agent-only environment here")
def test_on_a_device_install_the_console_names_its_extra(tmp_path):
    """The agent-only environment (no textual) lists `console` but running it says which
    extra to install, in one line, instead of a traceback."""
    token = tmp_path / "token"
    token.write_text("efb_x")
    token.chmod(0o600)
    done = subprocess.run(
        [str(TFLITE_PYTHON), "-m", "tests.support.edgefleet_cli", "console",
         "--hub", "http://127.0.0.1:9", "--token-file", str(token)],
        capture_output=True, text=True, cwd=ROOT, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [
        "Error: the console needs the console extra (textual is missing): "
        "pip install 'edgefleet[console]'"
    ]
