"""The ``edgefleet`` command line.

The agent package owns the root command and the commands a device needs. Other
packages add their commands through the ``edgefleet.commands`` entry point group
(see ``pyproject.toml``), so the agent never imports them and a device without the
hub's dependencies simply does not show the hub's commands.

Exit codes: 0 success, 1 refused or failed (one line on stderr says why), 2 usage.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Mapping
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Final

import click

from edge_agent import __version__
from edge_agent.contract.bundle import Bundle, inspect_bundle, verify_bundle
from edge_agent.contract.trust import TrustRoot
from edge_agent.errors import EdgeFleetError

#: The modules each optional extra of ``pyproject.toml`` brings (found without being
#: imported): a command that needs an extra whose modules are not all there is listed
#: with the line that installs it, and says that line when run. ``hub`` includes
#: ``agent`` and ``modelkit``, as in ``pyproject.toml``.
EXTRA_MODULES: Final[Mapping[str, tuple[str, ...]]] = {
    "agent": ("httpx", "paho", "sqlite_utils", "psutil"),
    "modelkit": ("flatbuffers", "tflite"),
    "hub": (
        "fastapi",
        "uvicorn",
        "orjson",
        "amqtt",
        "sqlite_utils",
        "paho",
        "httpx",
        "flatbuffers",
        "tflite",
    ),
    "console": ("textual", "httpx"),
}


@cache
def missing_module(extra: str) -> str | None:
    """The first module of ``extra`` (see :data:`EXTRA_MODULES`) that is not installed,
    or None when all are. Looks for them without importing any.

    Raises:
        KeyError: ``extra`` is not one of :data:`EXTRA_MODULES`.
    """
    for name in EXTRA_MODULES[extra]:
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except (ImportError, ValueError):  # a broken or blocked installation of it
            return name
    return None


def install_line(what: str, extra: str, missing: str) -> str:
    """The one line a command prints when its extra is not installed."""
    install = f"pip install 'edgefleet[{extra}]'"
    return f"{what} needs the {extra} extra ({missing} is missing): {install}"


def _extra_of(module: str) -> str | None:
    """The smallest extra that brings ``module`` (a top-level name), None for none."""
    for extra in ("agent", "modelkit", "console", "hub"):
        if module in EXTRA_MODULES[extra]:
            return extra
    return None


class EdgeFleetGroup(click.Group):
    """A click group that turns EdgeFleet errors into one-line failures (exit 1), and a
    module of an extra that is not installed into the line that installs it."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; expected failures become ``Error: <one line>``."""
        try:
            return super().invoke(ctx)
        except EdgeFleetError as exc:
            raise click.ClickException(str(exc)) from exc
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            raise click.ClickException(f"{where}{exc.strerror or exc}") from exc
        except ModuleNotFoundError as exc:
            module = (exc.name or "").split(".")[0]
            extra = _extra_of(module)
            if extra is None:
                raise  # not an optional dependency: a bug, shown as one
            what = " ".join(filter(None, (ctx.command_path, ctx.invoked_subcommand)))
            raise click.ClickException(install_line(what, extra, module)) from exc


def needs_extra(command: click.Command, extra: str) -> click.Command:
    """``command`` when ``extra`` is installed; otherwise a stand-in of the same name,
    listed as needing the extra, that fails with :func:`install_line` whatever its
    arguments (``--help`` included) instead of a traceback."""
    missing = missing_module(extra)
    if missing is None:
        return command
    assert command.name is not None  # noqa: S101  (every registered command has one)
    return _unavailable(command.name, extra, missing)


def _unavailable(name: str, extra: str, missing: str) -> click.Command:
    @click.command(
        name,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        add_help_option=False,
        help=f"Needs the {extra} extra: pip install 'edgefleet[{extra}]'.",
    )
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    @click.pass_context
    def unavailable(ctx: click.Context, args: tuple[str, ...]) -> None:
        raise click.ClickException(install_line(ctx.command_path, extra, missing))

    return unavailable


@click.group(cls=EdgeFleetGroup)
@click.version_option(__version__, prog_name="edgefleet")
def cli() -> None:
    """EdgeFleet: signed TFLite model rollouts and federated drift metrics for edge fleets."""


@cli.group(cls=EdgeFleetGroup)
def bundle() -> None:
    """Inspect and verify signed model bundles (.efb)."""


