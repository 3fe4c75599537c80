"""Staged rollouts: cohorts, progress, the pure state machine, JSON and persistence.

Everything is driven directly with fake times and synthetic progress.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from edge_agent.contract.directive import Probation
from edge_agent.contract.messages import Event, EventKind, ModelVersion, State
from edge_agent.errors import ValidationError
from hub.drift import DriftSummary, DriftVerdict, FeatureDrift
from hub.rollouts import (
    Action,
    DeviceProgress,
    DeviceStatus,
    Gates,
    GateVerdict,
    Notify,
    PublishDirectives,
    Rollout,
    RolloutConflictError,
    RolloutError,
    RolloutSpec,
    RolloutState,
    RolloutStore,
    Selector,
    Stage,
    StageMetrics,
    abort,
    check_gates,
    cohort,
    conflicts,
    ensure_no_conflicts,
    evaluate_rollout,
    new_rollout,
    pause,
    progress,
    promote,
    resume,
    rollback,
    stage_of,
    start,
)

T0 = 1_000_000.0
BAKE = 60.0
Fleet = dict[str, Collection[str]]


def fleet(n: int = 400, tags: Collection[str] = ("site-a",), prefix: str = "dev") -> Fleet:
    return {f"{prefix}-{i:04d}": frozenset(tags) for i in range(n)}


def make_spec(**kw: Any) -> RolloutSpec:
    stages = tuple(
        Stage(share=s, bake_s=BAKE, gates=Gates(max_psi=0.2, max_latency_ratio=1.5))
        for s in (0.01, 0.1, 0.5, 1.0)
    )
    args: dict[str, Any] = {
        "id": "r1",
        "model": "kws",
        "target_version": 3,
        "previous_version": 2,
        "selector": Selector(tags=("site-a",)),
        "stages": stages,
        "stale_after_s": 600.0,
    }
    args.update(kw)
    return RolloutSpec(**args)


def summary(
    verdict: DriftVerdict = "none",
    *,
    psi: float = 0.05,
    n: int = 1000,
    n_needed: int | None = 500,
    p_adjusted: float = 0.5,
) -> DriftSummary:
    """What hub.drift decides on a cohort's windows (its one verdict and evidence)."""
    drifted = verdict in ("drift", "major")
    worst = FeatureDrift(
        "f0",
        n,
        psi,
        psi / 2,
        psi / 3,
        drifted,
        verdict,
        m=1000,
        p_adjusted=p_adjusted,
        n_needed=n_needed,
    )
    return DriftSummary(verdict, n, n_needed, ("f0",) if drifted else (), worst)


def drift_of(verdict: DriftVerdict = "none", **kw: Any) -> dict[str, DriftSummary]:
    return {"psi": summary(verdict, **kw), "js": summary(verdict, **kw)}


def healthy(members: Collection[str], **kw: Any) -> tuple[dict[str, DeviceProgress], StageMetrics]:
    prog = {d: DeviceProgress(DeviceStatus.PASSED) for d in members}
    values: dict[str, Any] = {"drift": drift_of("none"), "latency_ratio": 1.0}
    values.update(kw)
    return prog, StageMetrics.from_progress(prog, **values)


def publishes(actions: list[Action]) -> list[PublishDirectives]:
    return [a for a in actions if isinstance(a, PublishDirectives)]


def started(spec: RolloutSpec, devices: Fleet) -> tuple[Rollout, list[Action]]:
    return start(new_rollout(spec), T0, devices=devices)


def step(
    r: Rollout, now: float, devices: Fleet, members: Collection[str] | None = None, **kw: Any
) -> tuple[Rollout, list[Action]]:
    members = cohort(r.spec, r.stage, devices) if members is None else members
    prog, metrics = healthy(members, **kw)
    return evaluate_rollout(r, now, prog, metrics, devices=devices)


# ---------------------------------------------------------------------------- assignment


def test_stage_of_is_stable_and_in_range() -> None:
    values = [stage_of(f"dev-{i}", "r1") for i in range(1000)]
    assert values == [stage_of(f"dev-{i}", "r1") for i in range(1000)]
    assert all(0.0 <= v < 1.0 for v in values)
    assert stage_of("dev-1", "r1") != stage_of("dev-1", "r2")
    # a pinned value: stable across processes and hub restarts (SHA-256, no salted hash)
    assert stage_of("dev-1", "r1") == pytest.approx(0.7759345096716836, abs=1e-15)


def test_stage_of_roughly_proportional_on_10000_ids() -> None:
    values = [stage_of(f"device-{i}", "rollout-x") for i in range(10_000)]
    for share in (0.01, 0.1, 0.5):
        n = sum(v < share for v in values)
        assert abs(n - share * 10_000) < 4 * (share * (1 - share) * 10_000) ** 0.5 + 5


