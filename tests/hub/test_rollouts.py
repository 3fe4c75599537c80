"""Staged rollouts on the real hub with real agents on the embedded broker."""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest

from edge_agent.agent import Agent
from edge_agent.config import BrokerConfig
from edge_agent.directive import Probation
from hub.broker import free_port
from hub.bundler import ReferenceData
from hub.keys import load_private_key
from hub.rollout import Gates, RolloutSpec, Stage
from hub.service import HubService, HubSettings
from tests.support.bundles import spoil_samples

pytestmark = pytest.mark.timeout(120)
N_AGENTS = 20
FAST = Probation(window_s=0.5, min_predictions=0, max_error_rate=0.5)
OPEN_GATES = Gates(
    min_success_share=1.0, max_failure_share=0.0, max_psi=None, max_latency_ratio=None, min_count=1
)


def wait(hub, predicate, timeout: float = 60.0, what: str = "") -> None:
    assert hub.runner.wait_until(predicate, timeout), f"timed out: {what}"


@pytest.fixture
def fleet(request, tmp_path, demo_dir, reference_x, agent_config):
    n_agents = getattr(request, "param", N_AGENTS)
    settings = HubSettings(
        data_dir=tmp_path / "hub",
        api_port=0,
        embedded_broker_port=free_port(),
        rollout_interval_s=0.3,
    )
    with HubService(settings) as hub:
        ref = ReferenceData(reference_x, tuple(f"f{i}" for i in range(10)))
        for _ in range(2):
            hub.registry.push_model(
                (demo_dir / "model-int8.tflite").read_bytes(), name="pump", reference=ref
            )
        keys = [load_private_key(p).key for p in sorted((settings.data_dir / "keys").glob("*.pem"))]
        good = hub.registry.bundle_path(hub.registry.get("pump", 2).sha256)
        bad = spoil_samples(good, tmp_path / "bad.efb", keys)
        import json
        import zipfile

        with zipfile.ZipFile(bad) as zf:  # re-version the spoiled bundle as v3
            members = {i.filename: zf.read(i) for i in zf.infolist()}
        from edge_agent.canonical import canonical_bytes
        from edge_agent.trust import Context
        from hub.signing import sign

        manifest = json.loads(members["manifest.json"])
        manifest["version"] = 3
        members["manifest.json"] = canonical_bytes(manifest)
        members["signatures.json"] = canonical_bytes(
            [s.to_json() for s in sign(Context.BUNDLE_MANIFEST, members["manifest.json"], keys)]
        )
        with zipfile.ZipFile(bad, "w") as zf:
            for name, data in members.items():
                zf.writestr(name, data)
        hub.registry.add_bundle(bad)
        agents = []
        hub.registry.push_model(
            (demo_dir / "model-int8.tflite").read_bytes(), name="pump", reference=ref
        )  # v4: healthy, like v2
        for i in range(n_agents):
            config = replace(
                agent_config,
                device_id=f"{agent_config.device_id}-{i}",
                data_dir=tmp_path / f"agent-{i}",
                trust_file=settings.data_dir / "keys" / "trust.json",
                broker=BrokerConfig(host=hub.broker.host, port=hub.broker.port),
            )
            agents.append(Agent(config).start())
        token, _ = hub.tokens.create("ops", ["deploy"])
        client = httpx.Client(base_url=hub.api.url, headers={"Authorization": f"Bearer {token}"})
        wait(hub, lambda: len(hub.store.list_devices(limit=100)) == n_agents, what="fleet online")
        try:
            yield hub, agents, client
        finally:
            for a in agents:
                a.stop()
            client.close()


def state_of(client, rollout_id: str) -> dict:
    return client.get(f"/v1/rollouts/{rollout_id}").json()


