"""Staged rollouts on the real hub with real agents on the embedded broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from edge_agent.contract.directive import Probation
from edge_agent.daemon.agent import Agent
from edge_agent.daemon.config import BrokerConfig
from hub.audit import AuditLog
from hub.broker import free_port
from hub.bundler import ReferenceData
from hub.keys import load_private_key
from hub.rollouts import Gates, RolloutSpec, Stage, cohort
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
        from edge_agent.contract.canonical import canonical_bytes
        from edge_agent.contract.trust import Context
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
            # in parallel: an agent whose broker is gone (a stopped hub) takes seconds
            with ThreadPoolExecutor(max_workers=len(agents) or 1) as pool:
                list(pool.map(lambda a: a.stop(), agents))
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
    assert again.status_code == 409 and "already" in again.text.lower()
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
    *progress, error = bad.stderr.strip().splitlines()
    assert error == "Error: rollout ci-bad ended rolled_back"  # one line, no traceback
    assert progress and all(line.startswith("waiting  ci-bad: stage ") for line in progress)
    listed = cli("list", "--json")
    assert {r["spec"]["id"] for r in __import__("json").loads(listed.stdout)["rollouts"]} == {
        "ci-good",
        "ci-bad",
    }
    assert {a.active_version.version for a in agents} == {2}


def _cli(hub: HubService, *args: str) -> subprocess.CompletedProcess[str]:
    """`edgefleet rollout ARGS` in a child process, as an operator runs it."""
    token, _ = hub.tokens.create("operator", ["deploy"])
    env = {**os.environ, "EDGEFLEET_TOKEN": token, "EDGEFLEET_HUB": hub.api.url}
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "rollout", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )


def _steer(hub: HubService, command: str, rollout_id: str) -> dict:
    """Run `rollout COMMAND ID --json`; its exit must be 0; the rollout it printed."""
    done = _cli(hub, command, rollout_id, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("fleet", [4], indirect=True)
def test_operator_steers_rollouts_with_the_cli(fleet):
    """pause, resume, promote, abort and rollback through `edgefleet rollout` against
    the running hub's API, each checked in what the hub persisted and the devices run."""
    hub, agents, client = fleet

    def versions() -> set[int | None]:
        return {a.active_version.version if a.active_version else None for a in agents}

    common = ("--model", "pump", "--stages", "25,100", "--bake", "3600", "--no-drift-gate",
              "--probation", "0.5")  # fmt: skip
    started = _cli(hub, "start", "--id", "steer", "--version", "2", *common, "--json")
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout)["state"] == "running"
    canary = set(state_of(client, "steer")["touched"])
    assert 1 <= len(canary) < len(agents)

    def stored(rollout_id: str):
        return hub.rollouts.get(rollout_id).rollout

    printed = _steer(hub, "pause", "steer")
    assert printed["state"] == "paused" and stored("steer").state.value == "paused"
    printed = _steer(hub, "resume", "steer")
    assert printed["state"] == "running" and stored("steer").state.value == "running"
    assert stored("steer").stage == 0
    printed = _steer(hub, "promote", "steer")  # skips stage 1's hour of baking
    assert (printed["state"], printed["stage"]) == ("running", 1)
    assert set(stored("steer").touched) == {a.device_id for a in agents}
    wait(hub, lambda: versions() == {2}, 60, "every device on v2")
    printed = _steer(hub, "promote", "steer")  # the last stage: done
    assert printed["state"] == "completed" and stored("steer").state.value == "completed"
    again = _cli(hub, "pause", "steer")  # a finished rollout cannot be paused
    assert again.returncode == 1
    assert again.stderr.splitlines() == [
        "Error: hub answered 409: rollout steer: cannot pause while completed "
        "(allowed when running or waiting_approval)"
    ]

    # v4 on the canary, then rolled back by the operator: signed downgrades to v2
    started = _cli(hub, "start", "--id", "back", "--version", "4", "--previous", "2", *common)
    assert started.returncode == 0, started.stderr
    assert "state=running" in started.stdout
    touched = set(stored("back").touched)
    on_v4 = [a for a in agents if a.device_id in touched]
    wait(hub, lambda: all(a.active_version.version == 4 for a in on_v4), 60, "canary on v4")
    printed = _steer(hub, "rollback", "back")
    assert printed["state"] == "rolled_back" and stored("back").state.value == "rolled_back"
    wait(hub, lambda: versions() == {2}, 60, "the canary back on v2")
    published = _published(hub.settings.data_dir, "back")
    assert sorted(published) == sorted([(d, 4) for d in touched] + [(d, 2) for d in touched])

    # abort: the rollout ends, the devices keep what they run
    started = _cli(hub, "start", "--id", "stop", "--version", "4", "--previous", "2", *common)
    assert started.returncode == 0, started.stderr
    touched = set(stored("stop").touched)
    on_v4 = [a for a in agents if a.device_id in touched]
    wait(hub, lambda: all(a.active_version.version == 4 for a in on_v4), 60, "canary on v4")
    printed = _steer(hub, "abort", "stop")
    assert printed["state"] == "aborted" and stored("stop").state.value == "aborted"
    assert {a.active_version.version for a in on_v4} == {4}
    assert sorted(_published(hub.settings.data_dir, "stop")) == sorted((d, 4) for d in touched)
    missing = _cli(hub, "abort", "no-such-rollout")
    assert missing.returncode == 1
    assert missing.stderr.splitlines() == [
        "Error: hub answered 404: rollout 'no-such-rollout': not found"
    ]


