"""The hub's commands, added to ``edgefleet`` through the ``edgefleet.commands`` entry point."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from edge_agent.canonical import parse_json
from edge_agent.cli import EdgeFleetGroup
from edge_agent.input_schema import InputSchema
from edge_agent.trust import TrustRoot

_existing_file = click.Path(exists=True, dir_okay=False, path_type=Path)


def _passphrase(env_name: str | None) -> bytes | None:
    """Read a key passphrase from the named environment variable (never from argv)."""
    if not env_name:
        return None
    value = os.environ.get(env_name)
    if value is None:
        raise click.ClickException(f"environment variable {env_name} is not set")
    return value.encode()


def _secret_file(path: Path | None) -> bytes | None:
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


_passphrase_option = click.option(
    "--passphrase-env",
    metavar="VAR",
    help="Name of an environment variable holding the key passphrase.",
)


@click.group(cls=EdgeFleetGroup)
def keys() -> None:
    """Create and rotate the hub's Ed25519 signing keys."""


@keys.command("init")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("keys"),
    show_default=True,
    help="Where keys and trust.json go.",
)
@click.option("--count", default=1, show_default=True, help="Number of root keys (n).")
@click.option("--threshold", default=1, show_default=True, help="Signatures required (k).")
@_passphrase_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def keys_init(
    directory: Path, count: int, threshold: int, passphrase_env: str | None, as_json: bool
) -> None:
    """Create COUNT signing keys (PKCS#8 PEM, mode 0600) and the trust file devices pin."""
    from hub.keys import init_keys

    root, files = init_keys(directory, count, threshold, _passphrase(passphrase_env))
    result = {
        "trust": str(directory / "trust.json"),
        "threshold": root.threshold,
        "keys": [{"keyid": f.keyid, "path": str(f.path)} for f in files],
    }
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    for f in files:
        click.echo(f"key      {f.path}  (keyid {f.keyid[:16]}…)")
    click.echo(f"trust    {result['trust']}  ({root.threshold} of {len(files)} signatures)")


@keys.command("rotate")
@click.option(
    "--trust", "trust_path", required=True, type=_existing_file, help="The current trust file."
)
@click.option(
    "--key",
    "key_paths",
    multiple=True,
    required=True,
    type=_existing_file,
    help="A current private key (repeat up to the current threshold).",
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Where the new keys go.",
)
@click.option("--count", default=1, show_default=True, help="Number of new keys.")
@click.option("--threshold", default=1, show_default=True, help="New threshold.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write the rotation record.",
)
@_passphrase_option
def keys_rotate(
    trust_path: Path,
    key_paths: tuple[Path, ...],
    directory: Path,
    count: int,
    threshold: int,
    out: Path,
    passphrase_env: str | None,
) -> None:
    """Create new keys and a rotation record signed by the current and the new keys."""
    from hub.keys import load_private_key, rotate_keys, write_json_file

    passphrase = _passphrase(passphrase_env)
    current = TrustRoot.load(trust_path)
    current_keys = [load_private_key(p, passphrase) for p in key_paths]
    record, files = rotate_keys(current, current_keys, directory, count, threshold, passphrase)
    write_json_file(out, record.to_json())
    write_json_file(directory / "trust.json", record.new_root.to_json())
    for f in files:
        click.echo(f"key      {f.path}  (keyid {f.keyid[:16]}…)")
    click.echo(f"rotation {out}  (trust version {current.version} -> {record.new_root.version})")
    click.echo(f"trust    {directory / 'trust.json'}")