def test_cohorts_nest_and_cover_the_selection() -> None:
    devices = fleet(1000)
    devices["other-1"] = frozenset({"site-b"})
    spec = make_spec()
    cohorts = [set(cohort(spec, k, devices)) for k in range(4)]
    assert cohorts[0] <= cohorts[1] <= cohorts[2] <= cohorts[3]
    assert cohorts[3] == {d for d in devices if d.startswith("dev-")}
    assert 2 <= len(cohorts[0]) <= 25
    assert 60 <= len(cohorts[1]) <= 140
    assert "other-1" not in cohorts[3]


def test_count_stage_takes_lowest_hashes_and_small_canary_not_empty() -> None:
    devices = fleet(30)
    spec = make_spec(stages=(Stage(count=3), Stage(share=1.0)))
    lowest = sorted(devices, key=lambda d: stage_of(d, "r1"))[:3]
    assert cohort(spec, 0, devices) == sorted(lowest)
    tiny = make_spec(stages=(Stage(share=0.01), Stage(share=1.0)))
    assert len(cohort(tiny, 0, fleet(5))) >= 1


def test_selector_tags_all_must_match_and_explicit_ids() -> None:
    devices: Fleet = {"a": {"x", "y"}, "b": {"x"}, "c": {"x", "y", "z"}}
    assert Selector(tags=("x", "y")).matches("a", devices["a"])
    assert not Selector(tags=("x", "y")).matches("b", devices["b"])
    s = make_spec(selector=Selector(tags=("x",), device_ids=("a", "b")), stages=(Stage(share=1.0),))
    assert cohort(s, 0, devices) == ["a", "b"]


# ---------------------------------------------------------------------------- progress


def ev(kind: EventKind, ts: float, version: int | None = 3, detail: str = "") -> Event:
    model = None if version is None else ModelVersion("kws", version)
    return Event("dev-0001", ts, kind, detail, model)


def online(ts: float = T0, active: int | None = 2, is_online: bool = True) -> State:
    model = None if active is None else ModelVersion("kws", active)
    return State("dev-0001", is_online, ts=ts, active=model)


def test_progress_follows_events() -> None:
    spec = make_spec()
    assert progress([], online(), T0, spec).status == DeviceStatus.PENDING
    events = [ev(EventKind.RECEIVED, T0 + 1), ev(EventKind.DOWNLOADING, T0 + 2)]
    assert progress(events, online(), T0 + 3, spec).status == DeviceStatus.DOWNLOADING
    events.append(ev(EventKind.ACTIVATED, T0 + 4))
    assert progress(events, online(), T0 + 5, spec).status == DeviceStatus.ACTIVATED
    events.append(ev(EventKind.PROBATION_PASSED, T0 + 6))
    assert progress(reversed(events), online(), T0 + 7, spec).status == DeviceStatus.PASSED


def test_progress_failure_refusal_rollback_and_unrelated_versions() -> None:
    spec = make_spec()
    failed = progress([ev(EventKind.FAILED, T0, None, "disk full")], online(), T0, spec)
    assert failed == DeviceProgress(DeviceStatus.FAILED, "failed: disk full")
    refused = progress([ev(EventKind.REFUSED, T0, None, "untrusted")], online(), T0, spec)
    assert refused.status == DeviceStatus.FAILED and "untrusted" in refused.reason
    rb = [ev(EventKind.ACTIVATED, T0), ev(EventKind.ROLLED_BACK, T0 + 9, 3, "probation: errors")]
    assert progress(rb, online(), T0 + 10, spec) == DeviceProgress(
        DeviceStatus.ROLLED_BACK, "probation: errors"
    )
    other = [ev(EventKind.PROBATION_PASSED, T0, version=2)]
    assert progress(other, online(), T0, spec).status == DeviceStatus.PENDING
    shadow = [ev(EventKind.SHADOW_STARTED, T0)]
    assert progress(shadow, online(), T0, spec).status == DeviceStatus.PASSED


