"""The assembled hub (embedded broker, ingest, store, API) with a real agent reporting to it."""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace

import httpx
import pytest

from edge_agent.agent import Agent
from edge_agent.config import BrokerConfig
from edge_agent.messages import State
from edge_agent.topics import Channel
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
            assert agent.wait_for_drain(20), "the hub's ingest stored and acked the window"
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
            assert agent.wait_for_drain(20)
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
        # 'since' after the window: queries answer the window asked for (exact by
        # default); exact=false starts a fleet query at the hour's roll-up (and says so).
        now = time.time()
        end = hub_service.store.merged_windows("pump", 1)[0].end
        drift = f"{api}/v1/models/pump/versions/1/drift"
        fleet = httpx.get(drift, headers=auth, params={"since": now}).json()
        assert (fleet["since"], fleet["n"]) == (now, 0)
        assert fleet["decision"]["verdict"] == "insufficient"  # no data: said, not silent
        aligned = httpx.get(drift, headers=auth, params={"since": now, "exact": False}).json()
        assert aligned["since"] == hour_of(now) * HOUR_S
        assert aligned["n"] == (300 if end >= aligned["since"] else 0)
        device = httpx.get(drift, headers=auth, params={"since": now, "device": config.device_id})
        assert (device.json()["since"], device.json()["n"]) == (now, 0)
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


def test_live_event_stream_delivers_new_events(hub_service):
    from edge_agent.messages import Event, EventKind, ModelVersion

    reader, _ = hub_service.tokens.create("ro", ["read"])
    store = hub_service.store
    store.record_event(Event("dev-x", 1.0, EventKind.RECEIVED, "old", ModelVersion("m", 1), 1))
    got = []
    with httpx.stream(
        "GET",
        f"{hub_service.api.url}/v1/events/stream",
        headers={"Authorization": f"Bearer {reader}"},
        params={"after_id": 1, "max_events": 2},
        timeout=20,
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


def test_hub_serve_runs_alert_rules_from_a_file(tmp_path):
    rules = tmp_path / "rules.json"
    rules.write_text(
        json.dumps(
            {
                "rules": [
                    {
                        "name": "pump-drift",
                        "metric": "psi_max",
                        "comparison": ">",
                        "threshold": 0.25,
                        "sustained_s": 600,
                        "cooldown_s": 3600,
                        "scope": {
                            "model": "pump",
                            "version": 1,
                            "device": None,
                            "tag": None,
                            "role": "active",
                        },
                    }
                ]
            }
        )
    )
    settings = HubSettings(
        data_dir=tmp_path / "hub",
        api_port=0,
        embedded_broker_port=free_port(),
        alert_rules=rules,
        alert_interval_s=3600,
    )
    with HubService(settings) as service:
        assert service.alerter is not None
        assert service.alerter.tick() == []  # no data yet: nothing fires
    bad = tmp_path / "bad.json"
    bad.write_text('[{"name": "x", "metric": "nope"}]')
    with pytest.raises(Exception, match="missing field"):
        HubService(replace(settings, alert_rules=bad, data_dir=tmp_path / "hub2")).start()


def _serve(*args: str) -> tuple[subprocess.Popen[str], list[str]]:
    """Start `edgefleet hub serve ARGS`; returns once it says it runs (or exits)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent.cli", "hub", "serve", *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    lines: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line.rstrip())
            if line.startswith("hub running"):
                ready.set()
        ready.set()  # exited

    threading.Thread(target=pump, daemon=True).start()
    ready.wait(60)
    return proc, lines


def test_hub_serve_over_tls_to_a_tls_broker_with_a_password_file(tmp_path, signing_keys):
    tls = make_tls(tmp_path / "tls")
    secret = "hub-secret-" + "x" * 8
    with Mosquitto(tmp_path / "mosquitto", {"edgefleet-hub": secret, "dev-t": "t"}, tls=tls) as m:
        password_file = tmp_path / "broker-password"
        password_file.write_text(secret + "\n")
        password_file.chmod(0o600)
        proc, lines = _serve(
            "--data", str(tmp_path / "hub"), "--api-port", str(free_port()),
            "--broker-url", f"mqtts://{m.host}:{m.hub_tls_port}", "--broker-ca", str(tls.ca),
            "--broker-username", "edgefleet-hub", "--broker-password-file", str(password_file),
            "--tls-cert", str(tls.cert), "--tls-key", str(tls.key),
        )  # fmt: skip
        try:
            assert proc.poll() is None, "\n".join(lines)
            api = lines[-1].split("API ")[1].split(",")[0]
            assert api.startswith("https://")
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
            store = Store(tmp_path / "hub" / "hub.db")
            try:
                assert _eventually(lambda: store.device("dev-t") is not None)
            finally:
                store.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        assert proc.returncode == 0, "\n".join(lines)
        assert not any(secret in line for line in lines)


def _eventually(check: Callable[[], bool], timeout: float = 20.0) -> bool:
    """Poll a SQLite file another process writes (no event crosses the process boundary)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def test_hub_serve_refuses_a_readable_password_file_in_one_line(tmp_path):
    password_file = tmp_path / "broker-password"
    password_file.write_text("secret\n")
    password_file.chmod(0o644)
    proc, lines = _serve("--data", str(tmp_path / "hub"), "--broker-url", "mqtt://127.0.0.1:1",
                         "--broker-password-file", str(password_file))
    assert proc.wait(30) != 0
    assert any("readable by others" in line for line in lines), lines
    assert not any("secret" in line and "Traceback" in line for line in lines)