@click.command("build")
@click.argument("model", type=_existing_file)
@click.option("--name", required=True, help="Model name (letters, digits, . _ -).")
@click.option(
    "--version",
    "version",
    required=True,
    type=click.IntRange(min=1),
    help="Integer version, monotonic per model name.",
)
@click.option(
    "--reference",
    required=True,
    type=_existing_file,
    help="Reference data: .npz (array x, optional feature_names) or .csv with header.",
)
@click.option(
    "--key",
    "key_paths",
    multiple=True,
    required=True,
    type=_existing_file,
    help="Signing key (repeat to reach the trust threshold).",
)
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--schema",
    "schema_path",
    type=_existing_file,
    help="Input schema JSON (feature ranges, NaN policy, labels).",
)
@click.option("--lineage", default="{}", help="Free-form JSON object (training run, metrics).")
@click.option(
    "--bins",
    default=10,
    show_default=True,
    type=click.IntRange(2, 64),
    help="Drift bins per feature (from reference quantiles).",
)
@_passphrase_option
def bundle_build(
    model: Path,
    name: str,
    version: int,
    reference: Path,
    key_paths: tuple[Path, ...],
    out: Path,
    schema_path: Path | None,
    lineage: str,
    bins: int,
    passphrase_env: str | None,
) -> None:
    """Build and sign a bundle from MODEL (a .tflite file)."""
    from hub.bundler import build_bundle, load_reference
    from hub.keys import load_private_key

    lineage_doc = parse_json(lineage.encode(), "--lineage")
    if not isinstance(lineage_doc, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--lineage")
    schema = None
    if schema_path:
        schema = InputSchema.from_json(parse_json(schema_path.read_bytes(), str(schema_path)))
    passphrase = _passphrase(passphrase_env)
    signing = [load_private_key(p, passphrase).key for p in key_paths]
    manifest = build_bundle(
        model.read_bytes(),
        name=name,
        version=version,
        reference=load_reference(reference),
        keys=signing,
        out=out,
        schema=schema,
        lineage=lineage_doc,
        n_bins=bins,
    )
    click.echo(f"built    {out}  ({manifest.name} v{manifest.version}, {out.stat().st_size} bytes)")


@click.group(cls=EdgeFleetGroup)
def model() -> None:
    """Produce models: a demo predictive-maintenance model, float32 and int8."""


def _hub_client(hub_url: str, token_env: str, hub_ca: Path | None = None) -> Any:
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


def _api_result(response: Any) -> dict[str, Any]:
    """The JSON body of a successful response; a one-line ClickException otherwise."""
    if response.status_code >= 400:
        try:
            detail = response.json().get("error", response.text)
        except ValueError:
            detail = response.text
        raise click.ClickException(f"hub answered {response.status_code}: {detail}")
    result: dict[str, Any] = response.json()
    return result


_hub_options = [
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
        type=_existing_file,
        envvar="EDGEFLEET_HUB_CA",
        expose_value=False,
        callback=lambda ctx, _, value: ctx.meta.__setitem__("hub_ca", value),
        help="CA certificate of an https:// hub (env EDGEFLEET_HUB_CA; default: system CAs).",
    ),
]


@model.command("push")
@click.argument("model_file", type=_existing_file)
@click.option("--name", help="Model name (for a .tflite; a bundle names itself).")
@click.option("--reference", type=_existing_file, help="Reference data (.npz or .csv).")
@click.option("--schema", "schema_path", type=_existing_file, help="Input schema JSON.")
@click.option("--lineage", default="{}", help="Free-form JSON object (run id, metrics).")
@click.option(
    "--version",
    "version",
    type=click.IntRange(min=1),
    default=None,
    help="Explicit version (default: the next one).",
)
@_hub_options[0]
@_hub_options[1]
@_hub_options[2]
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def model_push(
    model_file: Path,
    name: str | None,
    reference: Path | None,
    schema_path: Path | None,
    lineage: str,
    version: int | None,
    hub_url: str,
    token_env: str,
    as_json: bool,
) -> None:
    """Register a model with the hub: a .tflite is built into a bundle and signed by the
    hub; an .efb signed elsewhere is verified and registered as it is."""
    with _hub_client(hub_url, token_env) as client:
        if model_file.suffix == ".efb":
            result = _api_result(client.post("/v1/bundles", content=model_file.read_bytes()))
        else:
            if not name or reference is None:
                raise click.UsageError("a .tflite needs --name and --reference")
            files: dict[str, Any] = {
                "model": (model_file.name, model_file.read_bytes()),
                "reference": (reference.name, reference.read_bytes()),
            }
            if schema_path:
                files["schema"] = (schema_path.name, schema_path.read_bytes())
            data = {"lineage": lineage, **({"version": str(version)} if version else {})}
            result = _api_result(client.post(f"/v1/models/{name}/push", files=files, data=data))
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(
            f"registered {result['name']} v{result['version']} "
            f"(sha256 {result['sha256'][:16]}…, {result['size']} bytes)"
        )


