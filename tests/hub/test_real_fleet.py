"""README "Running a real fleet", step by step, on one machine.

Real Mosquitto (the deploy configuration with its TLS listener and the ACL and password
file the hub wrote), `edgefleet hub serve` over HTTPS, an enrolled agent as its own
`edgefleet agent run` process, and the CLI for everything an operator types. The only
departures from the README: loopback addresses and free ports, files under a temporary
directory, and 1-second metric windows so the test sees drift data quickly.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from hub.broker import free_port
from tests.support.mosquitto import Mosquitto
from tests.support.tls import TlsFiles

pytestmark = pytest.mark.timeout(240)


def edgefleet(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", *args],
        capture_output=True, text=True, timeout=180, env={**os.environ, **(env or {})},
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"edgefleet {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


class Process:
    """A long-running `edgefleet` command whose stderr is read line by line."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent.cli", *args],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
            env={**os.environ, **(env or {})},
        )  # fmt: skip
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self.cond:
                self.lines.append(line.rstrip())
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        """The first stderr line matching ``pattern`` (fails if the process exits first)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines:
                    if m := regex.search(line):
                        return m
                left = deadline - time.monotonic()
                assert self.proc.poll() is None, "exited:\n" + "\n".join(self.lines)
                assert left > 0, f"no line matching {pattern!r}:\n" + "\n".join(self.lines)
                self.cond.wait(min(left, 1.0))

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(30)


def test_the_readme_real_fleet_walkthrough(tmp_path, demo_dir):
    tls_dir, data, broker_dir = tmp_path / "tls", tmp_path / "hub-data", tmp_path / "mqtt"

    # 2. Certificates: the fleet CA and one server certificate for broker and API.
    edgefleet("hub", "tls", "--out", str(tls_dir), "--host", "127.0.0.1")
    tls = TlsFiles(tls_dir / "ca.crt", tls_dir / "server.crt", tls_dir / "server.key",
                   tls_dir / "ca.key")  # fmt: skip
    # 3. Hub data and the broker's files.
    edgefleet("hub", "init", "--data", str(data), "--broker-dir", str(broker_dir))
    hub_password = broker_dir / "hub-password"
    # 4. Broker: the deploy configuration with its TLS listener, reading the hub's files.
    with Mosquitto(tmp_path / "mosquitto", {}, tls=tls, broker_dir=broker_dir) as mosquitto:
        assert not [line for line in mosquitto.log if "deprecated" in line.lower()]
        broker = f"mqtts://127.0.0.1:{mosquitto.tls_port}"  # the devices' TLS listener
        api_port = free_port()
        # 5. Hub.
        hub = Process(
            "hub", "serve", "--data", str(data), "--api-port", str(api_port),
            "--broker-url", f"mqtt://127.0.0.1:{mosquitto.port}",  # the hub's loopback listener
            "--broker-username", "edgefleet-hub", "--broker-password-file", str(hub_password),
            "--tls-cert", str(tls.cert), "--tls-key", str(tls.key),
        )  # fmt: skip
        agent = None
        try:
            api = hub.wait_for(r"API (https://\S+?),")[1]
            assert api == f"https://127.0.0.1:{api_port}"
            # 6. Tokens.
            made = edgefleet("hub", "token", "create", "--data", str(data), "--name", "ci",
                             "--scope", "deploy", "--scope", "read", "--json")  # fmt: skip
            token = json.loads(made.stdout)["token"]
            env = {"EDGEFLEET_TOKEN": token, "EDGEFLEET_HUB": api, "EDGEFLEET_HUB_CA": str(tls.ca)}
            # 7. Enrol a device.
            edgefleet(
                "device", "enroll", "pump-017", "--data", str(data),
                "--broker-dir", str(broker_dir), "--tags", "site-a,pumps",
                "--hub-url", api, "--broker-url", broker,
                "--broker-ca", str(tls.ca), "--hub-ca", str(tls.ca),
                "--device-data-dir", str(tmp_path / "device-data"), "--local-api-port", "0",
                "--reload-pid-file", str(mosquitto.pid_file),
            )  # fmt: skip
            config = data / "enrolled" / "pump-017" / "agent.toml"
            config.write_text(
                config.read_text() + "\n[monitoring]\nwindow_s = 1\nstate_interval_s = 1\n"
            )
            # 8. The agent.
            agent = Process("agent", "run", "--config", str(config))
            local = agent.wait_for(r"running on (http://127\.0\.0\.1:\d+)")[1]
            # 9. Push a model (what `model demo` wrote: model, reference, schema).
            edgefleet(
                "model", "push", str(demo_dir / "model-int8.tflite"), "--name", "pump",
                "--reference", str(demo_dir / "reference.npz"),
                "--schema", str(demo_dir / "schema.json"), env=env,
            )  # fmt: skip
            # 10. The first rollout, waited for.
            edgefleet(
                "rollout", "start", "--id", "first", "--model", "pump", "--version", "1",
                "--stages", "100", "--bake", "2", "--probation", "2", "--no-drift-gate",
                "--wait", "150", env=env,
            )  # fmt: skip
            # The device serves the rolled-out model to a local app.
            with np.load(demo_dir / "reference.npz") as ref:
                rows = ref["x"][:50].tolist()
            for row in rows:
                r = httpx.post(f"{local}/v1/predict", json={"inputs": row}, timeout=30)
                assert r.status_code == 200, r.text
                assert r.json()["model"]["version"] == 1
            # 11. Watch: drift through the API (the agent's windows reached the hub).
            pinned = ssl.create_default_context(cafile=str(tls.ca))
            with httpx.Client(base_url=api, verify=pinned, timeout=30,
                              headers={"Authorization": f"Bearer {token}"}) as client:  # fmt: skip
                deadline = time.monotonic() + 60
                while True:
                    drift = client.get("/v1/models/pump/versions/1/drift").json()
                    if drift["n"] >= len(rows):
                        break
                    assert time.monotonic() < deadline, f"windows never reached the hub: {drift}"
                    time.sleep(0.5)
                assert drift["report"] is not None
                metrics = client.get("/metrics")
                assert metrics.status_code == 200
                assert "edgefleet_ingest_stored_total" in metrics.text
                assert httpx.get(f"{api}/metrics", verify=pinned).status_code == 401
            assert agent.stop() == 0
            agent = None
        finally:
            if agent is not None:
                agent.stop()
            assert hub.stop() == 0, "\n".join(hub.lines)
    # no secret was ever logged
    said = "\n".join(hub.lines)
    assert hub_password.read_text().strip() not in said and token not in said


def test_the_hub_unit_runs_hub_serve_with_real_options():
    """deploy/edgefleet-hub.service names only options `hub serve` has."""
    from edge_agent.cli import _load_plugins, cli

    _load_plugins(cli)
    serve = cli.commands["hub"].commands["serve"]  # type: ignore[attr-defined]
    known = {opt for p in serve.params for opt in p.opts}
    unit = (Path(__file__).resolve().parents[2] / "deploy" / "edgefleet-hub.service").read_text()
    exec_start = unit.split("ExecStart=", 1)[1].split("\nRestart", 1)[0]
    used = set(re.findall(r"(--[a-z-]+)", exec_start))
    assert used and used <= known, used - known
    assert "LoadCredential=broker-password:" in unit
    assert "--broker-password-file ${CREDENTIALS_DIRECTORY}/broker-password" in exec_start