def test_replayed_old_directive_refused_by_the_agent_does_not_fail_the_rollout() -> None:
    # found by the soak (seed 2): a rogue client replayed the device's v1 directive
    # (seq 1) during the v2 canary; the agent refused it, and the refusal failed v2
    spec = make_spec()

    def seq_ev(kind: EventKind, ts: float, version: int | None, seq: int) -> Event:
        model = None if version is None else ModelVersion("kws", version)
        return Event("dev-0001", ts, kind, "", model, seq)

    passed = [
        seq_ev(EventKind.RECEIVED, T0, 3, 2),
        seq_ev(EventKind.PROBATION_PASSED, T0 + 1, 3, 2),
    ]
    replay = seq_ev(EventKind.REFUSED, T0 + 2, None, 1)
    assert progress([*passed, replay], online(), T0 + 3, spec).status == DeviceStatus.PASSED
    refused_now = seq_ev(EventKind.REFUSED, T0 + 2, None, 2)  # this rollout's own directive
    assert progress([*passed, refused_now], online(), T0 + 3, spec).status == DeviceStatus.FAILED


def test_progress_from_state_when_events_are_missing() -> None:
    spec = make_spec()
    on_probation = replace(online(active=3), probation="running")
    assert progress([], on_probation, T0, spec).status == DeviceStatus.ACTIVATED


def test_progress_a_lost_probation_passed_event_is_read_from_the_retained_state() -> None:
    """The soak (a hub killed -9 with its embedded broker while devices ended their
    probation): the ``probation_passed`` events were lost, the devices stayed
    ``activated`` in the hub's eyes and the v1 install waited for ever. The retained
    state (republished at every connect) shows the target active, probation over."""
    spec = make_spec()
    events = [ev(EventKind.RECEIVED, T0), ev(EventKind.ACTIVATED, T0 + 1)]
    running = replace(online(T0 + 2, active=3), probation="running")
    assert progress(events, running, T0 + 3, spec).status == DeviceStatus.ACTIVATED
    over = replace(online(T0 + 9, active=3), probation="none")
    assert progress(events, over, T0 + 10, spec).status == DeviceStatus.PASSED
    # a final verdict stands: rolled back (state on the previous version) or failed
    rolled = [*events, ev(EventKind.ROLLED_BACK, T0 + 5, 3, "probation: errors")]
    assert progress(rolled, online(T0 + 9, active=2), T0 + 10, spec).status == (
        DeviceStatus.ROLLED_BACK
    )
    failed = [ev(EventKind.FAILED, T0, 3, "smoke test")]
    assert progress(failed, over, T0 + 10, spec).status == DeviceStatus.FAILED
    # still on the previous version: nothing to read from the state
    assert progress(events[:1], online(T0 + 9), T0 + 10, spec).status == DeviceStatus.DOWNLOADING


def test_offline_device_is_pending_then_stale_never_failed() -> None:
    spec = make_spec(stale_after_s=600.0)
    off = online(ts=T0, is_online=False)
    assert progress([], off, T0 + 599, spec).status == DeviceStatus.PENDING
    assert progress([], off, T0 + 600, spec).status == DeviceStatus.STALE
    downloading = [ev(EventKind.DOWNLOADING, T0)]
    assert progress(downloading, off, T0 + 601, spec).status == DeviceStatus.STALE
    passed = [ev(EventKind.PROBATION_PASSED, T0)]
    assert progress(passed, off, T0 + 10_000, spec).status == DeviceStatus.PASSED
    assert progress([], online(ts=T0), T0 + 10_000, spec).status == DeviceStatus.PENDING


# ---------------------------------------------------------------------------- gates


def test_gate_results_report_value_limit_and_verdict() -> None:
    stage = Stage(share=0.1, bake_s=BAKE, gates=Gates(max_psi=0.2, max_js=0.1))
    prog = {"a": DeviceProgress(DeviceStatus.PASSED), "b": DeviceProgress(DeviceStatus.PENDING)}
    m = StageMetrics.from_progress(prog, drift={"psi": summary(psi=0.1)}, latency_ratio=1.0)
    results = {g.name: g for g in check_gates(stage, m, 10.0)}
    assert results["psi"].value == 0.1 and results["psi"].verdict == GateVerdict.WAITING
    assert results["psi"].detail.startswith("baking")  # a drift gate decides after the bake
    assert (
        results["js"].verdict == GateVerdict.WAITING and results["js"].detail == "not measured yet"
    )
    after = {g.name: g for g in check_gates(stage, m, BAKE)}
    assert after["psi"].verdict == GateVerdict.PASS and after["psi"].limit == 0.2
    assert results["success_share"].verdict == GateVerdict.WAITING
    assert results["failure_share"].verdict == GateVerdict.WAITING
    assert results["bake_s"].verdict == GateVerdict.WAITING
    assert results["min_count"].value == 1.0


# ---------------------------------------------------------------------------- state machine


