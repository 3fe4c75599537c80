"""``edgefleet audit``: the hash-chained audit log."""

from __future__ import annotations

from pathlib import Path

import click

from edge_agent.cli import EdgeFleetGroup
from hub.cli.common import data_option


@click.group(cls=EdgeFleetGroup)
def audit() -> None:
    """The hub's hash-chained audit log."""


@audit.command("verify")
@data_option
@click.option(
    "--anchor",
    default=None,
    metavar="ID:HASH",
    help="A head recorded earlier (detects a truncated tail).",
)
def audit_verify(data_dir: Path, anchor: str | None) -> None:
    """Check every entry's hash chain; exit 1 naming the first broken entry."""
    from hub.audit import AuditLog

    db = data_dir / "hub.db"
    if not db.exists():
        raise click.ClickException(f"{db} does not exist")
    anchor_pair = None
    if anchor:
        ident, _, digest = anchor.partition(":")
        if not ident.isdigit() or len(digest) != 64:
            raise click.BadParameter("expected ID:HASH (64 hex digits)", param_hint="--anchor")
        anchor_pair = (int(ident), digest)
    with AuditLog(db) as log:
        result = log.verify(anchor=anchor_pair)
        head = log.head()
    if not result.ok:
        raise click.ClickException(f"audit log broken: {result}")
    head_text = f"; head {head[0]}:{head[1]}" if head else ""
    click.echo(f"audit log verified: {result.checked} entries{head_text}")
