"""The demo's MQTT broker on loopback: the hub's embedded one, or a Mosquitto process.

Mosquitto runs with a minimal configuration of its own in the demo directory: one
anonymous listener on ``127.0.0.1`` (a free port), no persistence. The production
layout (TLS listeners, per-device accounts, the ACL) is in ``deploy/mosquitto`` and the
README's "Running a real fleet".
"""

from __future__ import annotations

import getpass
import shutil
import subprocess
import time
from pathlib import Path

from hub.broker import free_port
from hub.errors import HubError

MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def find_mosquitto() -> str | None:
    """The mosquitto binary, or None where it is not installed."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return next((p for p in MOSQUITTO_PATHS if Path(p).exists()), None)


class MosquittoProcess:
    """``mosquitto -c <dir>/mosquitto.conf`` on a free loopback port."""

    def __init__(self, directory: Path) -> None:
        """Configure (nothing runs before :meth:`start`).

        Raises:
            HubError: Mosquitto is not installed.
        """
        binary = find_mosquitto()
        if binary is None:
            raise HubError(
                "--broker mosquitto: mosquitto is not installed (apt-get install mosquitto)"
            )
        self.binary = binary
        self.dir = directory
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:<port>``."""
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0, attempts: int = 3) -> MosquittoProcess:
        """Start it and wait until it accepts connections (another port if the one
        picked was taken meanwhile).

        Raises:
            HubError: it did not start.
        """
        import socket

        self.dir.mkdir(parents=True, exist_ok=True)
        log = self.dir / "mosquitto.log"
        for _ in range(attempts):
            self.port = free_port()
            conf = self.dir / "mosquitto.conf"
            conf.write_text(
                f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                f"max_queued_messages 200000\nmax_inflight_messages 100\n"
                f"user {getpass.getuser()}\nlog_dest file {log}\n"
            )
            self.proc = subprocess.Popen(  # noqa: S603 - our own binary and config
                [self.binary, "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches the demo, which stops it
            )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return self
                except OSError:
                    time.sleep(0.1)  # polling a port that is not listening yet
            self.stop()
        raise HubError(f"mosquitto did not start (see {log})")

    def stop(self) -> None:
        """Stop it (idempotent)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
