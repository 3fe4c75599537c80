"""``edgefleet bundle build`` (added to the agent's ``bundle`` group)."""

from __future__ import annotations

from pathlib import Path

import click

from edge_agent.contract.canonical import parse_json
from edge_agent.contract.input_schema import InputSchema
from hub.cli.common import existing_file, passphrase_option, read_passphrase


@click.command("build")
@click.argument("model", type=existing_file)
@click.option("--name", required=True, help="Model name (letters, digits, . _ -).")
@click.option(
    "--version",
    "version",
    required=True,
    type=click.IntRange(min=1),
    help="Integer version, monotonic per model name.",
)
@click.option(
    "--reference",
    required=True,
    type=existing_file,
    help="Reference data: .npz (array x, optional feature_names) or .csv with header.",
)
@click.option(
    "--key",
    "key_paths",
    multiple=True,
    required=True,
    type=existing_file,
    help="Signing key (repeat to reach the trust threshold).",
)
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--schema",
    "schema_path",
    type=existing_file,
    help="Input schema JSON (feature ranges, NaN policy, labels).",
)
@click.option("--lineage", default="{}", help="Free-form JSON object (training run, metrics).")
@click.option(
    "--bins",
    default=10,
    show_default=True,
    type=click.IntRange(2, 64),
    help="Drift bins per feature (from reference quantiles).",
)
@passphrase_option
def bundle_build(
    model: Path,
    name: str,
    version: int,
    reference: Path,
    key_paths: tuple[Path, ...],
    out: Path,
    schema_path: Path | None,
    lineage: str,
    bins: int,
    passphrase_env: str | None,
) -> None:
    """Build and sign a bundle from MODEL (a .tflite file)."""
    from hub.bundler import build_bundle, load_reference
    from hub.keys import load_private_key

    lineage_doc = parse_json(lineage.encode(), "--lineage")
    if not isinstance(lineage_doc, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--lineage")
    schema = None
    if schema_path:
        schema = InputSchema.from_json(parse_json(schema_path.read_bytes(), str(schema_path)))
    passphrase = read_passphrase(passphrase_env)
    signing = [load_private_key(p, passphrase).key for p in key_paths]
    manifest = build_bundle(
        model.read_bytes(),
        name=name,
        version=version,
        reference=load_reference(reference),
        keys=signing,
        out=out,
        schema=schema,
        lineage=lineage_doc,
        n_bins=bins,
    )
    click.echo(f"built    {out}  ({manifest.name} v{manifest.version}, {out.stat().st_size} bytes)")
