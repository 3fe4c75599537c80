"""The soak's invariants, each with the figure it was judged on, and the summary table.

Counted from what the agents really did (their ledgers: every sequence they handed out
and the predictions in its windows, written in the outbox's own transaction) against
what the hub stored.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.soak.run import MISSING_FAULTS, RunRecord


@dataclass(frozen=True)
class Verdict:
    """One invariant: whether it held and the figure it was judged on."""

    name: str
    held: bool
    figure: str


def _exactly_once(r: RunRecord) -> Verdict:
    bad = []
    produced_w = stored_w = produced_p = stored_p = 0
    for d, p in sorted(r.produced.items()):
        s_w, s_p = r.stored_seqs.get(d, 0), r.stored_predictions.get(d, 0)
        produced_w += p.last_seq
        stored_w += s_w
        produced_p += p.predictions
        stored_p += s_p
        if p.sequences != p.last_seq or s_w != p.last_seq or s_p != p.predictions:
            bad.append(
                f"{d}: ledger {p.sequences}/{p.last_seq} seqs {p.predictions} preds, "
                f"hub {s_w} seqs {s_p} preds"
            )
        if r.duplicate_seqs.get(d, 0):
            bad.append(f"{d}: {r.duplicate_seqs[d]} sequences stored twice")
    held = bool(r.produced) and not bad
    figure = (
        f"windows produced {produced_w}, stored {stored_w}; predictions in them "
        f"produced {produced_p}, stored {stored_p}; devices differing {len(bad)}"
    )
    if bad:
        figure += " (" + "; ".join(bad[:5]) + ")"
    return Verdict("1 exactly once (produced = stored per device)", held, figure)


def _converged(r: RunRecord) -> Verdict:
    v2 = r.targets.get("v2")
    sha = r.shas.get(v2 or -1)
    registered = set(r.targets.values()) - {r.targets.get("v3")}
    off = [d for d in r.produced if (r.devices.get(d, {}).get("active") or {}).get("version") != v2]
    agent_off = [d for d, c in r.final_counts.items() if c.active != v2 or c.active_sha256 != sha]
    activations = [e for e in r.events if e["kind"] == "activated"]
    unknown = [e for e in activations if (e.get("model") or {}).get("version") not in registered]
    held = v2 is not None and not off and not agent_off and not unknown and bool(r.final_counts)
    figure = (
        f"{len(r.produced) - len(off)}/{len(r.produced)} devices on v{v2} (hub's view), "
        f"{len(r.final_counts) - len(agent_off)}/{len(r.final_counts)} running v{v2}'s signed "
        f"bundle sha256 by the agents' own report; {len(activations)} activations, "
        f"{len(unknown)} of a version other than v1/v2 (the broken v3 or unregistered)"
    )
    return Verdict("2 every device on the last rollout's version, verified", held, figure)


def _no_deaths(r: RunRecord) -> Verdict:
    held = not r.unexpected_exits and r.hub_stop_status == 0 and r.drained
    restarts = ", ".join(f"{k} {v}" for k, v in sorted(r.restarts.items())) or "none"
    figure = (
        f"unexpected exits {len(r.unexpected_exits)}; restarts by the harness: "
        f"{restarts}; hub's clean stop status {r.hub_stop_status}; every agent drained "
        f"at the end: {r.drained}"
    )
    if r.unexpected_exits:
        figure += " (" + "; ".join(r.unexpected_exits[:3]) + ")"
    return Verdict("3 no process exited except by the harness; every restart resumed", held, figure)


def _refusals(r: RunRecord) -> Verdict:
    refusals = [e for e in r.events if e["kind"] in ("refused", "failed")]
    silent = [e for e in refusals if not str(e.get("detail", "")).strip()]
    invisible = [what for what, seen, _ in r.rogue_visible if not seen]
    not_events = [
        what
        for what, seen, how in r.rogue_visible
        if seen
        and not how.startswith(("agent event", "broker:", "hub audit", "stored once", "lost by"))
    ]
    untried = "rogue" in r.config.get("faults", ()) and not r.rogue_visible
    held = not silent and not invisible and not not_events and not untried
    kinds = Counter(e["kind"] for e in refusals)
    tried = len(r.rogue_visible)
    figure = (
        f"rogue attempts {tried}, refused visibly {tried - len(invisible)}"
        f" (as an event or a broker refusal: {tried - len(invisible) - len(not_events)},"
        f" only as a hub counter: {len(not_events)}); refused/failed events {dict(kinds)}, "
        f"{len(silent)} without a reason; rogue messages the embedded broker acknowledged "
        f"and delivered to no one: {r.broker_losses}"
    )
    if untried:
        figure += " (the rogue client never ran)"
    if invisible or not_events:
        figure += (
            " ("
            + "; ".join(
                [
                    *(f"not seen: {w}" for w in invisible),
                    *(f"counter only: {w}" for w in not_events),
                ]
            )
            + ")"
        )
    return Verdict("4 every refused input visible as an event with a reason", held, figure)


def _gates(r: RunRecord, canary: int) -> Verdict:
    problems = []
    for kind in ("v1", "v2"):
        doc = r.rollouts.get(kind)
        if doc is None:
            problems.append(f"{kind} never started")
            continue
        bad = [h for h in doc["history"] if h["to"] in ("rolled_back", "paused", "aborted")]
        if doc["state"] != "completed" or bad:
            why = bad[0]["reason"][:120] if bad else doc["state"]
            problems.append(f"{kind} {doc['state']}: {why}")
    v3 = r.rollouts.get("v3")
    touched: list[str] = []
    outside: set[str] = set()
    if v3 is None:
        problems.append("v3 never started")
    else:
        touched = list(v3["touched"])
        failed_at = [
            h["stage"] for h in v3["history"] if h["to"] in ("rolled_back", "rolling_back")
        ]
        if v3["state"] != "rolled_back":
            problems.append(f"v3 ended {v3['state']}")
        if failed_at and failed_at[0] != 0:
            problems.append(f"v3 failed at stage {failed_at[0]}, not its canary")
        if len(touched) > canary:
            problems.append(f"v3 touched {len(touched)} devices, its canary has {canary}")
        v3_version = r.targets.get("v3")
        outside = {
            e["device_id"]
            for e in r.events
            if (e.get("model") or {}).get("version") == v3_version and e["device_id"] not in touched
        }
        if outside:
            problems.append(f"{len(outside)} devices outside the canary saw v3")
    figure = (
        f"v1 {r.rollouts.get('v1', {}).get('state')}, v2 "
        f"{r.rollouts.get('v2', {}).get('state')}, v3 {v3['state'] if v3 else None} "
        f"having touched {len(touched)} devices (canary {canary}), {len(outside)} "
        "outside it saw v3"
    )
    if problems:
        figure += " (" + "; ".join(problems) + ")"
    return Verdict(
        "5 no healthy stage failed a gate; broken v3 caught at its canary", not problems, figure
    )


def _convergence(r: RunRecord) -> Verdict:
    if r.converged_at_s is None or r.healed_at_s is None:
        return Verdict("6 convergence after the last fault", False, "did not converge")
    t = r.converged_at_s - r.healed_at_s
    return Verdict("6 convergence after the last fault", True, f"{t:.1f} s")


def judge(r: RunRecord, canary: int) -> list[Verdict]:
    """Every invariant of the run."""
    return [
        _exactly_once(r),
        _converged(r),
        _no_deaths(r),
        _refusals(r),
        _gates(r, canary),
        _convergence(r),
    ]


def summary(r: RunRecord, verdicts: list[Verdict]) -> dict[str, Any]:
    """The run's figures as JSON (what ``--out`` writes)."""
    kinds = Counter(f.kind for f in r.faults)
    return {
        "format": "edgefleet-soak/1",
        "config": r.config,
        "ok": all(v.held for v in verdicts) and not r.problems,
        "elapsed_s": r.elapsed_s,
        "faults_by_kind": dict(sorted(kinds.items())),
        "faults_total": len(r.faults),
        "faults_not_injected": [*MISSING_FAULTS, *r.skipped_faults],
        "invariants": [asdict(v) for v in verdicts],
        "windows_produced": sum(p.last_seq for p in r.produced.values()),
        "windows_stored": sum(r.stored_seqs.values()),
        "predictions_produced": sum(p.predictions for p in r.produced.values()),
        "predictions_stored": sum(r.stored_predictions.values()),
        "convergence_s": None
        if r.converged_at_s is None or r.healed_at_s is None
        else round(r.converged_at_s - r.healed_at_s, 1),
        "peak_worker_rss_bytes": r.peak_worker_rss,
        "agents_per_worker": r.config.get("per_worker"),
        "rogue": [list(x) for x in r.rogue_visible],
        "problems": r.problems,
        "fault_log": [asdict(f) for f in r.faults],
    }