def drift_lines(answer: dict[str, Any]) -> list[str]:
    """What ``model drift`` prints: the decision, then each distribution's verdict with
    its evidence (n of N, effect sizes, chi-square, df, p against its Holm threshold)."""
    decision = answer["decision"]
    since = answer.get("since")
    window = "" if since is None else f" since {since:.0f}"
    lines = [
        f"drift    {answer['model']} v{answer['version']}: {answer['n']} predictions"
        f"{window}; {decision['detail']}"
    ]
    report = answer.get("report")
    if report is None:
        return lines
    rule = report["rule"]
    lines.append(
        f"rule     alpha {rule['alpha']:g} family-wise (Holm); acting on "
        + " or ".join(f"{k.upper()} >= {rule[k]:g}" for k in ("psi", "js", "hellinger") if rule[k])
    )
    for f in [*report["features"], report["prediction"], report["confidence"]]:
        needed = "?" if f["n_needed"] is None else f["n_needed"]
        effect = "" if f["psi"] is None else f" PSI {f['psi']:.3f} JS {f['js']:.3f}"
        test = ""
        if f["statistic"] is not None:
            test = (
                f" chi2 {f['statistic']:.1f} df {f['df']} p {f['p_value']:.2g}"
                f" (<= {f['threshold']:.2g}?)"
            )
        lines.append(f"{f['verdict']:<12} {f['name']:<18} n {f['n']} of {needed}{effect}{test}")
    return lines


@model.command("drift")
@click.argument("name")
@click.option("--version", "version", type=click.IntRange(min=1), required=True)
@click.option("--device", default=None, help="One device.")
@click.option("--tag", default=None, help="A tag cohort.")
@click.option("--since", type=float, default=None, help="Unix time; windows ending after it.")
@click.option("--alpha", type=float, default=None, help="Family-wise false-alarm rate.")
@_hub_options[0]
@_hub_options[1]
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON answer.")
def model_drift(
    name: str,
    version: int,
    device: str | None,
    tag: str | None,
    since: float | None,
    alpha: float | None,
    hub_url: str,
    token_env: str,
    as_json: bool,
) -> None:
    """Drift verdicts of a model version (fleet, one device or a tag cohort), each with
    its evidence; exit 0 whatever the verdict (the JSON has it for scripts)."""
    params: dict[str, Any] = {
        k: v
        for k, v in (("device", device), ("tag", tag), ("since", since), ("alpha", alpha))
        if v is not None
    }
    with _hub_client(hub_url, token_env) as client:
        answer = _api_result(
            client.get(f"/v1/models/{name}/versions/{version}/drift", params=params)
        )
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    for line in drift_lines(answer):
        click.echo(line)


@model.command("demo")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--hidden",
    default="32",
    show_default=True,
    help="Hidden layer sizes, comma separated (empty: softmax regression).",
)
@click.option("--seed", default=7, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def model_demo(out: Path, hidden: str, seed: int, as_json: bool) -> None:
    """Train the demo model with NumPy; write float32 and int8 .tflite files and data."""
    from hub.modelkit.demo import build_demo

    sizes = _parse_hidden(hidden)
    report = build_demo(out, hidden=sizes, seed=seed)
    if as_json:
        doc = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(report).items()}
        doc["size_ratio"] = report.size_ratio
        click.echo(json.dumps(doc, indent=2))
    else:
        for line in report.lines():
            click.echo(line)