def test_healthy_rollout_walks_all_stages_to_completed() -> None:
    devices = fleet(400)
    spec = make_spec()
    r, actions = started(spec, devices)
    assert r.state == RolloutState.RUNNING and r.stage == 0
    first = publishes(actions)
    assert first == [PublishDirectives(tuple(cohort(spec, 0, devices)), 3, "active", False)]
    published: list[str] = list(first[0].device_ids)
    now = T0
    for k in range(4):
        # before bake_s the gates pass but the stage waits
        same, acts = step(r, now + BAKE - 1, devices)
        assert same.state == RolloutState.RUNNING and same.stage == k and not publishes(acts)
        assert {g.name: g.verdict for g in same.gates}["bake_s"] == GateVerdict.WAITING
        now += BAKE
        r, acts = step(r, now, devices)
        for p in publishes(acts):
            assert not set(p.device_ids) & set(published)  # only new devices each stage
            published += p.device_ids
        if k < 3:
            assert r.state == RolloutState.RUNNING and r.stage == k + 1
            assert r.stage_started_at == now
    assert r.state == RolloutState.COMPLETED
    assert sorted(published) == sorted(devices) == list(r.touched)
    assert [t.to_state for t in r.history][-1] == RolloutState.COMPLETED
    assert any(isinstance(a, Notify) and "completed" in a.message for a in acts)
    assert evaluate_rollout(r, now + 1, {}, StageMetrics(), devices=devices) == (r, [])


def test_failing_canary_pauses_under_pause_policy() -> None:
    devices = fleet(400)
    r, _ = started(make_spec(on_failure="pause"), devices)
    members = cohort(r.spec, 0, devices)
    prog = {d: DeviceProgress(DeviceStatus.PASSED) for d in members}
    prog[members[0]] = DeviceProgress(DeviceStatus.FAILED, "failed: bad model")
    m = StageMetrics.from_progress(prog, drift=drift_of("none"), latency_ratio=1.0)
    r2, actions = evaluate_rollout(r, T0 + 5, prog, m, devices=devices)
    assert r2.state == RolloutState.PAUSED
    assert not publishes(actions)
    assert "failure_share" in r2.history[-1].reason and "bad model" in r2.history[-1].reason
    assert any(isinstance(a, Notify) and "paused" in a.message for a in actions)
    assert {g.name: g.verdict for g in r2.gates}["failure_share"] == GateVerdict.FAIL


def test_failing_stage_rolls_back_every_touched_device_under_rollback_policy() -> None:
    devices = fleet(400)
    r, _ = started(make_spec(on_failure="rollback"), devices)
    r, _ = step(r, T0 + BAKE, devices)  # canary passes → stage 2 (10 %)
    assert r.stage == 1
    touched = cohort(r.spec, 1, devices)
    assert list(r.touched) == touched
    prog = {d: DeviceProgress(DeviceStatus.ROLLED_BACK, "probation") for d in touched[:20]}
    m = StageMetrics(cohort=len(touched), failed=20, drift=drift_of("none"), latency_ratio=1.0)
    r2, actions = evaluate_rollout(r, T0 + BAKE + 5, prog, m, devices=devices)
    assert r2.state == RolloutState.ROLLED_BACK
    assert publishes(actions) == [PublishDirectives(tuple(touched), 2, "active", True)]


def test_rollback_policy_without_previous_version_pauses() -> None:
    devices = fleet(50)
    r, _ = started(make_spec(on_failure="rollback", previous_version=None), devices)
    r2, actions = step(r, T0 + 1, devices, drift=drift_of("major", psi=0.9, p_adjusted=1e-30))
    assert r2.state == RolloutState.PAUSED and not publishes(actions)


def test_overwhelming_drift_in_canary_fails_the_gate_during_the_bake() -> None:
    devices = fleet(400)
    r, _ = started(make_spec(), devices)
    r2, _ = step(r, T0 + 1, devices, drift=drift_of("major", psi=0.35, p_adjusted=1e-12))
    assert r2.state == RolloutState.PAUSED
    psi = {g.name: g for g in r2.gates}["psi"]
    assert psi.verdict == GateVerdict.FAIL and psi.value == 0.35 and psi.limit == 0.2
    assert "psi=0.35" in r2.history[-1].reason and "early" in psi.detail


def test_significant_drift_fails_the_gate_at_the_end_of_the_bake_not_before() -> None:
    devices = fleet(400)
    r, _ = started(make_spec(), devices)
    drifting = drift_of("drift", psi=0.3, p_adjusted=0.001)  # > alpha * 1e-3: not early
    during, _ = step(r, T0 + BAKE - 1, devices, drift=drifting)
    assert during.state == RolloutState.RUNNING
    assert {g.name: g.verdict for g in during.gates}["psi"] == GateVerdict.WAITING
    after, _ = step(during, T0 + BAKE, devices, drift=drifting)
    assert after.state == RolloutState.PAUSED
    assert {g.name: g.verdict for g in after.gates}["psi"] == GateVerdict.FAIL


