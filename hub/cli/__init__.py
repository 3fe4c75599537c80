"""The hub's commands, added to ``edgefleet`` through the ``edgefleet.commands`` entry
point: one module per command group, what they share in :mod:`hub.cli.common`.

A device installs only the agent (``pip install 'edgefleet[agent]'``): the commands that
need more (the hub's service and store, the model kit) are listed there as needing their
extra and say in one line how to install it (:data:`NEEDS`); the rest (keys, bundle
build, the remote commands, audit verify, hub tls, hub token) run with the agent's
dependencies.
"""

from __future__ import annotations

from typing import Any, Final

import click

from edge_agent.cli import needs_extra
from hub.cli.audit import audit
from hub.cli.bundle import bundle_build
from hub.cli.demo import demo
from hub.cli.device import device
from hub.cli.hub import hub
from hub.cli.keys import keys
from hub.cli.model import model
from hub.cli.rollout import rollout

#: Command path (below ``edgefleet``) -> the extra it needs beyond the agent's.
NEEDS: Final[dict[tuple[str, ...], str]] = {
    ("demo",): "hub",
    ("hub", "init"): "hub",
    ("hub", "serve"): "hub",
    ("device", "enroll"): "hub",
    ("device", "revoke"): "hub",
    ("model", "demo"): "modelkit",
}


def register(root: click.Group) -> None:
    """Add the hub's commands to the ``edgefleet`` root command."""
    for command in (hub, audit, device, rollout, keys, model, demo):
        root.add_command(command)
    bundle_group: Any = root.commands.get("bundle")
    if isinstance(bundle_group, click.Group):
        bundle_group.add_command(bundle_build)
    for path, extra in NEEDS.items():
        *parents, name = path
        group: click.Command = root
        for parent in parents:
            assert isinstance(group, click.Group)  # noqa: S101  (NEEDS names groups)
            group = group.commands[parent]
        assert isinstance(group, click.Group)  # noqa: S101
        group.add_command(needs_extra(group.commands[name], extra))
