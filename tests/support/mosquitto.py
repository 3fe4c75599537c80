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
        self.tls_port = free_port() if tls else None
        self.proc: subprocess.Popen[str] | None = None
        self.log: list[str] = []

    def render(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.broker_dir is not None:
            return self._write_conf(self.broker_dir)
        shutil.copy(DEPLOY / "acl", self.dir / "acl")
        passwd = self.dir / "passwd"
        passwd.write_text("")
        tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
        for user, password in self.users.items():
            subprocess.run([tool, "-b", str(passwd), user, password], check=True,
                           capture_output=True)
        for f in (passwd, self.dir / "acl"):
            f.chmod(0o600)
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
        assert self.tls is not None
        files = {"certfile": self.tls.cert, "keyfile": self.tls.key, "cafile": self.tls.ca}
        if line.startswith("# listener 8883"):
            return f"listener {self.tls_port} {self.host}"
        for word, path in files.items():
            if line.startswith(f"# {word}"):
                return f"{word} {path}"
        if line.startswith("# tls_version"):
            return line[2:]
        return line

    def start(self) -> Mosquitto:
        conf = self.render()
        self.proc = subprocess.Popen([self.binary, "-c", str(conf)], stderr=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, text=True)
        ready = threading.Event()

        def pump() -> None:
            assert self.proc is not None and self.proc.stderr is not None
            for line in self.proc.stderr:
                self.log.append(line.rstrip())
                if " running" in line:
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(15) or self.proc.poll() is not None:
            raise RuntimeError("mosquitto did not start:\n" + "\n".join(self.log))
        self.pid_file.write_text(f"{self.proc.pid}\n")  # as Debian's service writes it
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
