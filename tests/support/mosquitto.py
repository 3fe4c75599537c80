"""Mosquitto started by a test from the project's own ``deploy/mosquitto`` configuration.

The deploy files are used as they are, with only the machine-specific lines (port,
file locations, the user to run as) rewritten for a temporary directory.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import pytest

from hub.broker import free_port
from tests.support.tls import TlsFiles

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"


def require_mosquitto() -> str:
    """The mosquitto binary; skip locally (fail in CI) where it is not installed."""
    path = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("mosquitto is not installed (.ci/run installs it)")
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    return path


class Mosquitto:
    """A Mosquitto process on 127.0.0.1 with the deploy config, ACL and given accounts."""

    def __init__(
        self,
        workdir: Path,
        users: dict[str, str],
        tls: TlsFiles | None = None,
        broker_dir: Path | None = None,
    ) -> None:
        """``broker_dir``: use the password file and ACL the hub wrote there (as
        ``/etc/mosquitto/edgefleet`` in production) instead of rendering ``users``."""
        self.binary = require_mosquitto()
        self.dir = workdir
        self.users = users
        self.broker_dir = broker_dir
        self.pid_file = workdir / "mosquitto.pid"
        self.host = "127.0.0.1"
        self.port = free_port()
        self.tls = tls
        self.tls_port = free_port() if tls else None  # devices (client id = username)
        self.hub_tls_port = free_port() if tls else None  # a remote hub (hub account only)
        self.proc: subprocess.Popen[str] | None = None
        self.log: list[str] = []
        self._log_changed = threading.Condition()

    def render(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.broker_dir is not None:
            return self._write_conf(self.broker_dir)
        shutil.copy(DEPLOY / "acl", self.dir / "acl")
        tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
        files = {"passwd": self.users, "hub-passwd": {
            u: p for u, p in self.users.items() if u == "edgefleet-hub"}}  # fmt: skip
        for name, users in files.items():
            path = self.dir / name
            path.write_text("")
            for user, password in users.items():
                subprocess.run([tool, "-b", str(path), user, password], check=True,
                               capture_output=True)  # fmt: skip
            path.chmod(0o600)
        (self.dir / "acl").chmod(0o600)
        return self._write_conf(self.dir)

    def _write_conf(self, files: Path) -> Path:
        lines = []
        for line in (DEPLOY / "mosquitto.conf").read_text().splitlines():
            if line.startswith("listener 1883"):
                line = f"listener {self.port} {self.host}"
            if self.tls is not None:  # the deploy file's commented TLS listener, enabled
                line = self._tls_line(line)
            line = line.replace("/etc/mosquitto/edgefleet/", f"{files}/")
            line = line.replace("/var/lib/mosquitto/", f"{self.dir}/")
            lines.append(line)
        lines.append(f"user {getpass.getuser()}")
        lines.append("log_type information")  # the test waits for "... running"
        conf = self.dir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def _tls_line(self, line: str) -> str:
        """The deploy file's commented TLS listeners, enabled on free ports."""
        assert self.tls is not None
        for prefix, port in (("#tls ", self.tls_port), ("#hubtls ", self.hub_tls_port)):
            if line.startswith(prefix):
                line = line[len(prefix) :]
                if line.startswith("listener "):
                    return f"listener {port} {self.host}"
                files = {"certfile": self.tls.cert, "keyfile": self.tls.key, "cafile": self.tls.ca}
                word = line.split()[0]
                return f"{word} {files[word]}" if word in files else line
        return line

    def start(self) -> Mosquitto:
        conf = self.render()
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(conf)],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        ready = threading.Event()

        def pump() -> None:
            assert self.proc is not None and self.proc.stderr is not None
            for line in self.proc.stderr:
                with self._log_changed:
                    self.log.append(line.rstrip())
                    self._log_changed.notify_all()
                if " running" in line:
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(60) or self.proc.poll() is not None:
            raise RuntimeError("mosquitto did not start:\n" + "\n".join(self.log))
        self.pid_file.write_text(f"{self.proc.pid}\n")  # as Debian's service writes it
        return self

    def wait_for_log(self, predicate: Callable[[list[str]], bool], timeout: float = 60.0) -> None:
        """Block until ``predicate(lines)`` holds for the broker's log so far.

        Raises:
            AssertionError: it did not within ``timeout``.
        """
        with self._log_changed:
            ok = self._log_changed.wait_for(lambda: predicate(self.log), timeout)
        assert ok, "broker log never matched:\n" + "\n".join(self.log[-30:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def __enter__(self) -> Mosquitto:
        return self.start_on_free_ports()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start_on_free_ports(self, attempts: int = 3) -> Mosquitto:
        """:meth:`start`; if another process took a port picked by ``free_port()``
        before Mosquitto bound it (a shared machine), pick new ports and start again.

        Raises:
            RuntimeError: Mosquitto did not start for another reason, or never got ports.
        """
        for attempt in range(attempts):
            try:
                return self.start()
            except RuntimeError:
                self.stop()
                taken = any("Address already in use" in line for line in self.log)
                if not taken or attempt == attempts - 1:
                    raise
            self.log = []
            self.port = free_port()
            for name in ("tls_port", "hub_tls_port"):  # the TLS listeners it has
                if getattr(self, name, None) is not None:
                    setattr(self, name, free_port())
        raise AssertionError("unreachable")
