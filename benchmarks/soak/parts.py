"""The soak's processes: the hub as ``edgefleet hub serve`` (so it can be killed -9), and
Mosquitto with the production configuration (TLS, the password file and ACL the hub's
enrolment writes).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from hub.broker import free_port
from hub.enroll import enroll_device, ensure_acl, ensure_hub_account
from hub.keys import init_keys
from hub.store import Store
from hub.tls import TlsFiles, make_tls
from hub.tokens import TokenStore


class SoakError(Exception):
    """The soak could not run (a part did not start): one line says which."""


class HubProcess:
    """``edgefleet hub serve`` on fixed ports (the same after every restart)."""

    def __init__(
        self,
        data: Path,
        public_url: str,
        log_file: Path,
        *,
        broker_url: str | None = None,
        password_file: Path | None = None,
    ) -> None:
        """Prepare the data directory (keys, store, an API token); nothing runs yet."""
        self.data, self.public_url, self.log_file = data, public_url, log_file
        self.broker_url, self.password_file = broker_url, password_file
        self.api_port = free_port()
        self.broker_port = free_port() if broker_url is None else None
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        data.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not (data / "keys" / "trust.json").exists():
            init_keys(data / "keys")
        with Store(data / "hub.db"):
            pass
        tokens = TokenStore(data / "hub.db")
        try:
            self.token, _ = tokens.create("soak", ["deploy", "read", "admin"])
        finally:
            tokens.close()

    @property
    def api_url(self) -> str:
        """Where the hub's API listens (the harness talks to it directly)."""
        return f"http://127.0.0.1:{self.api_port}"

    def start(self, timeout: float = 120.0) -> None:
        """Start it and wait until ``/healthz`` answers.

        Raises:
            SoakError: it exited or did not answer within ``timeout``.
        """
        cmd = [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "hub",
            "serve",
            "--data",
            str(self.data),
            "--api-port",
            str(self.api_port),
            "--public-url",
            self.public_url,
        ]
        if self.broker_url is None:
            cmd += ["--broker-port", str(self.broker_port)]
        else:
            cmd += [
                "--broker-url",
                self.broker_url,
                "--broker-username",
                "edgefleet-hub",
                "--broker-password-file",
                str(self.password_file),
            ]
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SoakError(f"the hub exited with {self.proc.returncode} (see {self.log_file})")
            try:
                if httpx.get(f"{self.api_url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)  # polling a port that is not listening yet
        raise SoakError(f"the hub did not answer within {timeout:.0f} s (see {self.log_file})")

    def died(self) -> int | None:
        """The exit status if it ended by itself (None while it runs)."""
        return None if self.proc is None else self.proc.poll()

    def kill9(self) -> None:
        """SIGKILL (the harness's fault) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
        self.proc = None

    def stop(self) -> int | None:
        """SIGTERM; returns its exit status (killed after 60 s: returns None)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return 0
        if proc.poll() is not None:
            return proc.returncode
        proc.terminate()
        try:
            return proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
            return None


class ProductionMosquitto:
    """Mosquitto from ``deploy/mosquitto`` with TLS for devices, reading the password file
    and ACL that ``hub init`` and enrolment wrote (what the README's real fleet runs)."""

    def __init__(self, directory: Path, data: Path) -> None:
        """Make the CA, the broker's files and the hub's account (nothing runs yet)."""
        from tests.support.mosquitto import Mosquitto

        self.dir = directory
        self.broker_dir = directory / "broker"
        self.tls: TlsFiles = make_tls(directory / "tls", ["127.0.0.1"])
        ensure_acl(self.broker_dir)
        ensure_hub_account(self.broker_dir)
        self.password_file = self.broker_dir / "hub-password"
        self.data = data
        self.proc = Mosquitto(directory / "mosquitto", {}, tls=self.tls, broker_dir=self.broker_dir)

    def enroll(self, device_ids: list[str], bundles: Path) -> dict[str, str]:
        """Enrol every device (broker account, hub record); returns their passwords."""
        passwords = {}
        with Store(self.data / "hub.db") as store:
            for device in device_ids:
                e = enroll_device(
                    device,
                    tags=["soak"],
                    store=store,
                    broker_dir=self.broker_dir,
                    hub_url="http://127.0.0.1:1",
                    broker_url="mqtts://127.0.0.1:8883",
                    trust_file=self.data / "keys" / "trust.json",
                    out_dir=bundles,
                    broker_ca=self.tls.ca,
                )
                passwords[device] = (e.bundle_dir / "broker-password").read_text().strip()
        return passwords

    @property
    def hub_url(self) -> str:
        """The hub's loopback listener."""
        return f"mqtt://127.0.0.1:{self.proc.port}"

    @property
    def device_port(self) -> int:
        """The devices' TLS listener."""
        assert self.proc.tls_port is not None
        return self.proc.tls_port

    def start(self) -> None:
        """Start it (on the same ports as before after a restart).

        Raises:
            SoakError: it did not start.
        """
        try:
            self.proc.start_on_free_ports()
        except RuntimeError as exc:
            raise SoakError(f"mosquitto did not start: {str(exc)[:300]}") from exc

    def died(self) -> int | None:
        """The exit status if it ended by itself."""
        p = self.proc.proc
        return None if p is None else p.poll()

    def restart(self) -> None:
        """SIGTERM (it saves its retained messages) and start again on the same ports."""
        self.proc.stop()
        try:
            self.proc.start()
        except RuntimeError as exc:
            raise SoakError(f"mosquitto did not restart: {str(exc)[:300]}") from exc

    def stop(self) -> None:
        """Stop it."""
        self.proc.stop()


class SmallDisk:
    """A small tmpfs mounted on one agent's data directory, so the harness can fill it
    (a real ``ENOSPC`` for every write the agent makes there: outbox, WAL, checkpoint,
    downloads, slots) and empty it again. Needs the right to mount (root here)."""

    FILLER = "soak-disk-filler"

    def __init__(self, directory: Path, size_mb: int = 32) -> None:
        """Mount it on ``directory`` (made if missing).

        Raises:
            SoakError: it could not be mounted (one line: why).
        """
        self.dir = directory
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs", str(directory)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SoakError(f"cannot mount a tmpfs on {directory}: {done.stderr.strip()[:200]}")

    def fill(self) -> int:
        """Write a file until the filesystem is full; returns the bytes it took."""
        written = 0
        fd = os.open(self.dir / self.FILLER, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for chunk in (1 << 20, 1 << 12, 1 << 9):
                block = bytes(chunk)
                while True:
                    try:
                        n = os.write(fd, block)
                    except OSError:
                        break  # ENOSPC at this size: a smaller one may still fit
                    written += n
                    if n < chunk:
                        break
        finally:
            os.close(fd)
        return written

    def free(self) -> None:
        """Delete the filler: space again."""
        (self.dir / self.FILLER).unlink(missing_ok=True)

    def close(self) -> None:
        """Copy what it holds next to it (``<dir>-tmpfs``, for a failed run's post-mortem),
        then unmount it (lazily, so a process still in it does not keep it mounted)."""
        self.free()
        shutil.copytree(self.dir, self.dir.with_name(self.dir.name + "-tmpfs"), dirs_exist_ok=True)
        subprocess.run(["umount", "-l", str(self.dir)], capture_output=True, check=False)