def test_drift_gate_never_fails_for_lack_of_evidence() -> None:
    devices = fleet(400)
    thin = drift_of("insufficient", n=100, n_needed=500)
    for policy, end in (
        ("pause", RolloutState.PAUSED),
        ("rollback", RolloutState.ROLLED_BACK),
        ("proceed", RolloutState.RUNNING),
    ):
        r, _ = started(make_spec(on_insufficient=policy), devices)
        wait_s = r.current_stage.gates.max_evidence_wait_s
        waiting, _ = step(r, T0 + BAKE + wait_s - 1, devices, drift=thin)
        assert waiting.state == RolloutState.RUNNING and waiting.stage == 0
        psi = {g.name: g for g in waiting.gates}["psi"]
        assert psi.verdict == GateVerdict.WAITING
        assert psi.detail == "waiting for evidence: 100 of 500 predictions"
        done, _ = step(waiting, T0 + BAKE + wait_s, devices, drift=thin)
        assert done.state == end, policy
        assert all(g.verdict != GateVerdict.FAIL for g in done.gates)
        if policy == "proceed":
            assert done.stage == 1  # passed on, noting it
        else:
            assert "not enough evidence" in done.history[-1].reason
            assert "100 of 500" in done.history[-1].reason


def test_drift_gate_waits_for_evidence_even_when_drift_is_suspected() -> None:
    devices = fleet(400)
    r, _ = started(make_spec(), devices)
    suspected = drift_of("drift", psi=0.3, n=100, n_needed=500, p_adjusted=0.001)
    r2, _ = step(r, T0 + BAKE + 10, devices, drift=suspected)
    assert r2.state == RolloutState.RUNNING
    psi = {g.name: g for g in r2.gates}["psi"]
    assert psi.verdict == GateVerdict.WAITING and "100 of 500" in psi.detail


def test_drift_gate_looks_once_a_pass_is_kept_for_the_stage() -> None:
    devices = fleet(400)
    r, _ = started(make_spec(), devices)
    members = cohort(r.spec, 0, devices)
    prog = {d: DeviceProgress(DeviceStatus.PASSED) for d in members}
    prog[members[0]] = DeviceProgress(DeviceStatus.ACTIVATED)  # success share still waiting
    m = StageMetrics.from_progress(prog, drift=drift_of("none"), latency_ratio=1.0)
    first, _ = evaluate_rollout(r, T0 + BAKE, prog, m, devices=devices)
    assert {g.name: g.verdict for g in first.gates}["psi"] == GateVerdict.PASS
    later = replace(m, drift=drift_of("drift", psi=0.3, p_adjusted=0.001))
    second, _ = evaluate_rollout(first, T0 + BAKE + 5, prog, later, devices=devices)
    assert second.state == RolloutState.RUNNING
    assert {g.name: g.verdict for g in second.gates}["psi"] == GateVerdict.PASS
    # a resumed stage bakes, and looks, again
    paused, _ = pause(second, T0 + BAKE + 6)
    resumed, _ = resume(paused, T0 + BAKE + 7)
    assert resumed.gates == ()


def test_missing_drift_measurement_waits() -> None:
    devices = fleet(400)
    r, _ = started(make_spec(), devices)
    r2, _ = step(r, T0 + BAKE * 10, devices, drift={})
    assert r2.state == RolloutState.RUNNING and r2.stage == 0
    assert {g.name: g.verdict for g in r2.gates}["psi"] == GateVerdict.WAITING


def test_latency_ratio_gate() -> None:
    devices = fleet(400)
    r, _ = started(make_spec(), devices)
    slow, _ = step(r, T0 + BAKE, devices, latency_ratio=2.0)
    assert slow.state == RolloutState.PAUSED
    assert {g.name: g.verdict for g in slow.gates}["latency_ratio"] == GateVerdict.FAIL
    ok, _ = step(r, T0 + BAKE, devices, latency_ratio=1.4)
    assert ok.state == RolloutState.RUNNING and ok.stage == 1


def test_shadow_stage_agreement_gate() -> None:
    devices = fleet(400)
    gates = Gates(max_psi=None, max_latency_ratio=None, min_shadow_agreement=0.9)
    stages = (Stage(share=0.1, bake_s=BAKE, gates=gates, mode="shadow"), Stage(share=1.0))
    r, actions = started(make_spec(stages=stages), devices)
    assert publishes(actions)[0].mode == "shadow"
    waiting, _ = step(r, T0 + BAKE, devices)
    assert waiting.state == RolloutState.RUNNING and waiting.stage == 0
    low, _ = step(r, T0 + BAKE, devices, shadow_agreement=0.7)
    assert low.state == RolloutState.PAUSED and "shadow_agreement" in low.history[-1].reason
    good, acts = step(r, T0 + BAKE, devices, shadow_agreement=0.95)
    assert good.stage == 1 and publishes(acts)[0].mode == "active"


