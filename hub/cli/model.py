"""``edgefleet model``: push a model to a running hub, its drift verdicts, the demo model."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import click

from edge_agent.cli import EdgeFleetGroup
from hub.cli.common import connect, existing_file, print_json, remote_options

if TYPE_CHECKING:
    from edgefleet_client import DriftResult


@click.group(cls=EdgeFleetGroup)
def model() -> None:
    """Produce models: a demo predictive-maintenance model, float32 and int8."""


@model.command("push")
@click.argument("model_file", type=existing_file)
@click.option("--name", help="Model name (for a .tflite; a bundle names itself).")
@click.option("--reference", type=existing_file, help="Reference data (.npz or .csv).")
@click.option("--schema", "schema_path", type=existing_file, help="Input schema JSON.")
@click.option("--lineage", default="{}", help="Free-form JSON object (run id, metrics).")
@click.option(
    "--version",
    "version",
    type=click.IntRange(min=1),
    default=None,
    help="Explicit version (default: the next one).",
)
@remote_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def model_push(
    model_file: Path,
    name: str | None,
    reference: Path | None,
    schema_path: Path | None,
    lineage: str,
    version: int | None,
    hub_url: str,
    token_env: str,
    hub_ca: Path | None,
    as_json: bool,
) -> None:
    """Register a model with the hub: a .tflite is built into a bundle and signed by the
    hub; an .efb signed elsewhere is verified and registered as it is."""
    if model_file.suffix != ".efb" and (not name or reference is None):
        raise click.UsageError("a .tflite needs --name and --reference")
    with connect(hub_url, token_env, hub_ca) as client:
        if name is None or reference is None or model_file.suffix == ".efb":
            result = client.upload_bundle(model_file.read_bytes())
        else:
            result = client.push_model(
                name,
                model_file.read_bytes(),
                reference.read_bytes(),
                model_filename=model_file.name,
                reference_filename=reference.name,
                schema=schema_path.read_bytes() if schema_path else None,
                lineage=lineage,
                version=version,
            )
    if as_json:
        print_json(result.source)
    else:
        click.echo(
            f"registered {result.name} v{result.version} "
            f"(sha256 {result.sha256[:16]}…, {result.size} bytes)"
        )


def drift_lines(answer: DriftResult) -> list[str]:
    """What ``model drift`` prints: the decision, then each distribution's verdict with
    its evidence (n of N, effect sizes, chi-square, df, p against its Holm threshold)."""
    window = "" if answer.since is None else f" since {answer.since:.0f}"
    detail = answer.decision.detail if answer.decision else "no decision"
    lines = [f"drift    {answer.model} v{answer.version}: {answer.n} predictions{window}; {detail}"]
    rule = answer.rule
    if answer.report is None or rule is None:
        return lines
    limits = (("psi", rule.psi), ("js", rule.js), ("hellinger", rule.hellinger))
    lines.append(
        f"rule     alpha {rule.alpha:g} family-wise (Holm); acting on "
        + " or ".join(f"{k.upper()} >= {v:g}" for k, v in limits if v)
    )
    for f in (*answer.features, answer.prediction, answer.confidence):
        if f is None:
            continue
        needed = "?" if f.n_needed is None else f.n_needed
        effect = ""
        if f.psi is not None and f.js is not None:
            effect = f" PSI {f.psi:.3f} JS {f.js:.3f}"
        test = ""
        if f.statistic is not None and f.p_value is not None and f.threshold is not None:
            test = f" chi2 {f.statistic:.1f} df {f.df} p {f.p_value:.2g} (<= {f.threshold:.2g}?)"
        verdict = f.verdict or "-"
        lines.append(f"{verdict:<12} {f.name:<18} n {f.n} of {needed}{effect}{test}")
    return lines


@model.command("drift")
@click.argument("name")
@click.option("--version", "version", type=click.IntRange(min=1), required=True)
@click.option("--device", default=None, help="One device.")
@click.option("--tag", default=None, help="A tag cohort.")
@click.option("--since", type=float, default=None, help="Unix time; windows ending after it.")
@click.option("--alpha", type=float, default=None, help="Family-wise false-alarm rate.")
@remote_options
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON answer.")
def model_drift(
    name: str,
    version: int,
    device: str | None,
    tag: str | None,
    since: float | None,
    alpha: float | None,
    hub_url: str,
    token_env: str,
    hub_ca: Path | None,
    as_json: bool,
) -> None:
    """Drift verdicts of a model version (fleet, one device or a tag cohort), each with
    its evidence; exit 0 whatever the verdict (the JSON has it for scripts)."""
    with connect(hub_url, token_env, hub_ca) as client:
        answer = client.drift(name, version, device=device, tag=tag, since=since, alpha=alpha)
    if as_json:
        print_json(answer.source)
        return
    for line in drift_lines(answer):
        click.echo(line)


@model.command("demo")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--hidden",
    default="32",
    show_default=True,
    help="Hidden layer sizes, comma separated (empty: softmax regression).",
)
@click.option("--seed", default=7, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def model_demo(out: Path, hidden: str, seed: int, as_json: bool) -> None:
    """Train the demo model with NumPy; write float32 and int8 .tflite files and data."""
    from hub.modelkit.pump import build_demo

    sizes = _parse_hidden(hidden)
    report = build_demo(out, hidden=sizes, seed=seed)
    if as_json:
        doc = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(report).items()}
        doc["size_ratio"] = report.size_ratio
        click.echo(json.dumps(doc, indent=2))
    else:
        for line in report.lines():
            click.echo(line)


def _parse_hidden(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError as exc:
        raise click.BadParameter("comma-separated integers", param_hint="--hidden") from exc
    if any(s < 1 for s in sizes):
        raise click.BadParameter("sizes must be positive", param_hint="--hidden")
    return sizes