def _parse_hidden(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError as exc:
        raise click.BadParameter("comma-separated integers", param_hint="--hidden") from exc
    if any(s < 1 for s in sizes):
        raise click.BadParameter("sizes must be positive", param_hint="--hidden")
    return sizes


@click.group(cls=EdgeFleetGroup)
def hub() -> None:
    """Run and administer the hub."""


_data_option = click.option(
    "--data",
    "data_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("hub-data"),
    show_default=True,
    help="The hub's data directory (database, bundles, keys).",
)

_broker_dir_option = click.option(
    "--broker-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Mosquitto's password file and ACL (default: DATA/broker; production: "
    "/etc/mosquitto/edgefleet, see the README).",
)


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
@_data_option
@_broker_dir_option
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
@_data_option
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
    type=_existing_file,
    default=None,
    help="File holding the hub's broker password (must not be group/world-readable).",
)
@click.option(
    "--broker-ca",
    type=_existing_file,
    default=None,
    help="CA certificate that signed an mqtts:// broker's certificate (default: system CAs).",
)
@click.option(
    "--tls-cert",
    type=_existing_file,
    default=None,
    help="Serve the API over HTTPS with this certificate (PEM; needs --tls-key).",
)
@click.option(
    "--tls-key",
    type=_existing_file,
    default=None,
    help="The private key of --tls-cert (PEM).",
)
@click.option(
    "--alerts",
    "alert_rules",
    type=_existing_file,
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
    password = _passphrase(broker_password_env) or _secret_file(broker_password_file)
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
@_data_option
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
    type=_existing_file,
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
@_broker_dir_option
@click.option(
    "--broker-ca",
    type=_existing_file,
    default=None,
    help="CA of an mqtts:// broker, copied into the device's files (default: system CAs).",
)
@click.option(
    "--hub-ca",
    type=_existing_file,
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
@_data_option
@_broker_dir_option
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


@click.group(cls=EdgeFleetGroup)
def rollout() -> None:
    """Staged rollouts through the hub's API (for operators and CI pipelines)."""


def _print_rollout(r: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(r, indent=2))
        return
    spec = r["spec"]
    click.echo(
        f"rollout  {spec['id']}: {spec['model']} v{spec['target_version']} "
        f"state={r['state']} stage={r['stage'] + 1}/{len(spec['stages'])} "
        f"touched={len(r['touched'])}"
    )
    for g in r.get("gates", []):
        value = "-" if g["value"] is None else f"{g['value']:.4g}"
        detail = f"  {g['detail']}" if g.get("detail") else ""
        click.echo(
            f"gate     {g['name']:<16} {value:>8} (limit {g['limit']}) {g['verdict']}{detail}"
        )


_FINAL = {"completed", "aborted", "rolled_back"}


def waiting_for(r: dict[str, Any]) -> str:
    """One line saying what a running rollout waits for: its stage and every gate that
    has not passed, with its evidence (e.g. ``drift: waiting for evidence: 40 of 133``)."""
    spec = r["spec"]
    stages = spec["stages"]
    index = min(r["stage"], len(stages) - 1)
    stage = stages[index]
    size = (
        f"{stage['share'] * 100:g} %"
        if stage.get("share") is not None
        else (f"{stage.get('count')} devices")
    )
    parts = [f"stage {index + 1}/{len(stages)} ({size}) {r['state']}"]
    for g in r.get("gates", []):
        if g["verdict"] == "pass":
            continue
        what = g.get("detail") or (
            f"{g['value'] if g['value'] is not None else '-'} of {g['limit']}"
        )
        parts.append(f"{g['name']}: {g['verdict']} ({what})")
    if len(parts) == 1 and r["state"] == "running":
        parts.append("devices activating and on probation")
    return "; ".join(parts)


def _wait_rollout(client: Any, rollout_id: str, timeout: float) -> dict[str, Any]:
    """Poll until the rollout leaves `running` for good or needs a human (timeout: exit 1),
    saying on stderr what it waits for whenever that changes."""
    import time

    deadline = time.monotonic() + timeout
    said = ""
    while True:
        r = _api_result(client.get(f"/v1/rollouts/{rollout_id}"))
        if r["state"] in _FINAL | {"paused", "waiting_approval"}:
            return r
        line = waiting_for(r)
        if line != said:
            click.echo(f"waiting  {rollout_id}: {line}", err=True)
            said = line
        if time.monotonic() > deadline:
            raise click.ClickException(
                f"rollout {rollout_id} still {r['state']} after {timeout:g} s: {line}"
            )
        time.sleep(1.0)  # a remote API: nothing to subscribe to from the CLI yet


@rollout.command("start")
@click.option(
    "--spec",
    "spec_path",
    type=_existing_file,
    default=None,
    help="A rollout spec (JSON); or build one with the options below.",
)
@click.option("--id", "rollout_id", default=None, help="Rollout id (letters, digits, . _ -).")
@click.option("--model", "model_name", default=None)
@click.option("--version", "version", type=click.IntRange(min=1), default=None)
@click.option(
    "--previous", type=click.IntRange(min=1), default=None, help="Version to roll back to."
)
@click.option("--tag", "tags", multiple=True, help="Only devices with this tag (repeat).")
@click.option("--stages", default="10,50,100", show_default=True, help="Cumulative percentages.")
@click.option("--bake", default=300.0, show_default=True, help="Seconds per stage.")
@click.option("--on-failure", type=click.Choice(["pause", "rollback"]), default="pause")
@click.option("--manual", is_flag=True, help="Wait for `rollout promote` between stages.")
@click.option(
    "--max-psi",
    type=float,
    default=0.25,
    show_default=True,
    help="Drift gate on the cohort: fails on significant drift (1% family-wise) with PSI "
    "at or above this, decided once after the bake with enough predictions.",
)
@click.option("--no-drift-gate", is_flag=True, help="Do not gate on drift.")
@click.option(
    "--evidence-wait",
    type=float,
    default=300.0,
    show_default=True,
    help="Seconds past the bake a drift gate waits for the predictions it needs.",
)
@click.option(
    "--on-insufficient",
    type=click.Choice(["pause", "rollback", "proceed"]),
    default="proceed",
    show_default=True,
    help="What to do when a drift gate still lacks evidence after --evidence-wait "
    "(proceed: a quiet fleet completes; the gate's status says it had too little).",
)
@click.option(
    "--probation",
    "probation_s",
    type=float,
    default=120.0,
    show_default=True,
    help="Seconds each device watches the new model before keeping it.",
)
@click.option(
    "--wait",
    "wait_s",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Block until done or stuck; exit 1 unless it completed.",
)
@_hub_options[0]
@_hub_options[1]
@_hub_options[2]
@click.option("--json", "as_json", is_flag=True)
def rollout_start(
    spec_path: Path | None,
    rollout_id: str | None,
    model_name: str | None,
    version: int | None,
    previous: int | None,
    tags: tuple[str, ...],
    stages: str,
    bake: float,
    on_failure: str,
    manual: bool,
    max_psi: float,
    no_drift_gate: bool,
    evidence_wait: float,
    on_insufficient: str,
    probation_s: float,
    wait_s: float | None,
    hub_url: str,
    token_env: str,
    as_json: bool,
) -> None:
    """Start a staged rollout of a registered model version."""
    if spec_path is not None:
        spec = parse_json(spec_path.read_bytes(), str(spec_path))
    else:
        if not (rollout_id and model_name and version):
            raise click.UsageError("give --spec, or --id, --model and --version")
        try:
            shares = [float(x) / 100 for x in stages.split(",") if x.strip()]
        except ValueError as exc:
            raise click.BadParameter("comma-separated percentages", param_hint="--stages") from exc
        from edge_agent.directive import Probation
        from hub.rollout import Gates, RolloutSpec, Selector, Stage

        gates = Gates(
            max_psi=None if no_drift_gate else max_psi,
            max_latency_ratio=None if previous is None else 1.5,
            max_evidence_wait_s=evidence_wait,
        )
        spec = RolloutSpec(
            id=rollout_id,
            model=model_name,
            target_version=version,
            previous_version=previous,
            selector=Selector(tags=tags),
            on_failure=on_failure,  # type: ignore[arg-type]
            on_insufficient=on_insufficient,  # type: ignore[arg-type]
            promotion="manual" if manual else "auto",
            stages=tuple(Stage(share=s, bake_s=bake, gates=gates) for s in shares),
            probation=Probation(window_s=probation_s),
        ).to_json()
    with _hub_client(hub_url, token_env) as client:
        r = _api_result(client.post("/v1/rollouts", json=spec))
        if wait_s is not None:
            r = _wait_rollout(client, r["spec"]["id"], wait_s)
    _print_rollout(r, as_json)
    if wait_s is not None and r["state"] != "completed":
        raise click.ClickException(f"rollout {r['spec']['id']} ended {r['state']}")


@rollout.command("status")
@click.argument("rollout_id")
@click.option("--wait", "wait_s", type=float, default=None, metavar="SECONDS")
@_hub_options[0]
@_hub_options[1]
@_hub_options[2]
@click.option("--json", "as_json", is_flag=True)
def rollout_status(
    rollout_id: str, wait_s: float | None, hub_url: str, token_env: str, as_json: bool
) -> None:
    """A rollout's state, stage and gate values (``--wait``: until done or stuck)."""
    with _hub_client(hub_url, token_env) as client:
        if wait_s is None:
            r = _api_result(client.get(f"/v1/rollouts/{rollout_id}"))
        else:
            r = _wait_rollout(client, rollout_id, wait_s)
    _print_rollout(r, as_json)
    if wait_s is not None and r["state"] != "completed":
        raise click.ClickException(f"rollout {rollout_id} ended {r['state']}")


@rollout.command("list")
@click.option("--active", is_flag=True)
@_hub_options[0]
@_hub_options[1]
@_hub_options[2]
@click.option("--json", "as_json", is_flag=True)
def rollout_list(active: bool, hub_url: str, token_env: str, as_json: bool) -> None:
    """Every rollout (``--active``: running, waiting or paused)."""
    with _hub_client(hub_url, token_env) as client:
        result = _api_result(client.get("/v1/rollouts", params={"active": active}))
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        for r in result["rollouts"]:
            _print_rollout(r, False)


def _rollout_command(name: str) -> click.Command:
    @click.command(name, help=f"{name.capitalize()} a rollout.")
    @click.argument("rollout_id")
    @_hub_options[0]
    @_hub_options[1]
    @_hub_options[2]
    @click.option("--json", "as_json", is_flag=True)
    def command(rollout_id: str, hub_url: str, token_env: str, as_json: bool) -> None:
        with _hub_client(hub_url, token_env) as client:
            r = _api_result(client.post(f"/v1/rollouts/{rollout_id}/{name}"))
        _print_rollout(r, as_json)

    return command


for _name in ("promote", "pause", "resume", "abort", "rollback"):
    rollout.add_command(_rollout_command(_name))


@click.group(cls=EdgeFleetGroup)
def audit() -> None:
    """The hub's hash-chained audit log."""


@audit.command("verify")
@_data_option
@click.option(
    "--anchor",
    default=None,
    metavar="ID:HASH",
    help="A head recorded earlier (detects a truncated tail).",
)
def audit_verify(data_dir: Path, anchor: str | None) -> None:
    """Check every entry's hash chain; exit 1 naming the first broken entry."""
    from hub.audit import AuditLog

    db = data_dir / "hub.db"
    if not db.exists():
        raise click.ClickException(f"{db} does not exist")
    anchor_pair = None
    if anchor:
        ident, _, digest = anchor.partition(":")
        if not ident.isdigit() or len(digest) != 64:
            raise click.BadParameter("expected ID:HASH (64 hex digits)", param_hint="--anchor")
        anchor_pair = (int(ident), digest)
    with AuditLog(db) as log:
        result = log.verify(anchor=anchor_pair)
        head = log.head()
    if not result.ok:
        raise click.ClickException(f"audit log broken: {result}")
    head_text = f"; head {head[0]}:{head[1]}" if head else ""
    click.echo(f"audit log verified: {result.checked} entries{head_text}")


@hub.group("token", cls=EdgeFleetGroup)
def token() -> None:
    """API tokens for operators and pipelines."""


@token.command("create")
@_data_option
@click.option("--name", required=True, help="Who or what uses the token (e.g. ci-pipeline).")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    type=click.Choice(["read", "deploy", "admin"]),
    help="Repeat for several.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def token_create(data_dir: Path, name: str, scopes: tuple[str, ...], as_json: bool) -> None:
    """Create a token; its secret is printed once and stored only as a hash."""
    from hub.tokens import TokenStore

    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    store = TokenStore(data_dir / "hub.db")
    try:
        text, info = store.create(name, scopes)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps({"id": info.id, "token": text, "scopes": sorted(info.scopes)}))
    else:
        click.echo(text)
        click.echo(
            f"(token {info.id} for {info.name}: {', '.join(sorted(info.scopes))}; "
            "shown once, store it now)",
            err=True,
        )


@hub.group("keys", cls=EdgeFleetGroup)
def hub_keys() -> None:
    """The hub's signing keys: adopt a rotation made with `edgefleet keys rotate`."""


@hub_keys.command("adopt-rotation")
@click.argument("rotation", type=_existing_file)
@click.option(
    "--keys",
    "new_keys",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The new keys' directory (`keys rotate --dir`).",
)
@_data_option
def hub_keys_adopt_rotation(rotation: Path, new_keys: Path, data_dir: Path) -> None:
    """Adopt ROTATION: its record joins the chain the hub publishes to devices, its new
    keys replace the hub's (the old ones move to keys-retired/). Takes effect when
    `hub serve` next starts: it publishes the chain, then signs with the new keys."""
    from edge_agent.trust import RotationRecord
    from hub.audit import AuditLog
    from hub.keys import adopt_rotation

    record = RotationRecord.load(rotation)
    retired = adopt_rotation(data_dir, record, new_keys)
    with AuditLog(data_dir / "hub.db") as log:
        log.append(
            "cli",
            "keys.rotation.adopt",
            f"trust v{record.new_root.version}",
            {"keyids": sorted(record.new_root.keys), "retired": str(retired)},
        )
    click.echo(
        f"trust version {record.previous_version} -> {record.new_root.version} adopted; "
        f"retired keys in {retired}"
    )
    click.echo("restart `edgefleet hub serve` to publish it to devices and sign with the new keys")


def register(root: click.Group) -> None:
    """Add the hub's commands to the ``edgefleet`` root command."""
    root.add_command(hub)
    root.add_command(audit)
    root.add_command(device)
    root.add_command(rollout)
    root.add_command(keys)
    root.add_command(model)
    from hub.demo.cli import demo  # the demo's command and logic live in hub/demo/

    root.add_command(demo)
    bundle_group: Any = root.commands.get("bundle")
    if isinstance(bundle_group, click.Group):
        bundle_group.add_command(bundle_build)
