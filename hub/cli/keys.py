"""``edgefleet keys``: create and rotate the hub's signing keys; ``edgefleet hub keys``:
adopt a rotation."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edge_agent.cli import EdgeFleetGroup
from edge_agent.contract.trust import TrustRoot
from hub.cli.common import data_option, existing_file, passphrase_option, read_passphrase


@click.group(cls=EdgeFleetGroup)
def keys() -> None:
    """Create and rotate the hub's Ed25519 signing keys."""


@keys.command("init")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("keys"),
    show_default=True,
    help="Where keys and trust.json go.",
)
@click.option("--count", default=1, show_default=True, help="Number of root keys (n).")
@click.option("--threshold", default=1, show_default=True, help="Signatures required (k).")
@passphrase_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def keys_init(
    directory: Path, count: int, threshold: int, passphrase_env: str | None, as_json: bool
) -> None:
    """Create COUNT signing keys (PKCS#8 PEM, mode 0600) and the trust file devices pin."""
    from hub.keys import init_keys

    root, files = init_keys(directory, count, threshold, read_passphrase(passphrase_env))
    result = {
        "trust": str(directory / "trust.json"),
        "threshold": root.threshold,
        "keys": [{"keyid": f.keyid, "path": str(f.path)} for f in files],
    }
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    for f in files:
        click.echo(f"key      {f.path}  (keyid {f.keyid[:16]}…)")
    click.echo(f"trust    {result['trust']}  ({root.threshold} of {len(files)} signatures)")


@keys.command("rotate")
@click.option(
    "--trust", "trust_path", required=True, type=existing_file, help="The current trust file."
)
@click.option(
    "--key",
    "key_paths",
    multiple=True,
    required=True,
    type=existing_file,
    help="A current private key (repeat up to the current threshold).",
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Where the new keys go.",
)
@click.option("--count", default=1, show_default=True, help="Number of new keys.")
@click.option("--threshold", default=1, show_default=True, help="New threshold.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write the rotation record.",
)
@passphrase_option
def keys_rotate(
    trust_path: Path,
    key_paths: tuple[Path, ...],
    directory: Path,
    count: int,
    threshold: int,
    out: Path,
    passphrase_env: str | None,
) -> None:
    """Create new keys and a rotation record signed by the current and the new keys."""
    from hub.keys import load_private_key, rotate_keys, write_json_file

    passphrase = read_passphrase(passphrase_env)
    current = TrustRoot.load(trust_path)
    current_keys = [load_private_key(p, passphrase) for p in key_paths]
    record, files = rotate_keys(current, current_keys, directory, count, threshold, passphrase)
    write_json_file(out, record.to_json())
    write_json_file(directory / "trust.json", record.new_root.to_json())
    for f in files:
        click.echo(f"key      {f.path}  (keyid {f.keyid[:16]}…)")
    click.echo(f"rotation {out}  (trust version {current.version} -> {record.new_root.version})")
    click.echo(f"trust    {directory / 'trust.json'}")


@click.group("keys", cls=EdgeFleetGroup)
def hub_keys() -> None:
    """The hub's signing keys: adopt a rotation made with `edgefleet keys rotate`."""


@hub_keys.command("adopt-rotation")
@click.argument("rotation", type=existing_file)
@click.option(
    "--keys",
    "new_keys",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The new keys' directory (`keys rotate --dir`).",
)
@data_option
def hub_keys_adopt_rotation(rotation: Path, new_keys: Path, data_dir: Path) -> None:
    """Adopt ROTATION: its record joins the chain the hub publishes to devices, its new
    keys replace the hub's (the old ones move to keys-retired/). Takes effect when
    `hub serve` next starts: it publishes the chain, then signs with the new keys."""
    from edge_agent.contract.trust import RotationRecord
    from hub.audit import AuditLog
    from hub.keys import adopt_rotation

    record = RotationRecord.load(rotation)
    retired = adopt_rotation(data_dir, record, new_keys)
    with AuditLog(data_dir / "hub.db") as log:
        log.append(
            "cli",
            "keys.rotation.adopt",
            f"trust v{record.new_root.version}",
            {"keyids": sorted(record.new_root.keys), "retired": str(retired)},
        )
    click.echo(
        f"trust version {record.previous_version} -> {record.new_root.version} adopted; "
        f"retired keys in {retired}"
    )
    click.echo("restart `edgefleet hub serve` to publish it to devices and sign with the new keys")
