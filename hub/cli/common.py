"""What the hub's command groups share: file and secret options, the data
and broker directories, and the options of the commands that talk to a running hub."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

existing_file = click.Path(exists=True, dir_okay=False, path_type=Path)


def read_passphrase(env_name: str | None) -> bytes | None:
    """Read a key passphrase from the named environment variable (never from argv)."""
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


def hub_client(hub_url: str, token_env: str, hub_ca: Path | None = None) -> Any:
    """An httpx client for the hub API with the token from ``token_env``, trusting
    ``hub_ca`` (or ``EDGEFLEET_HUB_CA``) for an https:// hub.

    Raises:
        click.ClickException: no token, or an unusable CA file.
    """
    import ssl

    import httpx

    token = os.environ.get(token_env)
    if not token:
        raise click.ClickException(f"set {token_env} to an API token (edgefleet hub token create)")
    ca = hub_ca or click.get_current_context().meta.get("hub_ca")
    verify: ssl.SSLContext | bool = True
    if ca is not None:
        try:
            verify = ssl.create_default_context(cafile=str(ca))
        except (OSError, ssl.SSLError) as exc:
            raise click.ClickException(f"cannot use hub CA {ca}: {exc}") from exc

    class OneLineTransport(httpx.HTTPTransport):
        """Connection and TLS failures as one line, not a traceback."""

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            try:
                return super().handle_request(request)
            except httpx.TransportError as exc:
                where = request.url.copy_with(query=None)
                raise click.ClickException(f"cannot reach the hub at {where}: {exc}") from exc

    return httpx.Client(
        base_url=hub_url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=120.0,
        transport=OneLineTransport(verify=verify),
    )


def api_result(response: Any) -> dict[str, Any]:
    """The JSON body of a successful response; a one-line ClickException otherwise."""
    if response.status_code >= 400:
        try:
            detail = response.json().get("error", response.text)
        except ValueError:
            detail = response.text
        raise click.ClickException(f"hub answered {response.status_code}: {detail}")
    result: dict[str, Any] = response.json()
    return result


hub_options = [
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
        expose_value=False,
        callback=lambda ctx, _, value: ctx.meta.__setitem__("hub_ca", value),
        help="CA certificate of an https:// hub (env EDGEFLEET_HUB_CA; default: system CAs).",
    ),
]


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
