"""``edgefleet hub token``: API tokens."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edge_agent.cli import EdgeFleetGroup
from hub.cli.common import data_option


@click.group("token", cls=EdgeFleetGroup)
def token() -> None:
    """API tokens for operators and pipelines."""


@token.command("create")
@data_option
@click.option("--name", required=True, help="Who or what uses the token (e.g. ci-pipeline).")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    type=click.Choice(["read", "deploy", "admin"]),
    help="Repeat for several.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def token_create(data_dir: Path, name: str, scopes: tuple[str, ...], as_json: bool) -> None:
    """Create a token; its secret is printed once and stored only as a hash."""
    from hub.tokens import TokenStore

    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    store = TokenStore(data_dir / "hub.db")
    try:
        text, info = store.create(name, scopes)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps({"id": info.id, "token": text, "scopes": sorted(info.scopes)}))
    else:
        click.echo(text)
        click.echo(
            f"(token {info.id} for {info.name}: {', '.join(sorted(info.scopes))}; "
            "shown once, store it now)",
            err=True,
        )
