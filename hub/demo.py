"""The demo job behind ``make demo``.

For now (until the fleet demo exists): create keys, train the demo model, build a
signed int8 bundle, tamper with a copy, and show that verification accepts the one
and refuses the other.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edge_agent.contract.bundle import verify_bundle
from edge_agent.contract.canonical import canonical_bytes
from edge_agent.contract.trust import TrustRoot
from edge_agent.errors import BundleError
from hub.bundler import ReferenceData, build_bundle
from hub.errors import HubError
from hub.keys import init_keys, load_private_key
from hub.modelkit.dataset import FEATURES
from hub.modelkit.demo import build_demo, demo_schema


def run_demo(directory: Path) -> Iterator[str]:
    """Run the demo in ``directory``, yielding one line of output per step.

    Raises:
        EdgeFleetError: a step failed unexpectedly.
    """
    directory.mkdir(parents=True, exist_ok=True)
    key_dir = directory / "keys"
    if (key_dir / "trust.json").exists():
        yield f"keys     reusing {key_dir}"
        key_path = sorted(key_dir.glob("key-*.pem"))[0]
    else:
        _, files = init_keys(key_dir)
        key_path = files[0].path
        yield f"keys     created {key_path} and {key_dir / 'trust.json'}"
    trust = TrustRoot.load(key_dir / "trust.json")
    report = build_demo(directory / "model")
    yield from report.lines()
    with np.load(directory / "model" / "reference.npz") as data:
        reference = ReferenceData(np.asarray(data["x"], dtype=np.float64), FEATURES)
    bundle_path = directory / "demo-v1.efb"
    manifest = build_bundle(
        (directory / "model" / "model-int8.tflite").read_bytes(),
        name="pump-health",
        version=1,
        reference=reference,
        keys=[load_private_key(key_path).key],
        out=bundle_path,
        schema=demo_schema(),
        lineage={"source": "edgefleet demo", "int8_accuracy": report.int8_accuracy},
    )
    yield f"bundle   {bundle_path} ({bundle_path.stat().st_size} bytes, {manifest.name} v1)"
    verified = verify_bundle(bundle_path, trust)
    yield f"verify   OK: signed by {len(verified.signers)} trusted key(s), all members match"
    tampered = directory / "demo-v1-tampered.efb"
    shutil.copyfile(bundle_path, tampered)
    data = bytearray(tampered.read_bytes())
    data[data.index(b"TFL3") + 64] ^= 0xFF
    tampered.write_bytes(bytes(data))
    try:
        verify_bundle(tampered, trust)
    except BundleError as exc:
        yield f"tamper   refused as expected: {exc}"
    else:
        raise BundleError("a tampered bundle verified; this is a bug")
    yield from run_fleet_demo(directory)


def run_fleet_demo(directory: Path, n_agents: int = 3) -> Iterator[str]:
    """The hub on the embedded broker, a small simulated fleet, a rollout by hand.

    The hub builds and signs the model pushed to it, signs a directive per device and
    serves the bundle through signed URLs; the agents verify, activate, serve
    predictions (one with drifted sensors), and report windows the hub merges into a
    fleet drift report.

    Raises:
        EdgeFleetError: a step failed unexpectedly.
    """
    import logging

    import httpx

    from edge_agent.daemon.agent import Agent
    from edge_agent.daemon.config import AgentConfig, BrokerConfig
    from hub.broker import free_port
    from hub.modelkit.dataset import Drift, apply_drift
    from hub.service import HubService, HubSettings

    # amqtt (the embedded broker) sometimes hands a client another device's message; the
    # agents ignore those with a warning, which would only clutter the demo's output.
    logging.getLogger("edgefleet.agent").setLevel(logging.ERROR)
    hub_dir = directory / "hub"
    shutil.rmtree(hub_dir, ignore_errors=True)  # a fresh hub and fleet on every run
    shutil.rmtree(directory / "fleet", ignore_errors=True)
    settings = HubSettings(data_dir=hub_dir, api_port=0, embedded_broker_port=free_port())
    with HubService(settings) as hub:
        if hub.api is None or hub.tokens is None or hub.ingest is None or hub.store is None:
            raise HubError("the hub did not start completely")
        yield f"hub      API {hub.api.url}, embedded MQTT broker {hub.broker_url}"
        token, _ = hub.tokens.create("demo", ["admin"])
        api = httpx.Client(
            base_url=hub.api.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        model_dir = directory / "model"
        pushed = api.post(
            "/v1/models/pump-health/push",
            files={
                "model": ("model-int8.tflite", (model_dir / "model-int8.tflite").read_bytes()),
                "reference": ("reference.npz", (model_dir / "reference.npz").read_bytes()),
                "schema": ("schema.json", canonical_bytes(demo_schema().to_json())),
            },
            data={"lineage": '{"source": "edgefleet demo"}'},
        ).json()
        yield (
            f"push     the hub built and signed pump-health v{pushed['version']} "
            f"({pushed['size']} bytes)"
        )
        agents = []
        for i in range(n_agents):
            config = AgentConfig(
                device_id=f"pump-{i:03d}",
                data_dir=directory / "fleet" / f"pump-{i:03d}",
                trust_file=hub_dir / "keys" / "trust.json",
                broker=BrokerConfig(host=hub.broker.host, port=hub.broker.port),  # type: ignore[union-attr]
                window_s=3600,
                local_api_port=0,
            )
            agents.append(Agent(config).start())
        yield f"fleet    {n_agents} agents started, pinned to the hub's trust file"
        try:
            fast = {
                "window_s": 1.0,
                "min_predictions": 5,
                "max_error_rate": 0.05,
                "max_latency_p95_ms": None,
                "max_crashes": 2,
            }
            for agent in agents:
                api.post(
                    f"/v1/devices/{agent.device_id}/deploy",
                    json={"name": "pump-health", "version": pushed["version"], "probation": fast},
                ).raise_for_status()
            yield "deploy   signed directives published (retained, one per device)"
            devices = [a.device_id for a in agents]

            def passed() -> bool:
                done = {
                    r.event.device_id
                    for r in hub.store.events(limit=1000)  # type: ignore[union-attr]
                    if r.event.kind.value == "probation_passed"
                }
                return set(devices) <= done

            with np.load(model_dir / "test.npz") as data:
                test_x = np.asarray(data["x"], dtype=np.float32)
            rng = np.random.default_rng(0)
            while not hub.ingest.wait_until(lambda _: all(a.active_version for a in agents), 1):
                pass
            for i, agent in enumerate(agents):
                rows = test_x[i * 400 : (i + 1) * 400]
                if i == n_agents - 1:  # the last pump's sensors drift
                    rows = apply_drift(rows, Drift(offset=2.0, features=("bearing_temp_c",)), rng)
                for row in rows:
                    agent.predict(row)
            if not hub.ingest.wait_until(lambda _: passed(), 30):
                yield "warning  not every device reported probation_passed in time"
            for agent in agents:
                agent.close_window()
                agent.wait_for_drain(20)
            for r in hub.store.events(limit=1000):
                e = r.event
                if e.kind.value in ("activated", "probation_passed"):
                    yield f"event    {e.device_id} {e.kind.value:<16} {e.detail}"
            fleet = api.get("/v1/models/pump-health/versions/1/drift").json()["report"]
            drifted = [f["name"] for f in fleet["features"] if f["drifted"]]
            yield (
                f"drift    fleet: {fleet['n']} predictions merged from {n_agents} devices; "
                f"drifted features: {', '.join(drifted) or 'none'}"
            )
            for device in devices:
                one = api.get(
                    "/v1/models/pump-health/versions/1/drift", params={"device": device}
                ).json()
                worst = max(one["report"]["features"], key=lambda f: f["psi"] or 0.0)
                yield (
                    f"drift    {device}: worst feature {worst['name']} PSI "
                    f"{worst['psi']:.3f}; {one['decision']['detail']}"
                )
        finally:
            for agent in agents:
                agent.stop()
            api.close()
