"""``edgefleet rollout``: start, follow and steer staged rollouts through the hub's API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from edge_agent.canonical import parse_json
from edge_agent.cli import EdgeFleetGroup
from hub.cli.common import api_result, existing_file, hub_client, hub_options


@click.group(cls=EdgeFleetGroup)
def rollout() -> None:
    """Staged rollouts through the hub's API (for operators and CI pipelines)."""


def _print_rollout(r: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(r, indent=2))
        return
    spec = r["spec"]
    click.echo(
        f"rollout  {spec['id']}: {spec['model']} v{spec['target_version']} "
        f"state={r['state']} stage={r['stage'] + 1}/{len(spec['stages'])} "
        f"touched={len(r['touched'])}"
    )
    for g in r.get("gates", []):
        value = "-" if g["value"] is None else f"{g['value']:.4g}"
        detail = f"  {g['detail']}" if g.get("detail") else ""
        click.echo(
            f"gate     {g['name']:<16} {value:>8} (limit {g['limit']}) {g['verdict']}{detail}"
        )


_FINAL = {"completed", "aborted", "rolled_back"}


def waiting_for(r: dict[str, Any]) -> str:
    """One line saying what a running rollout waits for: its stage and every gate that
    has not passed, with its evidence (e.g. ``drift: waiting for evidence: 40 of 133``)."""
    spec = r["spec"]
    stages = spec["stages"]
    index = min(r["stage"], len(stages) - 1)
    stage = stages[index]
    size = (
        f"{stage['share'] * 100:g} %"
        if stage.get("share") is not None
        else (f"{stage.get('count')} devices")
    )
    parts = [f"stage {index + 1}/{len(stages)} ({size}) {r['state']}"]
    for g in r.get("gates", []):
        if g["verdict"] == "pass":
            continue
        what = g.get("detail") or (
            f"{g['value'] if g['value'] is not None else '-'} of {g['limit']}"
        )
        parts.append(f"{g['name']}: {g['verdict']} ({what})")
    if len(parts) == 1 and r["state"] == "running":
        parts.append("devices activating and on probation")
    return "; ".join(parts)


def _wait_rollout(client: Any, rollout_id: str, timeout: float) -> dict[str, Any]:
    """Poll until the rollout leaves `running` for good or needs a human (timeout: exit 1),
    saying on stderr what it waits for whenever that changes."""
    import time

    deadline = time.monotonic() + timeout
    said = ""
    while True:
        r = api_result(client.get(f"/v1/rollouts/{rollout_id}"))
        if r["state"] in _FINAL | {"paused", "waiting_approval"}:
            return r
        line = waiting_for(r)
        if line != said:
            click.echo(f"waiting  {rollout_id}: {line}", err=True)
            said = line
        if time.monotonic() > deadline:
            raise click.ClickException(
                f"rollout {rollout_id} still {r['state']} after {timeout:g} s: {line}"
            )
        time.sleep(1.0)  # a remote API: nothing to subscribe to from the CLI yet