def test_manual_promotion_waits_for_approval() -> None:
    devices = fleet(400)
    r, _ = started(make_spec(promotion="manual"), devices)
    r, actions = step(r, T0 + BAKE, devices)
    assert r.state == RolloutState.WAITING_APPROVAL and r.stage == 0 and not publishes(actions)
    assert step(r, T0 + BAKE * 5, devices) == (r, [])
    r, actions = promote(r, T0 + BAKE * 6, devices=devices, reason="alice")
    assert r.state == RolloutState.RUNNING and r.stage == 1
    new = set(publishes(actions)[0].device_ids)
    assert new == set(cohort(r.spec, 1, devices)) - set(cohort(r.spec, 0, devices))
    assert "alice" in r.history[-1].reason


def test_manual_last_stage_passing_completes() -> None:
    devices = fleet(10)
    r, _ = started(make_spec(promotion="manual", stages=(Stage(share=1.0, bake_s=0),)), devices)
    r, _ = step(r, T0, devices)
    assert r.state == RolloutState.COMPLETED


def test_stale_devices_let_a_stage_complete() -> None:
    devices = fleet(400)
    spec = make_spec(stages=(Stage(share=1.0, bake_s=BAKE, gates=Gates(max_psi=None)),))
    r, _ = started(spec, devices)
    members = cohort(spec, 0, devices)
    prog = {d: DeviceProgress(DeviceStatus.PASSED) for d in members}
    for d in members[:50]:
        prog[d] = DeviceProgress(DeviceStatus.PENDING)
    m = StageMetrics.from_progress(prog, latency_ratio=1.0)
    waiting, _ = evaluate_rollout(r, T0 + BAKE, prog, m, devices=devices)
    assert waiting.state == RolloutState.RUNNING  # offline devices still pending
    for d in members[:50]:
        prog[d] = DeviceProgress(DeviceStatus.STALE, "offline")
    m = StageMetrics.from_progress(prog, latency_ratio=1.0)
    assert m.stale == 50 and m.success_share == 1.0
    done, _ = evaluate_rollout(r, T0 + BAKE, prog, m, devices=devices)
    assert done.state == RolloutState.COMPLETED


def test_late_enrolled_device_joins_by_the_same_rule() -> None:
    devices = fleet(400)
    spec = make_spec(stages=(Stage(share=0.5, bake_s=BAKE), Stage(share=1.0)))
    r, _ = started(spec, devices)
    more = dict(devices)
    more.update(fleet(200, prefix="late"))
    joiners = sorted(set(cohort(spec, 0, more)) - set(cohort(spec, 0, devices)))
    assert joiners and all(d.startswith("late-") for d in joiners)
    prog, m = healthy(cohort(spec, 0, devices))
    m = replace(m, cohort=m.cohort + len(joiners))  # joiners still pending
    r2, actions = evaluate_rollout(r, T0 + 1, prog, m, devices=more)
    assert publishes(actions) == [PublishDirectives(tuple(joiners), 3, "active", False)]
    assert set(joiners) <= set(r2.touched)


def test_operator_pause_resume_abort() -> None:
    devices = fleet(400)
    r, _ = started(make_spec(), devices)
    r, actions = pause(r, T0 + 10, "maintenance window")
    assert r.state == RolloutState.PAUSED and isinstance(actions[0], Notify)
    assert step(r, T0 + BAKE * 3, devices) == (r, [])  # paused: evaluate is a no-op
    r, _ = resume(r, T0 + 100)
    assert r.state == RolloutState.RUNNING and r.stage_started_at == T0 + 100
    same, _ = step(r, T0 + 100 + BAKE - 1, devices)  # bake restarts after resume
    assert same.stage == 0
    r, _ = abort(r, T0 + 200, "wrong model")
    assert r.state == RolloutState.ABORTED
    assert [t.to_state for t in r.history] == [
        RolloutState.RUNNING,
        RolloutState.PAUSED,
        RolloutState.RUNNING,
        RolloutState.ABORTED,
    ]
    assert r.history[-1].reason == "wrong model"


