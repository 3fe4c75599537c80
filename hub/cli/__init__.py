"""The hub's commands, added to ``edgefleet`` through the ``edgefleet.commands`` entry
point: one module per command group, what they share in :mod:`hub.cli.common`."""

from __future__ import annotations

from typing import Any

import click

from hub.cli.audit import audit
from hub.cli.bundle import bundle_build
from hub.cli.demo import demo
from hub.cli.device import device
from hub.cli.hub import hub
from hub.cli.keys import keys
from hub.cli.model import model
from hub.cli.rollout import rollout


def register(root: click.Group) -> None:
    """Add the hub's commands to the ``edgefleet`` root command."""
    root.add_command(hub)
    root.add_command(audit)
    root.add_command(device)
    root.add_command(rollout)
    root.add_command(keys)
    root.add_command(model)
    root.add_command(demo)
    bundle_group: Any = root.commands.get("bundle")
    if isinstance(bundle_group, click.Group):
        bundle_group.add_command(bundle_build)
