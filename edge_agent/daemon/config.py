"""Agent configuration: one TOML file, written by ``edgefleet device enroll``.

Example (``agent.toml``)::

    device_id = "pump-017"
    data_dir = "/var/lib/edgefleet"
    trust_file = "/etc/edgefleet/trust.json"
    tags = ["site-a", "pumps"]

    [broker]
    url = "mqtts://broker.example.com:8883"   # mqtt:// or mqtts:// (TLS)
    username = "pump-017"
    password_file = "/etc/edgefleet/broker-password"   # or password = "..."
    ca_file = "/etc/edgefleet/ca.pem"                  # TLS trust, optional

    [monitoring]
    window_s = 60
    checkpoint_s = 5   # open windows saved this often: a kill -9 loses at most this
    outbox_budget_bytes = 8388608

    [download]
    ca_file = "/etc/edgefleet/hub-ca.pem"   # trust for an https:// hub, optional
    attempts = 5       # requests per try; a failed try is repeated after retry_s, doubling
    retry_s = 5

    [local_api]
    port = 8765        # loopback HTTP for local apps; 0 disables

Credentials are kept out of ``repr`` and logs.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edge_agent.contract.fields import safe_name
from edge_agent.errors import ValidationError


@dataclass(frozen=True)
class BrokerConfig:
    """Where and how to reach the MQTT broker."""

    host: str = "127.0.0.1"
    port: int = 1883
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    keepalive: int = 30

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> BrokerConfig:
        """Parse ``mqtt://host:port`` or ``mqtts://host:port``.

        Raises:
            ValidationError: another scheme, or no host.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValidationError(
                f"broker url must be mqtt://host[:port] or mqtts://..., got {url!r}"
            )
        tls = parts.scheme == "mqtts"
        return cls(
            host=parts.hostname, port=parts.port or (8883 if tls else 1883), tls=tls, **kwargs
        )


@dataclass(frozen=True)
class AgentConfig:
    """Everything the agent daemon needs to run."""

    device_id: str
    data_dir: Path
    trust_file: Path
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    tags: tuple[str, ...] = ()
    window_s: float = 60.0
    outbox_budget_bytes: int = 8 << 20
    local_api_port: int = 8765
    state_interval_s: float = 30.0
    download_attempts: int = 5
    #: CA certificate for bundle downloads from an https:// hub (None: the system's CAs).
    download_ca_file: Path | None = None
    #: First wait before a directive whose download failed is tried again (doubling).
    download_retry_s: float = 5.0
    #: Save the open windows this often (0: never), so a kill -9 loses at most that long.
    checkpoint_s: float = 5.0
    #: Send unacknowledged windows again when the hub acked nothing for this long.
    resend_after_s: float = 30.0

    @classmethod
    def load(cls, path: Path) -> AgentConfig:
        """Read a TOML config file; relative paths are relative to the file.

        Raises:
            ValidationError: missing keys, wrong types, or unreadable password file.
            OSError: the file cannot be read.
        """
        try:
            doc = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ValidationError(f"{path}: not valid TOML ({exc})") from exc
        base = path.parent
        return cls.from_dict(doc, base)

    @classmethod
    def from_dict(cls, doc: dict[str, Any], base: Path = Path()) -> AgentConfig:
        """Build from a parsed TOML document.

        Raises:
            ValidationError: missing keys or wrong types.
        """

        def need(table: dict[str, Any], key: str, kind: type, where: str) -> Any:
            if key not in table:
                raise ValidationError(f"config: missing {where}{key}")
            if not isinstance(table[key], kind) or isinstance(table[key], bool) is not (
                kind is bool
            ):
                raise ValidationError(
                    f"config: {where}{key} must be {getattr(kind, '__name__', kind)}"
                )
            return table[key]

        def opt(table: dict[str, Any], key: str, kind: type, default: Any, where: str) -> Any:
            return need(table, key, kind, where) if key in table else default

        broker_t = opt(doc, "broker", dict, {}, "")
        password = opt(broker_t, "password", str, None, "broker.")
        password_file = opt(broker_t, "password_file", str, None, "broker.")
        if password_file is not None:
            try:
                password = (base / password_file).read_text().strip()
            except OSError as exc:
                raise ValidationError(
                    f"config: cannot read broker.password_file ({exc.strerror})"
                ) from exc
        ca_file = opt(broker_t, "ca_file", str, None, "broker.")
        broker = BrokerConfig.from_url(
            opt(broker_t, "url", str, "mqtt://127.0.0.1:1883", "broker."),
            username=opt(broker_t, "username", str, None, "broker."),
            password=password,
            ca_file=base / ca_file if ca_file else None,
            keepalive=opt(broker_t, "keepalive", int, 30, "broker."),
        )
        download_t = opt(doc, "download", dict, {}, "")
        download_ca = opt(download_t, "ca_file", str, None, "download.")
        mon = opt(doc, "monitoring", dict, {}, "")
        api = opt(doc, "local_api", dict, {}, "")
        return cls(
            device_id=safe_name(need(doc, "device_id", str, ""), "config: device_id"),
            data_dir=base / need(doc, "data_dir", str, ""),
            trust_file=base / need(doc, "trust_file", str, ""),
            broker=broker,
            tags=tuple(opt(doc, "tags", list, [], "")),
            window_s=float(opt(mon, "window_s", int | float, 60, "monitoring.")),  # type: ignore[arg-type]
            outbox_budget_bytes=opt(mon, "outbox_budget_bytes", int, 8 << 20, "monitoring."),
            local_api_port=opt(api, "port", int, 8765, "local_api."),
            state_interval_s=float(opt(mon, "state_interval_s", int | float, 30, "monitoring.")),  # type: ignore[arg-type]
            resend_after_s=float(opt(mon, "resend_after_s", int | float, 30, "monitoring.")),  # type: ignore[arg-type]
            checkpoint_s=float(opt(mon, "checkpoint_s", int | float, 5, "monitoring.")),  # type: ignore[arg-type]
            download_attempts=opt(download_t, "attempts", int, 5, "download."),
            download_ca_file=base / download_ca if download_ca else None,
            download_retry_s=float(opt(download_t, "retry_s", int | float, 5, "download.")),  # type: ignore[arg-type]
        )
