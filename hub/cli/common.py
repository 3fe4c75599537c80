"""What the hub's command groups share: file and secret options, the data
and broker directories, and the options of the commands that talk to a running hub."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from edgefleet_client import HubClient, HubError

F = TypeVar("F", bound=Callable[..., Any])

existing_file = click.Path(exists=True, dir_okay=False, path_type=Path)


def read_passphrase(env_name: str | None) -> bytes | None:
    """Read a key passphrase from the named environment variable (never from argv).

    Raises:
        click.ClickException: the variable is not set.
    """
    if not env_name:
        return None
    value = os.environ.get(env_name)
    if value is None:
        raise click.ClickException(f"environment variable {env_name} is not set")
    return value.encode()


def read_secret_file(path: Path | None) -> bytes | None:
    """A secret from a private file (first line, without its newline).

    Raises:
        click.ClickException: the file is readable by group or others.
    """
    if path is None:
        return None
    if path.stat().st_mode & 0o077:
        raise click.ClickException(f"{path} is readable by others: chmod 600 {path}")
    lines = path.read_bytes().splitlines()
    return lines[0] if lines else b""


passphrase_option = click.option(
    "--passphrase-env",
    metavar="VAR",
    help="Name of an environment variable holding the key passphrase.",
)


_REMOTE_OPTIONS = (
    click.option(
        "--hub",
        "hub_url",
        default="http://127.0.0.1:8700",
        show_default=True,
        envvar="EDGEFLEET_HUB",
        help="The hub's API URL (env EDGEFLEET_HUB).",
    ),
    click.option(
        "--token-env",
        default="EDGEFLEET_TOKEN",
        show_default=True,
        help="Environment variable holding the API token.",
    ),
    click.option(
        "--hub-ca",
        type=existing_file,
        envvar="EDGEFLEET_HUB_CA",
        default=None,
        help="CA certificate of an https:// hub (env EDGEFLEET_HUB_CA; default: system CAs).",
    ),
)


def remote_options(command: F) -> F:
    """Add ``--hub``, ``--token-env`` and ``--hub-ca`` (passed as ``hub_url``,
    ``token_env``, ``hub_ca``) to a command that talks to a running hub."""
    for option in reversed(_REMOTE_OPTIONS):
        command = option(command)
    return command


def hub_error_line(exc: HubError) -> str:
    """What the CLI prints for a failed request: ``hub answered STATUS: <the hub's one
    line>``, or the client's one line saying why no answer came."""
    return f"hub answered {exc.status}: {exc.message}" if exc.status else exc.message


@contextmanager
def connect(hub_url: str, token_env: str, hub_ca: Path | None) -> Iterator[HubClient]:
    """A :class:`~edgefleet_client.HubClient` for ``hub_url`` with the token from the
    environment variable ``token_env``, trusting ``hub_ca`` for an https:// hub; every
    :class:`~edgefleet_client.HubError` inside the block becomes one line (exit 1).

    Raises:
        click.ClickException: no token, an unusable CA file, or a failed request.
    """
    from edgefleet_client import HubClient, HubError  # httpx loads only for these commands

    token = os.environ.get(token_env)
    if not token:
        raise click.ClickException(f"set {token_env} to an API token (edgefleet hub token create)")
    try:
        with HubClient(hub_url, token, ca_file=hub_ca, timeout_s=120.0) as client:
            yield client
    except HubError as exc:
        raise click.ClickException(hub_error_line(exc)) from exc


def print_json(doc: Any) -> None:
    """Print one JSON document, indented (the ``--json`` output of the remote commands)."""
    click.echo(json.dumps(doc, indent=2))


data_option = click.option(
    "--data",
    "data_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("hub-data"),
    show_default=True,
    help="The hub's data directory (database, bundles, keys).",
)

broker_dir_option = click.option(
    "--broker-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Mosquitto's password file and ACL (default: DATA/broker; production: "
    "/etc/mosquitto/edgefleet, see the README).",
)
