"""``edgefleet`` as installed from this checkout: the agent's CLI with every command
group of ``pyproject.toml``'s ``edgefleet.commands`` entry points registered (the
installed package's metadata may predate the ``console`` entry point).

    python -m tests.support.edgefleet_cli console --hub ...
"""

from __future__ import annotations

import tomllib
from importlib import import_module
from pathlib import Path

from edge_agent import cli

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    groups = project["project"]["entry-points"]["edgefleet.commands"]
    for name, target in groups.items():
        module, _, func = target.partition(":")
        try:
            register = getattr(import_module(module), func)
        except ImportError as exc:  # that part's extra is not installed (as _load_plugins)
            cli.cli.add_command(cli._missing(name, str(exc)))
            continue
        register(cli.cli)
    cli.cli.main(prog_name="edgefleet")


if __name__ == "__main__":
    main()