@pytest.mark.parametrize("fleet", [4], indirect=True)
def test_rollback_route_needs_a_deploy_token_and_a_previous_version(fleet):
    hub, _, client = fleet
    first = RolloutSpec(
        id="first",
        model="pump",
        target_version=2,
        previous_version=None,
        stages=(Stage(share=0.25, bake_s=3600, gates=OPEN_GATES),),
        probation=FAST,
    )
    assert client.post("/v1/rollouts", json=first.to_json()).status_code == 201
    reader, _ = hub.tokens.create("viewer", ["read"])
    refused = httpx.post(
        f"{hub.api.url}/v1/rollouts/first/rollback",
        headers={"Authorization": f"Bearer {reader}"},
    )
    assert refused.status_code == 403
    assert "first" not in refused.text  # a 403 carries no data
    assert hub.rollouts.get("first").rollout.state.value == "running"
    no_previous = client.post("/v1/rollouts/first/rollback")  # a first install
    assert no_previous.status_code == 409
    assert (
        "rollout first: a first install has no previous version to roll back to; abort it instead"
        in no_previous.text
    )
    assert hub.rollouts.get("first").rollout.state.value == "running"
    unknown = client.post("/v1/rollouts/nope/rollback")
    assert unknown.status_code == 404 and "rollout 'nope': not found" in unknown.text
    assert client.post("/v1/rollouts/first/explode").status_code == 400


@pytest.mark.parametrize("fleet", [20], indirect=True)
def test_twenty_agents_walk_four_stages_and_an_offline_device_converges(fleet):
    hub, agents, client = fleet
    spec = RolloutSpec(
        id="big",
        model="pump",
        target_version=2,
        previous_version=None,
        stages=tuple(Stage(share=s, bake_s=0, gates=OPEN_GATES) for s in (0.05, 0.25, 0.5, 1.0)),
        probation=FAST,
        stale_after_s=1.0,
    )
    # The device that is away is one outside the canary: a canary whose only device is
    # offline waits for evidence (max_evidence_wait_s), which is another test's story.
    # Device ids come from a per-process counter, so the choice is made, not assumed.
    canary = set(cohort(spec, 0, {a.config.device_id: () for a in agents}))
    offline = next(a for a in reversed(agents) if a.config.device_id not in canary)
    online = [a for a in agents if a is not offline]
    offline.stop()  # this device is away during the rollout
    assert client.post("/v1/rollouts", json=spec.to_json()).status_code == 201
    done = hub.runner.wait_until(lambda: state_of(client, "big")["state"] == "completed", 90)
    assert done, f"big not completed: {json.dumps(state_of(client, 'big'))[:3000]}"
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
        assert agent.wait_for_drain(60)
    wait(hub, lambda: state_of(client, "drifty")["state"] == "paused", 60, "paused on drift")
    gates_now = {g["name"]: g for g in state_of(client, "drifty")["gates"]}
    assert gates_now["psi"]["verdict"] == "fail" and gates_now["psi"]["value"] > 0.25
    assert all(a.active_version is None for a in agents if a.device_id not in touched)