@rollout.command("start")
@click.option(
    "--spec",
    "spec_path",
    type=existing_file,
    default=None,
    help="A rollout spec (JSON); or build one with the options below.",
)
@click.option("--id", "rollout_id", default=None, help="Rollout id (letters, digits, . _ -).")
@click.option("--model", "model_name", default=None)
@click.option("--version", "version", type=click.IntRange(min=1), default=None)
@click.option(
    "--previous", type=click.IntRange(min=1), default=None, help="Version to roll back to."
)
@click.option("--tag", "tags", multiple=True, help="Only devices with this tag (repeat).")
@click.option("--stages", default="10,50,100", show_default=True, help="Cumulative percentages.")
@click.option("--bake", default=300.0, show_default=True, help="Seconds per stage.")
@click.option("--on-failure", type=click.Choice(["pause", "rollback"]), default="pause")
@click.option("--manual", is_flag=True, help="Wait for `rollout promote` between stages.")
@click.option(
    "--max-psi",
    type=float,
    default=0.25,
    show_default=True,
    help="Drift gate on the cohort: fails on significant drift (1% family-wise) with PSI "
    "at or above this, decided once after the bake with enough predictions.",
)
@click.option("--no-drift-gate", is_flag=True, help="Do not gate on drift.")
@click.option(
    "--evidence-wait",
    type=float,
    default=300.0,
    show_default=True,
    help="Seconds past the bake a drift gate waits for the predictions it needs.",
)
@click.option(
    "--on-insufficient",
    type=click.Choice(["pause", "rollback", "proceed"]),
    default="proceed",
    show_default=True,
    help="What to do when a drift gate still lacks evidence after --evidence-wait "
    "(proceed: a quiet fleet completes; the gate's status says it had too little).",
)
@click.option(
    "--probation",
    "probation_s",
    type=float,
    default=120.0,
    show_default=True,
    help="Seconds each device watches the new model before keeping it.",
)
@click.option(
    "--wait",
    "wait_s",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Block until done or stuck; exit 1 unless it completed.",
)
@hub_options[0]
@hub_options[1]
@hub_options[2]
@click.option("--json", "as_json", is_flag=True)
def rollout_start(
    spec_path: Path | None,
    rollout_id: str | None,
    model_name: str | None,
    version: int | None,
    previous: int | None,
    tags: tuple[str, ...],
    stages: str,
    bake: float,
    on_failure: str,
    manual: bool,
    max_psi: float,
    no_drift_gate: bool,
    evidence_wait: float,
    on_insufficient: str,
    probation_s: float,
    wait_s: float | None,
    hub_url: str,
    token_env: str,
    as_json: bool,
) -> None:
    """Start a staged rollout of a registered model version."""
    if spec_path is not None:
        spec = parse_json(spec_path.read_bytes(), str(spec_path))
    else:
        if not (rollout_id and model_name and version):
            raise click.UsageError("give --spec, or --id, --model and --version")
        try:
            shares = [float(x) / 100 for x in stages.split(",") if x.strip()]
        except ValueError as exc:
            raise click.BadParameter("comma-separated percentages", param_hint="--stages") from exc
        from edge_agent.directive import Probation
        from hub.rollout import Gates, RolloutSpec, Selector, Stage

        gates = Gates(
            max_psi=None if no_drift_gate else max_psi,
            max_latency_ratio=None if previous is None else 1.5,
            max_evidence_wait_s=evidence_wait,
        )
        spec = RolloutSpec(
            id=rollout_id,
            model=model_name,
            target_version=version,
            previous_version=previous,
            selector=Selector(tags=tags),
            on_failure=on_failure,  # type: ignore[arg-type]
            on_insufficient=on_insufficient,  # type: ignore[arg-type]
            promotion="manual" if manual else "auto",
            stages=tuple(Stage(share=s, bake_s=bake, gates=gates) for s in shares),
            probation=Probation(window_s=probation_s),
        ).to_json()
    with hub_client(hub_url, token_env) as client:
        r = api_result(client.post("/v1/rollouts", json=spec))
        if wait_s is not None:
            r = _wait_rollout(client, r["spec"]["id"], wait_s)
    _print_rollout(r, as_json)
    if wait_s is not None and r["state"] != "completed":
        raise click.ClickException(f"rollout {r['spec']['id']} ended {r['state']}")


@rollout.command("status")
@click.argument("rollout_id")
@click.option("--wait", "wait_s", type=float, default=None, metavar="SECONDS")
@hub_options[0]
@hub_options[1]
@hub_options[2]
@click.option("--json", "as_json", is_flag=True)
def rollout_status(
    rollout_id: str, wait_s: float | None, hub_url: str, token_env: str, as_json: bool
) -> None:
    """A rollout's state, stage and gate values (``--wait``: until done or stuck)."""
    with hub_client(hub_url, token_env) as client:
        if wait_s is None:
            r = api_result(client.get(f"/v1/rollouts/{rollout_id}"))
        else:
            r = _wait_rollout(client, rollout_id, wait_s)
    _print_rollout(r, as_json)
    if wait_s is not None and r["state"] != "completed":
        raise click.ClickException(f"rollout {rollout_id} ended {r['state']}")


@rollout.command("list")
@click.option("--active", is_flag=True)
@hub_options[0]
@hub_options[1]
@hub_options[2]
@click.option("--json", "as_json", is_flag=True)
def rollout_list(active: bool, hub_url: str, token_env: str, as_json: bool) -> None:
    """Every rollout (``--active``: running, waiting or paused)."""
    with hub_client(hub_url, token_env) as client:
        result = api_result(client.get("/v1/rollouts", params={"active": active}))
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        for r in result["rollouts"]:
            _print_rollout(r, False)


def _rollout_command(name: str) -> click.Command:
    @click.command(name, help=f"{name.capitalize()} a rollout.")
    @click.argument("rollout_id")
    @hub_options[0]
    @hub_options[1]
    @hub_options[2]
    @click.option("--json", "as_json", is_flag=True)
    def command(rollout_id: str, hub_url: str, token_env: str, as_json: bool) -> None:
        with hub_client(hub_url, token_env) as client:
            r = api_result(client.post(f"/v1/rollouts/{rollout_id}/{name}"))
        _print_rollout(r, as_json)

    return command


for _name in ("promote", "pause", "resume", "abort", "rollback"):
    rollout.add_command(_rollout_command(_name))
