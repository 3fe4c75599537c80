"""The assembled hub (embedded broker, ingest, store, API) with a real agent reporting to it."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from edge_agent.contract.messages import State
from edge_agent.contract.topics import Channel
from edge_agent.daemon.agent import Agent
from edge_agent.daemon.config import BrokerConfig
from hub.broker import free_port
from hub.rollups import HOUR_S, hour_of
from hub.service import HubService, HubSettings
from hub.store import Store
from tests.support.bundles import model_ref
from tests.support.hub_double import HubDouble
from tests.support.mosquitto import Mosquitto
from tests.support.tls import make_tls

pytestmark = pytest.mark.timeout(90)


def edgefleet(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the `edgefleet` command line in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


@pytest.fixture
def hub_service(tmp_path):
    settings = HubSettings(data_dir=tmp_path / "hub", api_port=0, embedded_broker_port=free_port())
    with HubService(settings) as service:
        yield service


def test_agent_reports_to_the_hub_and_the_api_shows_it(
    hub_service, agent_config, server, bundles, reference_x, signing_keys
):
    broker = hub_service.broker
    token, _ = hub_service.tokens.create("ops", ["admin"])
    headers = {"Authorization": f"Bearer {token}"}
    config = replace(agent_config, broker=BrokerConfig(host=broker.host, port=broker.port))
    # until rollouts exist, the directive is signed and published by the test double (no acks)
    publisher = HubDouble(broker.host, broker.port, signing_keys[:2], ack=False)
    try:
        with Agent(config) as agent:
            url = server.add("/b/v1.efb", bundles["v1"].read_bytes())
            publisher.publish_directive(
                publisher.directive(config.device_id, model_ref(bundles["v1"], url))
            )
            publisher.wait_for(publisher.event(config.device_id, "activated"))
            for row in reference_x[:25]:
                agent.predict(row)
            agent.close_window()
            assert agent.wait_for_drain(60), "the hub's ingest stored and acked the window"
            api = hub_service.api.url
            devices = httpx.get(f"{api}/v1/devices", headers=headers).json()["devices"]
            assert [d["id"] for d in devices] == [config.device_id]
            detail = httpx.get(f"{api}/v1/devices/{config.device_id}", headers=headers).json()
            assert detail["active"]["version"] == 1 and detail["metrics_seq"] >= 1
            events = httpx.get(
                f"{api}/v1/events", headers=headers, params={"device": config.device_id}
            ).json()["events"]
            assert "activated" in [e["kind"] for e in events]
            metrics = httpx.get(f"{api}/metrics", headers=headers).text
            assert "edgefleet_ingest_stored_total" in metrics
            assert httpx.get(f"{api}/v1/devices/nope", headers=headers).status_code == 404
            assert httpx.get(f"{api}/v1/devices").status_code == 401
    finally:
        publisher.close()


def test_audit_log_records_token_actions_and_verifies(hub_service, tmp_path):
    token, _ = hub_service.tokens.create("ops", ["admin"])
    headers = {"Authorization": f"Bearer {token}"}
    api = hub_service.api.url
    created = httpx.post(
        f"{api}/v1/tokens", headers=headers, json={"name": "ci", "scopes": ["deploy"]}
    ).json()
    httpx.delete(f"{api}/v1/tokens/{created['id']}", headers=headers)
    audit = httpx.get(f"{api}/v1/audit", headers=headers).json()
    assert [e["action"] for e in audit["entries"]] == ["hub.start", "token.create", "token.revoke"]
    assert audit["verified"] is True
    assert created["token"] not in json.dumps(audit)
    proc = edgefleet("audit", "verify", "--data", str(hub_service.settings.data_dir))
    assert proc.returncode == 0, proc.stderr
    assert "verified: 3 entries" in proc.stdout


def test_audit_verify_cli_detects_an_edited_entry(hub_service):
    import sqlite3

    db = hub_service.settings.data_dir / "hub.db"
    hub_service.audit.append("ops", "model.push", "pump", {"version": 2})
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE audit SET target = 'other' WHERE action = 'model.push'")
    proc = edgefleet("audit", "verify", "--data", str(hub_service.settings.data_dir))
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "edited" in proc.stderr


def hub_bundle(hub_service, demo_dir, reference_x, tmp_path, version=1):
    """A bundle signed with the hub's own keys (what `model push` will produce)."""
    from hub.bundler import ReferenceData, build_bundle
    from hub.keys import load_private_key

    keys = [
        load_private_key(p).key
        for p in sorted((hub_service.settings.data_dir / "keys").glob("key-*.pem"))
    ]
    out = tmp_path / f"pump-{version}.efb"
    build_bundle(
        (demo_dir / "model-int8.tflite").read_bytes(),
        name="pump",
        version=version,
        reference=ReferenceData(reference_x, tuple(f"f{i}" for i in range(10))),
        keys=keys,
        out=out,
    )
    return out