def table(doc: dict[str, Any]) -> str:
    """The summary table printed at the end."""
    c = doc["config"]
    lines = [
        f"soak: seed {c['seed']}, {c['agents']} agents, {c['broker']} broker, "
        f"{doc['elapsed_s']:.0f} s",
        "faults     "
        + (", ".join(f"{k} {n}" for k, n in doc["faults_by_kind"].items()) or "none")
        + f" (total {doc['faults_total']})",
        f"not tried  {', '.join(doc['faults_not_injected'])}",
        f"windows    produced {doc['windows_produced']}, stored {doc['windows_stored']}; "
        f"predictions produced {doc['predictions_produced']}, stored {doc['predictions_stored']}",
        f"converged  {doc['convergence_s']} s after the last fault",
        f"peak RSS   {doc['peak_worker_rss_bytes'] / 2**20:.0f} MiB per worker process "
        f"({doc['agents_per_worker']} agents each)",
    ]
    for v in doc["invariants"]:
        lines.append(f"{'HELD  ' if v['held'] else 'BROKEN'} {v['name']}: {v['figure']}")
    lines.extend(f"PROBLEM {p}" for p in doc["problems"])
    lines.append(f"result     {'every invariant held' if doc['ok'] else 'FAILED'}")
    return "\n".join(lines)


def write(doc: dict[str, Any], out: Path) -> None:
    """Write the JSON summary."""
    out.write_text(json.dumps(doc, indent=2, default=str) + "\n")
