"""``edgefleet rollout``: start, follow and steer staged rollouts through the hub's API."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from edge_agent.cli import EdgeFleetGroup
from edge_agent.contract.canonical import parse_json
from hub.cli.common import connect, existing_file, print_json, remote_options

if TYPE_CHECKING:
    from edgefleet_client import HubClient, Rollout
    from edgefleet_client.client import RolloutCommand


@click.group(cls=EdgeFleetGroup)
def rollout() -> None:
    """Staged rollouts through the hub's API (for operators and CI pipelines)."""


def _print_rollout(r: Rollout, as_json: bool) -> None:
    if as_json:
        print_json(r.source)
        return
    click.echo(
        f"rollout  {r.id}: {r.model} v{r.target_version} "
        f"state={r.state} stage={r.stage + 1}/{len(r.stages)} "
        f"touched={len(r.touched)}"
    )
    for g in r.gates:
        value = "-" if g.value is None else f"{g.value:.4g}"
        detail = f"  {g.detail}" if g.detail else ""
        click.echo(f"gate     {g.name:<16} {value:>8} (limit {g.limit}) {g.verdict}{detail}")


_FINAL = {"completed", "aborted", "rolled_back"}


def waiting_for(r: Rollout) -> str:
    """One line saying what a running rollout waits for: its stage and every gate that
    has not passed, with its evidence (e.g. ``drift: waiting for evidence: 40 of 133``)."""
    index = min(r.stage, len(r.stages) - 1)
    stage = r.stages[index]
    size = f"{stage.share * 100:g} %" if stage.share is not None else f"{stage.count} devices"
    parts = [f"stage {index + 1}/{len(r.stages)} ({size}) {r.state}"]
    for g in r.gates:
        if g.verdict == "pass":
            continue
        what = g.detail or f"{g.value if g.value is not None else '-'} of {g.limit}"
        parts.append(f"{g.name}: {g.verdict} ({what})")
    if len(parts) == 1 and r.state == "running":
        parts.append("devices activating and on probation")
    return "; ".join(parts)


def _wait_rollout(client: HubClient, rollout_id: str, timeout: float) -> Rollout:
    """Poll until the rollout leaves `running` for good or needs a human (timeout: exit 1),
    saying on stderr what it waits for whenever that changes."""
    import time

    deadline = time.monotonic() + timeout
    said = ""
    while True:
        r = client.rollout(rollout_id)
        if r.state in _FINAL | {"paused", "waiting_approval"}:
            return r
        line = waiting_for(r)
        if line != said:
            click.echo(f"waiting  {rollout_id}: {line}", err=True)
            said = line
        if time.monotonic() > deadline:
            raise click.ClickException(
                f"rollout {rollout_id} still {r.state} after {timeout:g} s: {line}"
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
@remote_options
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
    hub_ca: Path | None,
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
        from edge_agent.contract.directive import Probation
        from hub.rollouts import Gates, RolloutSpec, Selector, Stage

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
    if not isinstance(spec, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--spec")
    with connect(hub_url, token_env, hub_ca) as client:
        r = client.start_rollout(spec)
        if wait_s is not None:
            r = _wait_rollout(client, r.id, wait_s)
    _print_rollout(r, as_json)
    if wait_s is not None and r.state != "completed":
        raise click.ClickException(f"rollout {r.id} ended {r.state}")


@rollout.command("status")
@click.argument("rollout_id")
@click.option("--wait", "wait_s", type=float, default=None, metavar="SECONDS")
@remote_options
@click.option("--json", "as_json", is_flag=True)
def rollout_status(
    rollout_id: str,
    wait_s: float | None,
    hub_url: str,
    token_env: str,
    hub_ca: Path | None,
    as_json: bool,
) -> None:
    """A rollout's state, stage and gate values (``--wait``: until done or stuck)."""
    with connect(hub_url, token_env, hub_ca) as client:
        if wait_s is None:
            r = client.rollout(rollout_id)
        else:
            r = _wait_rollout(client, rollout_id, wait_s)
    _print_rollout(r, as_json)
    if wait_s is not None and r.state != "completed":
        raise click.ClickException(f"rollout {rollout_id} ended {r.state}")


@rollout.command("list")
@click.option("--active", is_flag=True)
@remote_options
@click.option("--json", "as_json", is_flag=True)
def rollout_list(
    active: bool, hub_url: str, token_env: str, hub_ca: Path | None, as_json: bool
) -> None:
    """Every rollout (``--active``: running, waiting or paused)."""
    with connect(hub_url, token_env, hub_ca) as client:
        rollouts = client.rollouts(active=active)
    if as_json:
        print_json({"rollouts": [r.source for r in rollouts]})
    else:
        for r in rollouts:
            _print_rollout(r, False)


def _rollout_command(name: RolloutCommand) -> click.Command:
    @click.command(name, help=f"{name.capitalize()} a rollout.")
    @click.argument("rollout_id")
    @remote_options
    @click.option("--json", "as_json", is_flag=True)
    def command(
        rollout_id: str, hub_url: str, token_env: str, hub_ca: Path | None, as_json: bool
    ) -> None:
        with connect(hub_url, token_env, hub_ca) as client:
            r = client.rollout_command(rollout_id, name)
        _print_rollout(r, as_json)

    return command


_COMMANDS: tuple[RolloutCommand, ...] = ("promote", "pause", "resume", "abort", "rollback")
for _name in _COMMANDS:
    rollout.add_command(_rollout_command(_name))