def _file_sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _describe(b: Bundle, trust: TrustRoot | None) -> dict[str, Any]:
    return {
        "file": {
            "path": str(b.path),
            "size": b.path.stat().st_size,
            "sha256": _file_sha256(b.path),
        },
        "manifest": b.manifest.to_json(),
        "signatures": [s.keyid for s in b.signatures],
        "verified": b.verified,
        "signers": sorted(b.signers),
        "threshold": trust.threshold if trust else None,
    }


def _print_summary(info: dict[str, Any]) -> None:
    m = info["manifest"]
    click.echo(f"bundle   {info['file']['path']} ({info['file']['size']} bytes)")
    click.echo(f"sha256   {info['file']['sha256']}")
    click.echo(f"model    {m['name']} v{m['version']}  created {m['created_at']}")
    for kind in ("inputs", "outputs"):
        for t in m["model"][kind]:
            q = t["quantization"]
            qtext = f"  scale={q['scale']:.6g} zero_point={q['zero_point']}" if q else ""
            click.echo(f"{kind[:-1]:<8} {t['name']} {t['dtype']}{t['shape']}{qtext}")
    for name, d in m["members"].items():
        click.echo(f"member   {name:<16} {d['size']:>10} bytes  sha256 {d['sha256'][:16]}…")
    if m["lineage"]:
        click.echo(f"lineage  {json.dumps(m['lineage'], sort_keys=True)}")
    if info["verified"]:
        click.echo(
            f"signed   by {len(info['signers'])} trusted key(s) "
            f"(threshold {info['threshold']}): {', '.join(k[:12] for k in info['signers'])}"
        )
    else:
        keys = ", ".join(k[:12] for k in info["signatures"])
        click.echo(f"signed   by {keys or 'nobody'} (NOT verified: pass --trust)")


@bundle.command("inspect")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--trust",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Also verify the signatures against this trust file.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def bundle_inspect(file: Path, trust: Path | None, as_json: bool) -> None:
    """Show a bundle's manifest, members and signers (structure and digests are checked)."""
    root = TrustRoot.load(trust) if trust else None
    b = verify_bundle(file, root) if root else inspect_bundle(file)
    info = _describe(b, root)
    if as_json:
        click.echo(json.dumps(info, indent=2, sort_keys=True))
    else:
        _print_summary(info)


@bundle.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--trust",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The pinned trust file (root keys and threshold).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def bundle_verify(file: Path, trust: Path, as_json: bool) -> None:
    """Verify a bundle completely; exit 0 if trusted, 1 with the reason otherwise."""
    root = TrustRoot.load(trust)
    b = verify_bundle(file, root)
    if as_json:
        click.echo(json.dumps(_describe(b, root), indent=2, sort_keys=True))
    else:
        m = b.manifest
        click.echo(
            f"verified: {m.name} v{m.version}, {len(b.signers)} of {root.threshold} required "
            f"signature(s), {len(m.members)} members match"
        )


@cli.group(cls=EdgeFleetGroup)
def agent() -> None:
    """Run the edge agent daemon on a device."""


@agent.command("run")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The agent's TOML config (written by `edgefleet device enroll`).",
)
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]),
)
def agent_run(config_path: Path, log_level: str) -> None:
    """Connect, reconcile the signed desired state, serve predictions until SIGTERM/SIGINT."""
    import logging
    import signal
    import threading

    from edge_agent.daemon.agent import Agent, limit_malloc_arenas
    from edge_agent.daemon.config import AgentConfig

    limit_malloc_arenas()
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = AgentConfig.load(config_path)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    daemon = Agent(config).start()
    api = f" on http://127.0.0.1:{daemon.local_api.port}" if daemon.local_api else ""
    click.echo(f"agent {config.device_id} running{api}; Ctrl-C to stop", err=True)
    try:
        stop.wait()
    finally:
        daemon.stop()


def _load_plugins(group: click.Group) -> None:
    for ep in entry_points(group="edgefleet.commands"):
        try:
            register = ep.load()
        except ImportError as exc:  # that part's extra is not installed on this machine
            group.add_command(_missing(ep.name, str(exc)))
            continue
        register(group)


def _missing(name: str, reason: str) -> click.Command:
    @click.command(
        name,
        context_settings={"ignore_unknown_options": True},
        help=f"(not installed: pip install 'edgefleet[{name}]')",
    )
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def unavailable(args: tuple[str, ...]) -> None:
        raise click.ClickException(
            f"the {name!r} commands need: pip install 'edgefleet[{name}]' ({reason})"
        )

    return unavailable


def main() -> None:
    """Entry point of the ``edgefleet`` console script."""
    _load_plugins(cli)
    cli.main(prog_name="edgefleet")


if __name__ == "__main__":  # pragma: no cover
    main()
