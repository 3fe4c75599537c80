"""``edgefleet demo``: what ``make demo`` runs."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("demo")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-work"),
    show_default=True,
    help="Working directory.",
)
def demo(directory: Path) -> None:
    """Run the demo: keys, a trained model, a signed bundle, verified end to end."""
    from hub.demo import run_demo

    for line in run_demo(directory):
        click.echo(line)
