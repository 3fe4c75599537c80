"""``edgefleet console``: registered through the ``edgefleet.commands`` entry point, so
the agent's CLI never imports the console."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("console")
@click.option("--hub", "hub_url", default=None, help="The hub's API URL (env EDGEFLEET_HUB).")
@click.option(
    "--hub-ca",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="CA certificate of an https:// hub (env EDGEFLEET_HUB_CA).",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A file holding the API token (mode 600). Else EDGEFLEET_TOKEN, else the "
    "config file's token.",
)
@click.option("--light", is_flag=True, help="Start in the light theme (Ctrl+T toggles).")
def console(hub_url: str | None, hub_ca: Path | None, token_file: Path | None, light: bool) -> None:
    """The operator console: fleet, rollouts and events, live."""
    try:  # textual, the client and httpx load only for this command, never at registration
        from edgefleet_client import AsyncHubClient, HubError
        from tui.app import ConsoleApp
        from tui.settings import SettingsError, environment, resolve
    except ImportError as exc:  # a device install: the console extra is not there
        raise click.ClickException(
            f"the console needs the console extra ({exc.name or exc} is missing): "
            "pip install 'edgefleet[console]'"
        ) from exc

    try:
        settings = resolve(environment(), hub=hub_url, hub_ca=hub_ca, token_file=token_file)
        client = AsyncHubClient(settings.hub_url, settings.token, ca_file=settings.hub_ca)
    except (SettingsError, HubError) as exc:
        raise click.ClickException(str(exc)) from exc
    ConsoleApp(client, settings.hub_url, light=light).run()


def register(root: click.Group) -> None:
    """Add ``console`` to the ``edgefleet`` root command."""
    root.add_command(console)