def _published(data_dir: Path, rollout_id: str) -> list[tuple[str, int]]:
    """(device, version) of every directive the hub's audit log says it published."""
    out: list[tuple[str, int]] = []
    with AuditLog(data_dir / "hub.db") as log:
        after = 0
        while entries := log.entries(after_id=after, limit=1000):
            after = entries[-1].id
            out += [
                (e.target, e.details["version"])
                for e in entries
                if e.action == "directive.publish" and e.details.get("rollout") == rollout_id
            ]
    return out


def test_hub_restart_mid_stage_resumes_the_rollout(fleet):
    """The hub stops while stage 1 bakes (an hour: it cannot end before the stop) and
    comes back: the restarted hub carries on from the persisted stage, bake clock and
    touched devices (no directive sent twice), and completes the rollout."""
    from hub.rollouts import RolloutStore

    hub, agents, _ = fleet
    spec = RolloutSpec(
        id="restart",
        model="pump",
        target_version=2,
        previous_version=None,
        stages=(
            Stage(share=0.25, bake_s=3600, gates=OPEN_GATES),
            Stage(share=1.0, bake_s=0, gates=OPEN_GATES),
        ),
        probation=FAST,
    )
    hub.runner.create(spec)
    touched = set(hub.rollouts.get("restart").rollout.touched)
    assert 1 <= len(touched) < len(agents)
    canary = [a for a in agents if a.device_id in touched]
    assert hub.runner.wait_until(lambda: all(a.active_version for a in canary), 60)

    def baking(r) -> bool:  # every gate passed but the bake time
        waiting = {g.name for g in r.gates if g.verdict.value == "waiting"}
        return r.stage == 0 and r.state.value == "running" and waiting == {"bake_s"}

    wait(hub, lambda: baking(hub.rollouts.get("restart").rollout), 60, "stage 1 baking")
    hub.stop()  # the hub goes down in the middle of stage 1 (and its embedded broker)
    saved = RolloutStore(hub.settings.data_dir / "hub.db")
    try:
        before = saved.get("restart").rollout  # what the restarted hub will find
    finally:
        saved.close()
    assert (before.state.value, before.stage) == ("running", 0) and baking(before)
    assert set(before.touched) == touched
    assert sorted(_published(hub.settings.data_dir, "restart")) == sorted((d, 2) for d in touched)
    baked_before = {g.name: g.value for g in before.gates}["bake_s"]

    again = HubService(hub.settings).start()
    try:
        # the restarted hub evaluates the same stage, on the bake clock it started before
        def resumed() -> bool:
            r = again.rollouts.get("restart").rollout
            baked = {g.name: g.value for g in r.gates}.get("bake_s")
            return baking(r) and baked is not None and baked > baked_before

        assert again.runner.wait_until(resumed, 60), "the restarted hub evaluated stage 1"
        now = again.rollouts.get("restart").rollout
        assert now.stage_started_at == before.stage_started_at
        assert now.history == before.history and set(now.touched) == touched
        # the operator ends the bake; the restarted hub carries out stage 2 and completes
        again.runner.command("restart", "promote")
        assert again.runner.wait_until(
            lambda: again.rollouts.get("restart").rollout.state.value == "completed", 90
        ), "the restarted hub completed the rollout"
        assert again.runner.wait_until(
            lambda: {a.active_version.version if a.active_version else None for a in agents} == {2},
            60,
        )
        published = _published(again.settings.data_dir, "restart")
        assert sorted(published) == sorted((a.device_id, 2) for a in agents)  # each once
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
        assert agent.wait_for_drain(60)
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