def test_healthy_version_walks_all_stages_then_a_failing_one_rolls_back(fleet):
    hub, agents, client = fleet
    first = RolloutSpec(
        id="r1",
        model="pump",
        target_version=2,
        previous_version=None,
        stages=(
            Stage(share=0.25, bake_s=0, gates=OPEN_GATES),
            Stage(share=1.0, bake_s=0, gates=OPEN_GATES),
        ),
        probation=FAST,
    )
    r = client.post("/v1/rollouts", json=first.to_json())
    assert r.status_code == 201, r.text
    wait(hub, lambda: state_of(client, "r1")["state"] == "completed", what="r1 completed")
    assert {a.active_version.version for a in agents} == {2}
    stages = [t["to"] for t in state_of(client, "r1")["history"]]
    assert stages.count("running") >= 2  # went through both stages
    # a version whose smoke test fails on devices: the canary fails, the fleet stays on v2
    bad = replace(first, id="r2", target_version=3, previous_version=2, on_failure="rollback")
    assert client.post("/v1/rollouts", json=bad.to_json()).status_code == 201
    wait(hub, lambda: state_of(client, "r2")["state"] == "rolled_back", what="r2 rolled back")
    touched = state_of(client, "r2")["touched"]
    assert 1 <= len(touched) < N_AGENTS  # only the canary was touched
    assert {a.active_version.version for a in agents} == {2}
    # operators cannot promote a finished rollout
    assert client.post("/v1/rollouts/r2/promote").status_code == 409


def test_second_rollout_on_the_same_devices_is_refused(fleet):
    _, _, client = fleet
    slow = RolloutSpec(
        id="slow",
        model="pump",
        target_version=2,
        previous_version=None,
        stages=(Stage(share=1.0, bake_s=3600, gates=OPEN_GATES),),
        probation=FAST,
    )
    assert client.post("/v1/rollouts", json=slow.to_json()).status_code == 201
    again = client.post("/v1/rollouts", json=replace(slow, id="again").to_json())
    assert again.status_code in (409, 422) and "already" in again.text.lower()
    assert client.post("/v1/rollouts/slow/pause").json()["state"] == "paused"
    assert client.post("/v1/rollouts/slow/resume").json()["state"] == "running"
    assert client.post("/v1/rollouts/slow/abort").json()["state"] == "aborted"


def test_ci_pipeline_waits_on_a_rollout_and_fails_when_the_canary_fails(fleet):
    import os
    import subprocess
    import sys

    hub, agents, _ = fleet
    token, _ = hub.tokens.create("ci", ["deploy"])
    env = {**os.environ, "EDGEFLEET_TOKEN": token, "EDGEFLEET_HUB": hub.api.url}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "edge_agent.cli", "rollout", *args],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=90,
        )

    common = (
        "--model",
        "pump",
        "--stages",
        "25,100",
        "--bake",
        "0",
        "--no-drift-gate",
        "--probation",
        "0.5",
        "--wait",
        "60",
    )
    ok = cli("start", "--id", "ci-good", "--version", "2", *common)
    assert ok.returncode == 0, ok.stderr
    assert "state=completed" in ok.stdout
    bad = cli(
        "start",
        "--id",
        "ci-bad",
        "--version",
        "3",
        "--previous",
        "2",
        "--on-failure",
        "rollback",
        *common,
    )
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == ["Error: rollout ci-bad ended rolled_back"]
    listed = cli("list", "--json")
    assert {r["spec"]["id"] for r in __import__("json").loads(listed.stdout)["rollouts"]} == {
        "ci-good",
        "ci-bad",
    }
    assert {a.active_version.version for a in agents} == {2}


@pytest.mark.parametrize("fleet", [20], indirect=True)
def test_twenty_agents_walk_four_stages_and_an_offline_device_converges(fleet):
    hub, agents, client = fleet
    offline = agents[-1]
    offline.stop()  # this device is away during the rollout
    spec = RolloutSpec(
        id="big",
        model="pump",
        target_version=2,
        previous_version=None,
        stages=tuple(Stage(share=s, bake_s=0, gates=OPEN_GATES) for s in (0.05, 0.25, 0.5, 1.0)),
        probation=FAST,
        stale_after_s=1.0,
    )
    assert client.post("/v1/rollouts", json=spec.to_json()).status_code == 201
    wait(hub, lambda: state_of(client, "big")["state"] == "completed", 90, "big completed")
    online = agents[:-1]
    assert {a.active_version.version for a in online} == {2}
    assert len(state_of(client, "big")["touched"]) == 20
    returning = Agent(offline.config).start()  # back online: the retained directive waits
    try:
        assert hub.runner.wait_until(
            lambda: returning.active_version is not None and returning.active_version.version == 2,
            60,
        ), "the returning device converged"
    finally:
        returning.stop()