def test_operator_rollback_after_completion_downgrades_everyone() -> None:
    devices = fleet(20)
    r, _ = started(make_spec(stages=(Stage(share=1.0, bake_s=0),)), devices)
    r, _ = step(r, T0, devices)
    assert r.state == RolloutState.COMPLETED
    r, actions = rollback(r, T0 + 5, "field reports")
    assert r.state == RolloutState.ROLLED_BACK
    assert publishes(actions) == [PublishDirectives(tuple(sorted(devices)), 2, "active", True)]


@pytest.mark.parametrize(
    ("command", "state"),
    [
        ("promote", RolloutState.COMPLETED),
        ("promote", RolloutState.PAUSED),
        ("promote", RolloutState.DRAFT),
        ("resume", RolloutState.RUNNING),
        ("pause", RolloutState.ABORTED),
        ("start", RolloutState.RUNNING),
        ("abort", RolloutState.COMPLETED),
        ("rollback", RolloutState.DRAFT),
        ("rollback", RolloutState.ROLLED_BACK),
    ],
)
def test_illegal_command_refused(command: str, state: RolloutState) -> None:
    r = replace(new_rollout(make_spec()), state=state)
    devices = fleet(10)
    calls = {
        "promote": lambda: promote(r, T0, devices=devices),
        "resume": lambda: resume(r, T0),
        "pause": lambda: pause(r, T0),
        "start": lambda: start(r, T0, devices=devices),
        "abort": lambda: abort(r, T0),
        "rollback": lambda: rollback(r, T0),
    }
    with pytest.raises(RolloutError, match=f"cannot .* while {state.value}") as info:
        calls[command]()
    assert "\n" not in str(info.value)


def test_rollback_of_first_install_refused() -> None:
    r, _ = started(make_spec(previous_version=None), fleet(10))
    with pytest.raises(RolloutError, match="no previous version"):
        rollback(r, T0)


# ---------------------------------------------------------------------------- conflicts


def test_overlapping_rollouts_of_same_model_conflict() -> None:
    devices: Fleet = {**fleet(10), **fleet(5, tags=("site-b",), prefix="b")}
    running, _ = started(make_spec(id="old"), devices)
    new = make_spec(id="new", selector=Selector())
    assert conflicts(new, [running], devices) == sorted(fleet(10))
    with pytest.raises(RolloutError, match=r"10 device.* active rollout of kws") as info:
        ensure_no_conflicts(new, [running], devices)
    assert "\n" not in str(info.value)
    disjoint = make_spec(id="new", selector=Selector(tags=("site-b",)))
    assert conflicts(disjoint, [running], devices) == []
    other_model = make_spec(id="new", model="vision", selector=Selector())
    assert conflicts(other_model, [running], devices) == []
    ended, _ = abort(running, T0)
    assert conflicts(new, [ended], devices) == []
    ensure_no_conflicts(new, [ended], devices)


# ---------------------------------------------------------------------------- JSON


def test_spec_json_round_trip() -> None:
    spec = make_spec(
        stages=(
            Stage(count=5, bake_s=30, gates=Gates(min_shadow_agreement=0.9), mode="shadow"),
            Stage(share=0.5),
            Stage(share=1.0),
        ),
        promotion="manual",
        on_failure="rollback",
        selector=Selector(tags=("site-a", "gen2"), device_ids=("dev-0001",)),
        probation=Probation(window_s=60, max_latency_p95_ms=30.0),
    )
    text = json.dumps(spec.to_json())
    assert RolloutSpec.from_json(json.loads(text)) == spec
    default = RolloutSpec(id="x", model="m", target_version=1, previous_version=None)
    assert [s.share for s in default.stages] == [0.01, 0.1, 0.5, 1.0]
    assert RolloutSpec.from_json(default.to_json()) == default


