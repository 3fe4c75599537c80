"""``edgefleet device``: enrol and revoke devices."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edge_agent.cli import EdgeFleetGroup
from hub.cli.common import broker_dir_option, data_option, existing_file

_reload_option = click.option(
    "--reload-pid-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Mosquitto's pid file: send it SIGHUP so it rereads its password file.",
)


@click.group(cls=EdgeFleetGroup)
def device() -> None:
    """Enrol and revoke devices (broker accounts, ACL, agent configs)."""


@device.command("enroll")
@click.argument("device_id")
@data_option
@click.option("--tags", default="", help="Comma-separated tags (e.g. site-a,pumps).")
@click.option("--hub-url", default="http://127.0.0.1:8700", show_default=True)
@click.option(
    "--broker-url",
    default="mqtt://127.0.0.1:1883",
    show_default=True,
    help="What the device connects to (mqtts:// for TLS).",
)
@click.option(
    "--trust",
    "trust_file",
    type=existing_file,
    default=None,
    help="The trust file devices pin (default: DATA/keys/trust.json).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the device's files go (default: DATA/enrolled).",
)
@broker_dir_option
@click.option(
    "--broker-ca",
    type=existing_file,
    default=None,
    help="CA of an mqtts:// broker, copied into the device's files (default: system CAs).",
)
@click.option(
    "--hub-ca",
    type=existing_file,
    default=None,
    help="CA of an https:// hub, for bundle downloads (default: system CAs).",
)
@click.option(
    "--device-data-dir",
    default="/var/lib/edgefleet",
    show_default=True,
    help="The agent's data directory on the device.",
)
@click.option(
    "--local-api-port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="The agent's loopback API port (0: any free port).",
)
@click.option("--rotate", is_flag=True, help="Issue a new password to an enrolled device.")
@_reload_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def device_enroll(
    device_id: str,
    data_dir: Path,
    tags: str,
    hub_url: str,
    broker_url: str,
    trust_file: Path | None,
    out_dir: Path | None,
    broker_dir: Path | None,
    broker_ca: Path | None,
    hub_ca: Path | None,
    device_data_dir: str,
    local_api_port: int,
    rotate: bool,
    reload_pid_file: Path | None,
    as_json: bool,
) -> None:
    """Create DEVICE_ID's broker account and its ready agent config (agent.toml + secrets).

    The broker accepts the account once it reloads: pass --reload-pid-file, or run
    systemctl reload mosquitto.
    """
    from hub.enroll import enroll_device
    from hub.store import Store

    trust = trust_file or data_dir / "keys" / "trust.json"
    if not trust.is_file():
        raise click.ClickException(
            f"no trust file at {trust}: run `edgefleet hub init --data {data_dir}` first "
            "(it creates the hub's keys), or give --trust"
        )
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with Store(data_dir / "hub.db") as store:
        result = enroll_device(
            device_id,
            tags=[t.strip() for t in tags.split(",") if t.strip()],
            store=store,
            broker_dir=broker_dir or data_dir / "broker",
            hub_url=hub_url,
            broker_url=broker_url,
            trust_file=trust,
            out_dir=out_dir or data_dir / "enrolled",
            data_dir=device_data_dir,
            local_api_port=local_api_port,
            broker_ca=broker_ca,
            hub_ca=hub_ca,
            rotate=rotate,
        )
    reloaded = _reload(reload_pid_file)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "device_id": result.device_id,
                    "config": str(result.config),
                    "username": result.username,
                    "broker_reloaded": reloaded,
                }
            )
        )
    else:
        click.echo(
            f"enrolled {result.device_id}: copy {result.bundle_dir} to the device "
            f"(agent.toml, broker-password, trust.json)"
            + ("; broker reloaded" if reloaded else "; reload the broker")
        )


@device.command("revoke")
@click.argument("device_id")
@data_option
@broker_dir_option
@_reload_option
def device_revoke(
    device_id: str, data_dir: Path, broker_dir: Path | None, reload_pid_file: Path | None
) -> None:
    """Remove DEVICE_ID's broker account (refused at its next connection after a reload)."""
    from hub.enroll import revoke_device
    from hub.store import Store

    with Store(data_dir / "hub.db") as store:
        revoke_device(device_id, store=store, broker_dir=broker_dir or data_dir / "broker")
    reloaded = _reload(reload_pid_file)
    done = "; broker reloaded" if reloaded else "; reload the broker"
    click.echo(f"revoked {device_id}{done}")


def _reload(pid_file: Path | None) -> bool:
    """SIGHUP the broker named by ``pid_file``; False without one.

    Raises:
        click.ClickException: it could not be signalled (the change itself is saved).
    """
    if pid_file is None:
        return False
    from hub.enroll import EnrollError, reload_broker

    try:
        reload_broker(pid_file)
    except EnrollError as exc:
        raise click.ClickException(f"saved, but the broker was not reloaded: {exc}") from exc
    return True