def test_drifting_version_fails_its_canary_drift_gate(fleet, reference_x):
    hub, agents, client = fleet
    gates = replace(OPEN_GATES, max_psi=0.25, min_count=1)
    spec = RolloutSpec(
        id="drifty",
        model="pump",
        target_version=4,
        previous_version=None,
        stages=(
            Stage(share=0.25, bake_s=3600, gates=gates),
            Stage(share=1.0, bake_s=0, gates=gates),
        ),
        probation=FAST,
    )
    assert client.post("/v1/rollouts", json=spec.to_json()).status_code == 201
    touched = set(state_of(client, "drifty")["touched"])
    canary = [a for a in agents if a.device_id in touched]
    assert hub.runner.wait_until(lambda: all(a.active_version for a in canary), 60)
    shifted = reference_x[:300].copy()
    shifted[:, 2] += 4 * reference_x[:, 2].std()
    for agent in canary:
        agent.predict(shifted)
        agent.close_window()
        assert agent.wait_for_drain(20)
    wait(hub, lambda: state_of(client, "drifty")["state"] == "paused", 60, "paused on drift")
    gates_now = {g["name"]: g for g in state_of(client, "drifty")["gates"]}
    assert gates_now["psi"]["verdict"] == "fail" and gates_now["psi"]["value"] > 0.25
    assert all(a.active_version is None for a in agents if a.device_id not in touched)


def test_hub_restart_mid_stage_resumes_the_rollout(fleet):
    hub, agents, _ = fleet
    spec = RolloutSpec(
        id="restart",
        model="pump",
        target_version=2,
        previous_version=None,
        stages=(
            Stage(share=0.25, bake_s=2, gates=OPEN_GATES),
            Stage(share=1.0, bake_s=0, gates=OPEN_GATES),
        ),
        probation=FAST,
    )
    hub.runner.create(spec)
    touched = set(hub.rollouts.get("restart").rollout.touched)
    canary = [a for a in agents if a.device_id in touched]
    assert hub.runner.wait_until(lambda: all(a.active_version for a in canary), 60)
    hub.stop()  # the hub goes down in the middle of stage 1 (and its embedded broker)
    again = HubService(hub.settings).start()
    try:
        assert again.runner.wait_until(
            lambda: again.rollouts.get("restart").rollout.state.value == "completed", 90
        ), "the restarted hub resumed and completed the rollout"
        assert again.runner.wait_until(
            lambda: {a.active_version.version if a.active_version else None for a in agents} == {2},
            60,
        )
    finally:
        again.stop()


def test_shadow_stage_reports_agreement_before_any_device_switches(fleet, reference_x):
    hub, agents, client = fleet
    hub.runner.create(
        RolloutSpec(
            id="base",
            model="pump",
            target_version=2,
            previous_version=None,
            stages=(Stage(share=1.0, bake_s=0, gates=OPEN_GATES),),
            probation=FAST,
        )
    )
    wait(hub, lambda: state_of(client, "base")["state"] == "completed", 60, "base completed")
    shadow_gates = replace(OPEN_GATES, min_shadow_agreement=0.8)
    spec = RolloutSpec(
        id="shadow",
        model="pump",
        target_version=4,
        previous_version=2,
        stages=(
            Stage(share=0.25, bake_s=3600, gates=shadow_gates, mode="shadow"),
            Stage(share=1.0, bake_s=0, gates=OPEN_GATES),
        ),
        probation=FAST,
    )
    hub.runner.create(spec)
    touched = set(hub.rollouts.get("shadow").rollout.touched)
    canary = [a for a in agents if a.device_id in touched]
    assert hub.runner.wait_until(lambda: all(a.predictor.shadow for a in canary), 60)
    for agent in canary:
        for row in reference_x[:50]:
            assert agent.predict(row).model.version == 2  # callers keep the champion
        agent.close_window()
        assert agent.wait_for_drain(20)
    wait(
        hub,
        lambda: any(
            g["name"] == "shadow_agreement" and g["verdict"] == "pass" and g["value"] >= 0.8
            for g in state_of(client, "shadow")["gates"]
        ),
        60,
        "shadow agreement measured and passing",
    )
    hub.runner.command("shadow", "promote")  # skip the bake once agreement is measured
    wait(hub, lambda: state_of(client, "shadow")["state"] == "completed", 60, "completed")
    history = state_of(client, "shadow")["history"]
    assert any("stage" in t["reason"] for t in history)
    assert {a.active_version.version for a in agents} == {4}
