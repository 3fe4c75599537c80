"""``edgefleet model``: push a model to a running hub, its drift verdicts, the demo model."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from edge_agent.cli import EdgeFleetGroup
from hub.cli.common import api_result, existing_file, hub_client, hub_options


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
@hub_options[0]
@hub_options[1]
@hub_options[2]
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
    as_json: bool,
) -> None:
    """Register a model with the hub: a .tflite is built into a bundle and signed by the
    hub; an .efb signed elsewhere is verified and registered as it is."""
    with hub_client(hub_url, token_env) as client:
        if model_file.suffix == ".efb":
            result = api_result(client.post("/v1/bundles", content=model_file.read_bytes()))
        else:
            if not name or reference is None:
                raise click.UsageError("a .tflite needs --name and --reference")
            files: dict[str, Any] = {
                "model": (model_file.name, model_file.read_bytes()),
                "reference": (reference.name, reference.read_bytes()),
            }
            if schema_path:
                files["schema"] = (schema_path.name, schema_path.read_bytes())
            data = {"lineage": lineage, **({"version": str(version)} if version else {})}
            result = api_result(client.post(f"/v1/models/{name}/push", files=files, data=data))
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(
            f"registered {result['name']} v{result['version']} "
            f"(sha256 {result['sha256'][:16]}…, {result['size']} bytes)"
        )


def drift_lines(answer: dict[str, Any]) -> list[str]:
    """What ``model drift`` prints: the decision, then each distribution's verdict with
    its evidence (n of N, effect sizes, chi-square, df, p against its Holm threshold)."""
    decision = answer["decision"]
    since = answer.get("since")
    window = "" if since is None else f" since {since:.0f}"
    lines = [
        f"drift    {answer['model']} v{answer['version']}: {answer['n']} predictions"
        f"{window}; {decision['detail']}"
    ]
    report = answer.get("report")
    if report is None:
        return lines
    rule = report["rule"]
    lines.append(
        f"rule     alpha {rule['alpha']:g} family-wise (Holm); acting on "
        + " or ".join(f"{k.upper()} >= {rule[k]:g}" for k in ("psi", "js", "hellinger") if rule[k])
    )
    for f in [*report["features"], report["prediction"], report["confidence"]]:
        needed = "?" if f["n_needed"] is None else f["n_needed"]
        effect = "" if f["psi"] is None else f" PSI {f['psi']:.3f} JS {f['js']:.3f}"
        test = ""
        if f["statistic"] is not None:
            test = (
                f" chi2 {f['statistic']:.1f} df {f['df']} p {f['p_value']:.2g}"
                f" (<= {f['threshold']:.2g}?)"
            )
        lines.append(f"{f['verdict']:<12} {f['name']:<18} n {f['n']} of {needed}{effect}{test}")
    return lines


@model.command("drift")
@click.argument("name")
@click.option("--version", "version", type=click.IntRange(min=1), required=True)
@click.option("--device", default=None, help="One device.")
@click.option("--tag", default=None, help="A tag cohort.")
@click.option("--since", type=float, default=None, help="Unix time; windows ending after it.")
@click.option("--alpha", type=float, default=None, help="Family-wise false-alarm rate.")
@hub_options[0]
@hub_options[1]
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
    as_json: bool,
) -> None:
    """Drift verdicts of a model version (fleet, one device or a tag cohort), each with
    its evidence; exit 0 whatever the verdict (the JSON has it for scripts)."""
    params: dict[str, Any] = {
        k: v
        for k, v in (("device", device), ("tag", tag), ("since", since), ("alpha", alpha))
        if v is not None
    }
    with hub_client(hub_url, token_env) as client:
        answer = api_result(
            client.get(f"/v1/models/{name}/versions/{version}/drift", params=params)
        )
    if as_json:
        click.echo(json.dumps(answer, indent=2))
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
    from hub.modelkit.demo import build_demo

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