def test_bundle_upload_listing_and_downloads(hub_service, demo_dir, reference_x, tmp_path):
    from hub.api import sign_bundle_url

    deploy, _ = hub_service.tokens.create("ci", ["deploy"])
    reader, _ = hub_service.tokens.create("ro", ["read"])
    api = hub_service.api.url
    bundle = hub_bundle(hub_service, demo_dir, reference_x, tmp_path)
    data = bundle.read_bytes()
    assert (
        httpx.post(
            f"{api}/v1/bundles", content=data, headers={"Authorization": f"Bearer {reader}"}
        ).status_code
        == 403
    )
    r = httpx.post(f"{api}/v1/bundles", content=data, headers={"Authorization": f"Bearer {deploy}"})
    assert r.status_code == 201, r.text
    sha = r.json()["sha256"]
    tampered = bytearray(data)
    tampered[data.index(b"TFL3") + 50] ^= 1
    bad = httpx.post(
        f"{api}/v1/bundles", content=bytes(tampered), headers={"Authorization": f"Bearer {deploy}"}
    )
    assert bad.status_code == 422 and "does not match" in bad.json()["error"]
    read = {"Authorization": f"Bearer {reader}"}
    assert httpx.get(f"{api}/v1/models", headers=read).json()["models"][0]["latest_version"] == 1
    got = httpx.get(f"{api}/v1/bundles/{sha}", headers=read)
    assert got.content == data and got.headers["etag"] == f'"{sha}"'
    part = httpx.get(f"{api}/v1/bundles/{sha}", headers={**read, "Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert httpx.get(f"{api}/v1/bundles/{sha}").status_code == 401
    expires = int(__import__("time").time()) + 60
    secret = (hub_service.settings.data_dir / "url-secret").read_bytes()
    sig = sign_bundle_url(secret, sha, expires)
    signed = httpx.get(f"{api}/v1/bundles/{sha}", params={"expires": expires, "sig": sig})
    assert signed.status_code == 200 and signed.content == data
    forged = httpx.get(f"{api}/v1/bundles/{sha}", params={"expires": expires + 1, "sig": sig})
    assert forged.status_code == 401
    stale = sign_bundle_url(secret, sha, 1)
    assert (
        httpx.get(f"{api}/v1/bundles/{sha}", params={"expires": 1, "sig": stale}).status_code == 401
    )
    assert httpx.get(f"{api}/v1/bundles/..%2f..%2fetc%2fpasswd", headers=read).status_code == 404


def test_fleet_drift_of_a_version_from_agent_windows(
    hub_service, demo_dir, reference_x, tmp_path, agent_config, signing_keys
):
    from tests.support.bundles import model_ref

    reader, _ = hub_service.tokens.create("ro", ["read"])
    api = hub_service.api.url
    bundle = hub_bundle(hub_service, demo_dir, reference_x, tmp_path)
    hub_service.registry.add_bundle(bundle)
    hub_trust = hub_service.settings.data_dir / "keys" / "trust.json"
    config = replace(
        agent_config,
        trust_file=hub_trust,
        broker=BrokerConfig(host=hub_service.broker.host, port=hub_service.broker.port),
    )
    from hub.keys import load_private_key

    keys = [
        load_private_key(p).key
        for p in sorted((hub_service.settings.data_dir / "keys").glob("key-*.pem"))
    ]
    publisher = HubDouble(hub_service.broker.host, hub_service.broker.port, keys, ack=False)
    try:
        sha = hub_service.registry.get("pump", 1).sha256
        from hub.api import sign_bundle_url

        expires = int(__import__("time").time()) + 600
        secret = (hub_service.settings.data_dir / "url-secret").read_bytes()
        url = (
            f"{api}/v1/bundles/{sha}?expires={expires}&sig={sign_bundle_url(secret, sha, expires)}"
        )
        with Agent(config) as agent:
            publisher.publish_directive(
                publisher.directive(config.device_id, model_ref(bundle, url))
            )
            publisher.wait_for(publisher.event(config.device_id, "activated"))
            shifted = reference_x[:300].copy()
            shifted[:, 0] += 3 * reference_x[:, 0].std()  # sensor 0 drifts
            agent.predict(shifted)
            agent.close_window()
            assert agent.wait_for_drain(60)
        report = httpx.get(
            f"{api}/v1/models/pump/versions/1/drift", headers={"Authorization": f"Bearer {reader}"}
        ).json()["report"]
        assert report["n"] == 300
        drifted = [f["name"] for f in report["features"] if f["drifted"]]
        assert drifted and drifted[0] == "f0"
        hub_service.store.set_tags(config.device_id, ["site-a"])
        auth = {"Authorization": f"Bearer {reader}"}
        cohort = httpx.get(
            f"{api}/v1/models/pump/versions/1/drift", headers=auth, params={"tag": "site-a"}
        ).json()
        assert cohort["n"] == 300
        other = httpx.get(
            f"{api}/v1/models/pump/versions/1/drift", headers=auth, params={"tag": "site-b"}
        ).json()
        assert other["n"] == 0 and other["report"] is None
        # 'since' between the window's end and the next hour: queries answer the window
        # asked for (exact by default); exact=false starts a fleet query at the hour's
        # roll-up (and says so); one device's query is always exact.
        (window,) = hub_service.store.merged_windows("pump", 1)
        hour_start = hour_of(window.end) * HOUR_S
        next_hour = hour_start + HOUR_S
        since = window.end + (next_hour - window.end) / 2
        drift = f"{api}/v1/models/pump/versions/1/drift"
        fleet = httpx.get(drift, headers=auth, params={"since": since}).json()
        assert (fleet["since"], fleet["n"]) == (since, 0)
        assert fleet["decision"]["verdict"] == "insufficient"  # no data: said, not silent
        aligned = httpx.get(drift, headers=auth, params={"since": since, "exact": False})
        assert (aligned.json()["since"], aligned.json()["n"]) == (hour_start, 300)
        later = httpx.get(drift, headers=auth, params={"since": next_hour, "exact": False})
        assert (later.json()["since"], later.json()["n"]) == (next_hour, 0)
        device = httpx.get(drift, headers=auth, params={"since": since, "device": config.device_id})
        assert (device.json()["since"], device.json()["n"]) == (since, 0)
        whole = httpx.get(
            drift, headers=auth, params={"since": window.end, "device": config.device_id}
        )
        assert (whole.json()["since"], whole.json()["n"]) == (window.end, 300)
    finally:
        publisher.close()


def test_pipeline_pushes_a_model_with_the_cli_and_gets_meaningful_exit_codes(
    hub_service, demo_dir, tmp_path
):
    import os

    token, _ = hub_service.tokens.create("ci", ["deploy"])
    env = {**os.environ, "EDGEFLEET_TOKEN": token, "EDGEFLEET_HUB": hub_service.api.url}

    def push(*args: str) -> subprocess.CompletedProcess[str]:
        return edgefleet("model", "push", *args, env=env)

    model = demo_dir / "model-int8.tflite"
    ref = demo_dir / "reference.npz"
    first = push(
        str(model),
        "--name",
        "pump",
        "--reference",
        str(ref),
        "--lineage",
        '{"run": "ci-42"}',
        "--json",
    )
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["version"] == 1
    second = push(str(model), "--name", "pump", "--reference", str(ref))
    assert second.returncode == 0 and "pump v2" in second.stdout
    downgrade = push(str(model), "--name", "pump", "--reference", str(ref), "--version", "1")
    assert downgrade.returncode == 1
    assert downgrade.stderr.count("\n") == 1 and "422" in downgrade.stderr
    no_token = edgefleet(
        "model",
        "push",
        str(model),
        "--name",
        "pump",
        "--reference",
        str(ref),
        env={k: v for k, v in env.items() if k != "EDGEFLEET_TOKEN"},
    )
    assert no_token.returncode == 1 and "EDGEFLEET_TOKEN" in no_token.stderr
    usage = push(str(model), "--name", "pump")
    assert usage.returncode == 2
    versions = [v.version for v in hub_service.registry.list_versions("pump")]
    assert versions == [1, 2]


def test_pipeline_pushes_a_bundle_signed_elsewhere_and_a_strangers_is_refused_in_one_line(
    hub_service, demo_dir, reference_x, tmp_path
):
    """`model push FILE.efb`: a bundle signed with the hub's trusted keys registers as it
    is (--json prints the hub's answer); one signed by a stranger is refused, one line."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from hub.bundler import ReferenceData, build_bundle
    from hub.keys import load_private_key

    token, _ = hub_service.tokens.create("ci", ["deploy"])
    env = {**os.environ, "EDGEFLEET_TOKEN": token, "EDGEFLEET_HUB": hub_service.api.url}
    model = (demo_dir / "model-int8.tflite").read_bytes()
    reference = ReferenceData(reference_x, tuple(f"f{i}" for i in range(10)))
    key_dir = hub_service.settings.data_dir / "keys"
    trusted = [load_private_key(p).key for p in sorted(key_dir.glob("key-*.pem"))]
    build_bundle(model, name="gauge", version=7, reference=reference, keys=trusted,
                 out=tmp_path / "gauge.efb")  # fmt: skip
    build_bundle(model, name="gauge", version=8, reference=reference,
                 keys=[Ed25519PrivateKey.generate()], out=tmp_path / "stranger.efb")  # fmt: skip
    pushed = edgefleet("model", "push", str(tmp_path / "gauge.efb"), "--json", env=env)
    assert pushed.returncode == 0, pushed.stderr
    answer = json.loads(pushed.stdout)
    assert (answer["name"], answer["version"], answer["status"]) == ("gauge", 7, "registered")
    assert answer["inputs"] and answer["outputs"]  # the hub's whole answer, as it came
    refused = edgefleet("model", "push", str(tmp_path / "stranger.efb"), env=env)
    assert refused.returncode == 1
    (line,) = refused.stderr.splitlines()
    assert line.startswith("Error: hub answered 422: ")
    assert [v.version for v in hub_service.registry.list_versions("gauge")] == [7]


def test_live_event_stream_delivers_new_events(hub_service):
    from edge_agent.contract.messages import Event, EventKind, ModelVersion

    reader, _ = hub_service.tokens.create("ro", ["read"])
    store = hub_service.store
    store.record_event(Event("dev-x", 1.0, EventKind.RECEIVED, "old", ModelVersion("m", 1), 1))
    got = []
    with httpx.stream(
        "GET",
        f"{hub_service.api.url}/v1/events/stream",
        headers={"Authorization": f"Bearer {reader}"},
        params={"after_id": 1, "max_events": 2},
        timeout=60,
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        store.record_event(Event("dev-x", 2.0, EventKind.ACTIVATED, "new", ModelVersion("m", 1), 1))
        store.record_event(Event("dev-y", 3.0, EventKind.FAILED, "bad", ModelVersion("m", 2), 2))
        for line in response.iter_lines():
            if line.startswith("data: "):
                got.append(json.loads(line[6:]))
    assert [(e["device_id"], e["kind"]) for e in got] == [
        ("dev-x", "activated"),
        ("dev-y", "failed"),
    ]
    assert httpx.get(f"{hub_service.api.url}/v1/events/stream").status_code == 401


def _pump_window(service: HubService, x, start: float, end: float):
    """A window of pump v1 (as an agent would close it) over the inputs ``x``."""
    import numpy as np

    from edge_agent.inference.accumulator import WindowAccumulator

    reference = service.registry.reference("pump", 1)
    acc = WindowAccumulator(reference, "pump", 1, "active", clock=lambda: start)
    probs = np.full((len(x), len(reference.labels)), 1.0 / len(reference.labels))
    acc.record(x, probs, 0.002)
    window = acc.close(end)
    assert window is not None
    return window


def test_hub_serve_runs_alert_rules_from_a_file(tmp_path, demo_dir, reference_x):
    from edge_agent.contract.messages import MetricsMessage
    from edge_agent.errors import ValidationError
    from hub.drift import drift_report

    rule = {
        "name": "pump-drift",
        "metric": "psi_max",
        "comparison": ">",
        "threshold": 0.25,
        "sustained_s": 600,
        "cooldown_s": 3600,
        "scope": {"model": "pump", "version": 1, "device": None, "tag": None, "role": "active"},
    }
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"rules": [rule]}))
    settings = HubSettings(
        data_dir=tmp_path / "hub",
        api_port=0,
        embedded_broker_port=free_port(),
        alert_rules=rules,
        alert_interval_s=3600,  # the test ticks the alerter itself
    )
    with HubService(settings) as service:
        assert service.alerter is not None and service.registry is not None
        assert [r.name for r in service.alerter.rules] == ["identity-conflict", "pump-drift"]
        service.registry.add_bundle(hub_bundle(service, demo_dir, reference_x, tmp_path))
        t = 1_800_000_000.0
        calm = _pump_window(service, reference_x[:400], t, t + 60)
        shifted = reference_x[:400].copy()
        shifted[:, 0] += 3 * reference_x[:, 0].std()
        drifted = _pump_window(service, shifted, t + 60, t + 120)
        store = service.store
        assert store is not None
        report = drift_report(service.registry.reference("pump", 1), [calm])
        calm_psi = max(f.psi for f in report.features if f.psi is not None)
        assert calm_psi < 0.25  # a value the rule judges, under its limit
        store.store_metrics([MetricsMessage("pump-1", 1, 1, (calm,))])
        assert service.alerter.tick(t + 60) == []
        assert service.alerter.state("pump-drift").since is None
        store.store_metrics([MetricsMessage("pump-1", 2, 2, (drifted,))])
        assert service.alerter.tick(t + 120) == []  # over the limit, not yet for 600 s
        assert service.alerter.state("pump-drift").since == t + 120
        [fired] = service.alerter.tick(t + 720)  # held for the file's 600 s
        assert (fired.rule, fired.state) == ("pump-drift", "firing")
        assert fired.value is not None and fired.value > 0.25
    bad = tmp_path / "bad.json"
    bad.write_text('[{"name": "x", "metric": "nope"}]')
    with pytest.raises(ValidationError, match=r"^rules\[0\]: missing field\(s\) comparison"):
        HubService(replace(settings, alert_rules=bad, data_dir=tmp_path / "hub2")).start()


class Served:
    """`edgefleet hub serve` in a child process, its output read line by line.

    ``ready_line`` is the line that says the hub runs (it carries the API URL); other
    lines (the "no API tokens yet" hint, log lines) may come before or after it.
    """

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent.cli", "hub", "serve", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self.ready_line: str | None = None
        self._ready = threading.Event()  # the ready line came, or the process exited
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            if line.startswith("hub running: ") and self.ready_line is None:
                self.ready_line = line.rstrip()
                self._ready.set()
        self._ready.set()  # exited without saying it runs

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_ready(self, timeout: float = 60.0) -> str:
        """The API URL from the ready line; fails if the hub exited or never said it runs."""
        assert self._ready.wait(timeout), f"hub serve said nothing in {timeout}s:\n{self.output}"
        assert self.ready_line is not None, f"hub serve exited:\n{self.output}"
        return self.ready_line.split("API ", 1)[1].split(",", 1)[0]

    @property
    def mqtt_url(self) -> str:
        """The broker's URL from the ready line (after :meth:`wait_ready`)."""
        assert self.ready_line is not None
        return self.ready_line.split("MQTT ", 1)[1].strip()

    def wait_exit(self, timeout: float = 60.0) -> int:
        """The exit code, once the process ended and all its output was read."""
        code = self.proc.wait(timeout)
        self._reader.join(timeout)
        return code

    def stop(self) -> int:
        """SIGTERM (a clean stop), then the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.wait_exit(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


def test_hub_serve_over_tls_to_a_tls_broker_with_a_password_file(tmp_path, signing_keys):
    tls = make_tls(tmp_path / "tls")
    secret = "hub-secret-" + "x" * 8
    with Mosquitto(tmp_path / "mosquitto", {"edgefleet-hub": secret, "dev-t": "t"}, tls=tls) as m:
        password_file = tmp_path / "broker-password"
        password_file.write_text(secret + "\n")
        password_file.chmod(0o600)
        hub = Served(
            "--data", str(tmp_path / "hub"), "--api-port", "0",
            "--broker-url", f"mqtts://{m.host}:{m.hub_tls_port}", "--broker-ca", str(tls.ca),
            "--broker-username", "edgefleet-hub", "--broker-password-file", str(password_file),
            "--tls-cert", str(tls.cert), "--tls-key", str(tls.key),
        )  # fmt: skip
        try:
            api = hub.wait_ready()
            assert api.startswith("https://"), hub.ready_line
            pinned = ssl.create_default_context(cafile=str(tls.ca))
            assert httpx.get(f"{api}/healthz", verify=pinned).status_code == 200
            with pytest.raises(httpx.ConnectError):  # an unpinned client refuses the cert
                httpx.get(f"{api}/healthz")
            # the ingest (through the TLS broker) stores what a device reports
            device = HubDouble(m.host, m.port, signing_keys[:2], username="dev-t", password="t")
            try:
                device.publish_raw("dev-t", Channel.STATE, State("dev-t", online=True).to_bytes())
            finally:
                device.close()
            with Store(tmp_path / "hub" / "hub.db") as store:
                eventually(lambda: store.device("dev-t") is not None, "dev-t's state stored")
        finally:
            code = hub.stop()
        assert code == 0, hub.output
        assert secret not in hub.output


def eventually(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll a SQLite file another process writes (no event crosses the process boundary)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.05)


def test_hub_serve_refuses_a_readable_password_file_in_one_line(tmp_path):
    secret = "pw-" + "q" * 12
    password_file = tmp_path / "broker-password"
    password_file.write_text(secret + "\n")
    password_file.chmod(0o644)
    hub = Served(
        "--data", str(tmp_path / "hub"), "--broker-url", "mqtt://127.0.0.1:1",
        "--broker-password-file", str(password_file),
    )  # fmt: skip
    assert hub.wait_exit() == 1, hub.output
    assert hub.lines == [
        f"Error: {password_file} is readable by others: chmod 600 {password_file}"
    ], hub.output
    assert secret not in hub.output
    assert "Traceback" not in hub.output


def _command_lines(pid: int) -> list[str]:
    """The command lines of a process and all its descendants (the ingest's relay)."""
    import psutil

    proc = psutil.Process(pid)
    return [" ".join(p.cmdline()) for p in (proc, *proc.children(recursive=True))]


def _files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_hub_serve_connects_with_the_broker_password_from_an_environment_variable(
    tmp_path, signing_keys
):
    secret = f"env-secret-{uuid.uuid4().hex}"
    users = {"edgefleet-hub": secret, "dev-e": "e"}
    with Mosquitto(tmp_path / "mosquitto", users) as m:  # allow_anonymous false
        env = {**os.environ, "HUB_BROKER_PW": secret}
        hub = Served(
            "--data", str(tmp_path / "hub"), "--api-port", "0",
            "--broker-url", f"mqtt://{m.host}:{m.port}", "--broker-username", "edgefleet-hub",
            "--broker-password-env", "HUB_BROKER_PW", env=env,
        )  # fmt: skip
        try:
            api = hub.wait_ready()
            assert httpx.get(f"{api}/healthz").status_code == 200
            # the hub's account logged in (Mosquitto names the user of each connection)...
            eventually(
                lambda: any("u'edgefleet-hub'" in line for line in m.log),
                "Mosquitto logging the hub account's login",
            )
            # ...and its ingest reads what a device reports through that broker
            device = HubDouble(m.host, m.port, signing_keys[:2], username="dev-e", password="e")
            try:
                device.publish_raw("dev-e", Channel.STATE, State("dev-e", online=True).to_bytes())
            finally:
                device.close()
            with Store(tmp_path / "hub" / "hub.db") as store:
                eventually(lambda: store.device("dev-e") is not None, "dev-e's state stored")
            commands = _command_lines(hub.proc.pid)
            assert len(commands) >= 2, commands  # the hub and its MQTT relay
            assert not [c for c in commands if secret in c]
        finally:
            code = hub.stop()
        assert code == 0, hub.output
        assert secret not in hub.output
        assert not _files_containing(tmp_path / "hub", secret.encode())
        # a wrong password: the broker refuses the hub, which says so in one line and exits
        wrong = f"wrong-{uuid.uuid4().hex}"
        refused = Served(
            "--data", str(tmp_path / "hub"), "--api-port", "0",
            "--broker-url", f"mqtt://{m.host}:{m.port}", "--broker-username", "edgefleet-hub",
            "--broker-password-env", "HUB_BROKER_PW", env={**os.environ, "HUB_BROKER_PW": wrong},
        )  # fmt: skip
        assert refused.wait_exit() == 1, refused.output
        errors = [line for line in refused.lines if line.startswith("Error: ")]
        assert len(errors) == 1 and "no MQTT connection" in errors[0], refused.output
        assert wrong not in refused.output and "Traceback" not in refused.output


def test_hub_serve_refuses_an_unset_password_variable_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NO_SUCH_PW"}
    hub = Served(
        "--data", str(tmp_path / "hub"), "--broker-url", "mqtt://127.0.0.1:1",
        "--broker-password-env", "NO_SUCH_PW", env=env,
    )  # fmt: skip
    assert hub.wait_exit() == 1, hub.output
    assert hub.lines == ["Error: environment variable NO_SUCH_PW is not set"], hub.output


@pytest.mark.timeout(240)
def test_hub_serve_posts_a_firing_alert_to_the_webhook(tmp_path, signing_keys):
    """`hub serve --alerts --webhook-url`: device states reach the running hub over MQTT,
    its alerter (ticking every second here) finds half the fleet offline and POSTs the
    alert."""
    from tests.hub.test_alerts import Hook

    rules = tmp_path / "rules.json"
    rule = {
        "name": "fleet-offline",
        "metric": "offline_devices_share",
        "comparison": ">",
        "threshold": 0.4,
        "sustained_s": 0,
        "scope": {},
    }
    rules.write_text(json.dumps({"rules": [rule]}))
    hook = Hook()
    hub = Served(
        "--data",
        str(tmp_path / "hub"),
        "--api-port",
        "0",
        "--broker-port",
        "0",
        "--alerts",
        str(rules),
        "--webhook-url",
        hook.url,
        "--alert-interval",
        "1",
    )  # fmt: skip  (port 0: the hub picks free ports and names them in its ready line)
    try:
        hub.wait_ready()
        port = int(hub.mqtt_url.rsplit(":", 1)[1])
        device = HubDouble("127.0.0.1", port, signing_keys[:2], ack=False)
        try:  # online first: whenever the alerter ticks, the share is 0 or 1/2
            device.publish_raw("wh-a", Channel.STATE, State("wh-a", online=True).to_bytes())
            device.publish_raw("wh-b", Channel.STATE, State("wh-b", online=False).to_bytes())
        finally:
            device.close()
        assert hook.delivered.wait(150), f"no webhook POST:\n{hub.output}"
    finally:
        code = hub.stop()
        hook.close()
    assert code == 0, hub.output
    [body] = hook.bodies
    assert (body["rule"], body["state"], body["metric"]) == (
        "fleet-offline",
        "firing",
        "offline_devices_share",
    )
    assert body["value"] == 0.5 and body["threshold"] == 0.4