def _mutated(path: list[str | int], value: Any, delete: bool = False) -> dict[str, Any]:
    doc = make_spec().to_json()
    target: Any = doc
    for key in path[:-1]:
        target = target[key]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value", "delete", "match"),
    [
        (["extra"], 1, False, "unexpected field"),
        (["promotion"], None, True, "missing field"),
        (["target_version"], "3", False, "expected int"),
        (["target_version"], True, False, "expected int"),
        (["id"], "../etc", False, "not a valid name"),
        (["format"], "edgefleet-rollout-spec/9", False, "format"),
        (["promotion"], "yolo", False, "promotion"),
        (["on_failure"], "ignore", False, "on_failure"),
        (["stages"], [], False, "at least one stage"),
        (["stages", 0, "share"], 0.0, False, "share"),
        (["stages", 0, "share"], 1.5, False, "share"),
        (["stages", 0, "count"], 3, False, "exactly one of share or count"),
        (["stages", 0, "mode"], "canary", False, "mode"),
        (["stages", 1, "share"], 0.001, False, "must not decrease"),
        (["stages", 0, "gates", "max_failure_share"], 2.0, False, "max_failure_share"),
        (["stages", 0, "gates", "bogus"], 1, False, "unexpected field"),
        (["selector", "device_ids"], ["ok", "a/b"], False, "not a valid name"),
        (["previous_version"], 3, False, "previous_version"),
        (["probation", "window_s"], "x", False, "expected float"),
        (["on_insufficient"], "fail", False, "on_insufficient"),
        (["stages", 0, "gates", "min_predictions"], -1, False, "min_predictions"),
        (["stages", 0, "gates", "max_evidence_wait_s"], -5.0, False, "max_evidence_wait_s"),
        (["stages", 0, "gates", "max_js"], 1.5, False, "max_js"),
    ],
)
def test_malformed_spec_refused(
    path: list[str | int], value: Any, delete: bool, match: str
) -> None:
    with pytest.raises(ValidationError, match=match) as info:
        RolloutSpec.from_json(_mutated(path, value, delete))
    assert "\n" not in str(info.value)


def test_specs_and_rollouts_stored_before_the_evidence_fields_still_load() -> None:
    doc = make_spec(on_insufficient="proceed").to_json()
    del doc["on_insufficient"]
    for stage in doc["stages"]:
        del stage["gates"]["min_predictions"]
        del stage["gates"]["max_evidence_wait_s"]
    old = RolloutSpec.from_json(doc)
    assert old.on_insufficient == "pause"
    assert old.stages[0].gates == Gates(max_psi=0.2, max_latency_ratio=1.5)
    devices = fleet(100)
    r, _ = started(make_spec(), devices)
    r, _ = step(r, T0 + 5, devices)
    stored = r.to_json()
    for g in stored["gates"]:
        del g["detail"]
    assert Rollout.from_json(stored).gates[0].detail == ""


def test_rollout_json_round_trip() -> None:
    devices = fleet(100)
    r, _ = started(make_spec(), devices)
    r, _ = step(r, T0 + 5, devices)
    assert r.gates
    assert Rollout.from_json(json.loads(json.dumps(r.to_json()))) == r


# ---------------------------------------------------------------------------- store


def test_store_save_get_list_and_optimistic_version(tmp_path: Path) -> None:
    store = RolloutStore(tmp_path / "hub.db")
    draft = new_rollout(make_spec(id="a"))
    assert store.save(draft) == 1
    with pytest.raises(RolloutConflictError, match="already exists"):
        store.save(draft)
    running, _ = start(draft, T0, devices=fleet(10))
    assert store.save(running, expected_version=1) == 2
    with pytest.raises(RolloutConflictError, match="changed since version 1"):
        store.save(running, expected_version=1)
    store.save(new_rollout(make_spec(id="b")))
    got = store.get("a")
    assert got.rollout == running and got.version == 2
    assert [s.rollout.spec.id for s in store.list()] == ["a", "b"]
    assert [s.rollout.spec.id for s in store.list(active_only=True)] == ["a"]
    with pytest.raises(RolloutError, match="not found"):
        store.get("zzz")
    store.close()


def test_rollout_reloaded_after_restart_evaluates_to_the_same_step(tmp_path: Path) -> None:
    devices = fleet(400)
    db = tmp_path / "hub.db"
    r, _ = started(make_spec(), devices)
    r, _ = step(r, T0 + BAKE, devices)  # mid-rollout: stage 2 running
    assert r.stage == 1
    first = RolloutStore(db)
    first.save(r)
    first.close()
    reloaded = RolloutStore(db).get("r1").rollout
    assert reloaded == r
    for now in (T0 + BAKE + 1, T0 + 2 * BAKE):
        assert step(reloaded, now, devices) == step(r, now, devices)


def test_store_shares_the_hub_sqlite_file(tmp_path: Path) -> None:
    from hub.store import Store

    db = tmp_path / "hub.db"
    hub = Store(db)
    rollouts = RolloutStore(db)
    rollouts.save(new_rollout(make_spec()))
    assert "0001_devices_windows_events" in hub.migrations()
    assert RolloutStore(db).get("r1").version == 1
    hub.close()
    rollouts.close()


def test_touched_mapping_type_is_accepted() -> None:
    devices: Mapping[str, Collection[str]] = {"d1": ["site-a"], "d2": ("site-a",)}
    spec = make_spec(stages=(Stage(share=1.0),))
    r, actions = start(new_rollout(spec), T0, devices=devices)
    assert r.touched == ("d1", "d2")
    assert publishes(actions)[0].device_ids == ("d1", "d2")
