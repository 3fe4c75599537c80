"""``edgefleet hub``: prepare, run and administer the hub (with ``hub token`` and
``hub keys``)."""

from __future__ import annotations

from pathlib import Path

import click

from edge_agent.cli import EdgeFleetGroup
from hub.cli.common import (
    broker_dir_option,
    data_option,
    existing_file,
    read_passphrase,
    read_secret_file,
)
from hub.cli.keys import hub_keys
from hub.cli.token import token


@click.group(cls=EdgeFleetGroup)
def hub() -> None:
    """Run and administer the hub."""


def _public_url(public_url: str | None, api_host: str, *, tls: bool) -> str | None:
    """The checked ``--public-url`` (no trailing slash), or None to use where the API
    listens.

    Raises:
        click.UsageError: a wildcard ``api_host`` without a public URL (devices would
            be sent to ``http://0.0.0.0``), or a URL that is not http(s)://host[:port].
    """
    from urllib.parse import urlsplit

    if public_url is None:
        if api_host in ("0.0.0.0", "::", ""):  # noqa: S104  (detecting it, not binding)
            scheme = "https" if tls else "http"
            raise click.UsageError(
                f"--api-host {api_host} needs --public-url (the address devices reach, "
                f"e.g. {scheme}://hub.example.com:8700)"
            )
        return None
    parts = urlsplit(public_url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise click.UsageError(
            f"--public-url must be http(s)://host[:port][/path], got {public_url!r}"
        )
    if parts.hostname in ("0.0.0.0", "::"):  # noqa: S104
        raise click.UsageError(
            "--public-url must name an address devices can reach, not a wildcard"
        )
    return public_url.rstrip("/")


@hub.command("init")
@data_option
@broker_dir_option
def hub_init(data_dir: Path, broker_dir: Path | None) -> None:
    """Prepare a hub before its first start: signing keys, store, and the broker's files
    (ACL, the hub's own account and its password file), so Mosquitto can start and
    devices can be enrolled before `hub serve` runs. Keeps whatever already exists."""
    from hub.enroll import ensure_acl, ensure_hub_account
    from hub.keys import init_keys
    from hub.store import Store

    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_dir = data_dir / "keys"
    if (key_dir / "trust.json").exists():
        click.echo(f"keys     kept {key_dir}")
    else:
        init_keys(key_dir)
        click.echo(f"keys     created in {key_dir} (devices pin {key_dir / 'trust.json'})")
    with Store(data_dir / "hub.db"):
        pass
    broker = broker_dir or data_dir / "broker"
    ensure_acl(broker)
    ensure_hub_account(broker)
    click.echo(f"broker   {broker / 'passwd'} and {broker / 'acl'} (point Mosquitto at them)")
    click.echo(
        f"next     edgefleet hub serve --data {data_dir} --broker-url mqtt(s)://HOST:PORT "
        f"--broker-username edgefleet-hub --broker-password-file {broker / 'hub-password'}"
    )


@hub.command("tls")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for ca.crt/ca.key and server.crt/server.key (an existing CA is reused).",
)
@click.option(
    "--host",
    "hosts",
    multiple=True,
    required=True,
    help="A DNS name or IP address devices use for the broker and the hub (repeat).",
)
def hub_tls(out: Path, hosts: tuple[str, ...]) -> None:
    """Create the fleet's private CA (once) and a server certificate for the broker and
    the hub API."""
    from hub.tls import TlsError, make_tls

    try:
        files = make_tls(out, hosts)
    except TlsError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"CA {files.ca} (pin on devices: device enroll --broker-ca/--hub-ca; keep "
        f"{files.ca_key} offline); server certificate {files.cert} and key {files.key} "
        f"for {', '.join(hosts)}"
    )


@hub.command("serve")
@data_option
@click.option("--api-host", default="127.0.0.1", show_default=True)
@click.option("--api-port", default=8700, show_default=True)
@click.option(
    "--public-url",
    default=None,
    help="The API's URL as devices reach it (bundle links); needed with a wildcard --api-host.",
)
@click.option(
    "--broker-url",
    default=None,
    help="An external broker (mqtt://host:port); default: run the embedded one.",
)
@click.option(
    "--broker-port",
    default=1883,
    show_default=True,
    help="Port of the embedded broker (loopback only).",
)
@click.option("--broker-username", default=None, help="The hub's broker account.")
@click.option(
    "--broker-password-env",
    default=None,
    metavar="VAR",
    help="Environment variable holding the hub's broker password.",
)
@click.option(
    "--broker-password-file",
    type=existing_file,
    default=None,
    help="File holding the hub's broker password (must not be group/world-readable).",
)
@click.option(
    "--broker-ca",
    type=existing_file,
    default=None,
    help="CA certificate that signed an mqtts:// broker's certificate (default: system CAs).",
)
@click.option(
    "--tls-cert",
    type=existing_file,
    default=None,
    help="Serve the API over HTTPS with this certificate (PEM; needs --tls-key).",
)
@click.option(
    "--tls-key",
    type=existing_file,
    default=None,
    help="The private key of --tls-cert (PEM).",
)
@click.option(
    "--alerts",
    "alert_rules",
    type=existing_file,
    default=None,
    help="Alert rules (JSON, see hub.alerts); default: no alerting.",
)
@click.option("--webhook-url", default=None, help="Called on every alert transition.")
@click.option(
    "--alert-interval",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    help="Seconds between evaluations of the alert rules.",
)
def hub_serve(
    data_dir: Path,
    api_host: str,
    api_port: int,
    public_url: str | None,
    broker_url: str | None,
    broker_port: int,
    broker_username: str | None,
    broker_password_env: str | None,
    broker_password_file: Path | None,
    broker_ca: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    alert_rules: Path | None,
    webhook_url: str | None,
    alert_interval: float,
) -> None:
    """Run the hub until SIGTERM/SIGINT: broker, ingest, store, HTTP API and alerts."""
    import logging
    import signal
    import threading

    from hub.service import HubService, HubSettings

    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request's full URL at INFO (a webhook URL may hold its secret).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if broker_password_env and broker_password_file:
        raise click.UsageError("give --broker-password-env or --broker-password-file, not both")
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    public_url = _public_url(public_url, api_host, tls=tls_cert is not None)
    password = read_passphrase(broker_password_env) or read_secret_file(broker_password_file)
    settings = HubSettings(
        data_dir=data_dir,
        api_host=api_host,
        api_port=api_port,
        public_url=public_url,
        broker_url=broker_url,
        embedded_broker_port=broker_port,
        broker_username=broker_username,
        broker_password=password.decode() if password else None,
        alert_rules=alert_rules,
        webhook_url=webhook_url,
        alert_interval_s=alert_interval,
        broker_ca_file=broker_ca,
        tls_cert_file=tls_cert,
        tls_key_file=tls_key,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with HubService(settings) as service:
        api_url = service.api.url if service.api else "?"
        click.echo(f"hub running: API {api_url}, MQTT {service.broker_url}", err=True)
        if service.tokens is not None and not service.tokens.list():
            click.echo(
                f"no API tokens yet: edgefleet hub token create --data {data_dir} "
                "--name admin --scope admin",
                err=True,
            )
        stop.wait()


hub.add_command(token)
hub.add_command(hub_keys)
