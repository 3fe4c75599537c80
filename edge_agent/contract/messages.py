"""Messages devices and the hub exchange over MQTT (besides the signed directive).

Every payload is compact canonical JSON with a ``format`` field, parsed strictly:
missing, extra or mistyped fields are refused in one line. Payloads above
:data:`MAX_PAYLOAD_BYTES` are refused before parsing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from edge_agent.contract.canonical import canonical_bytes, parse_json
from edge_agent.contract.fields import (
    MAX_INT,
    as_object,
    exact_fields,
    is_safe_name,
    positive_int,
    safe_name,
    sha256_hex,
)
from edge_agent.contract.fields import field as get
from edge_agent.contract.window import MetricsWindow
from edge_agent.errors import ValidationError

MAX_PAYLOAD_BYTES: Final = 256 << 10
STATE_FORMAT: Final = "edgefleet-state/1"
EVENT_FORMAT: Final = "edgefleet-event/1"
METRICS_FORMAT: Final = "edgefleet-metrics/1"
ACK_FORMAT: Final = "edgefleet-ack/1"
_EPOCH: Final = re.compile(r"[0-9a-f]{16}")
_EPOCH_FIELD: Final = frozenset({"epoch"})
_METRICS_FIELDS: Final = frozenset({"format", "device_id", "seq_lo", "seq_hi", "windows"})
_METRICS_FIELDS_EPOCH: Final = _METRICS_FIELDS | _EPOCH_FIELD


def load_payload(payload: bytes, what: str) -> dict[str, Any]:
    """Size-check and parse an MQTT payload into a JSON object.

    Raises:
        ValidationError: too large, not JSON, or not an object.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValidationError(f"{what}: {len(payload)} bytes is over {MAX_PAYLOAD_BYTES}")
    return as_object(parse_json(payload, what), what)


def _check_format(obj: dict[str, Any], expected: str, where: str) -> None:
    if get(obj, "format", str, where) != expected:
        raise ValidationError(f"{where}.format: expected {expected!r}")


class EventKind(StrEnum):
    """Deployment events an agent reports."""

    RECEIVED = "received"
    DOWNLOADING = "downloading"
    VERIFIED = "verified"
    ACTIVATED = "activated"
    SHADOW_STARTED = "shadow_started"
    PROBATION_PASSED = "probation_passed"
    ROLLED_BACK = "rolled_back"
    REFUSED = "refused"
    FAILED = "failed"
    COMPACTED = "compacted"
    TRUST_ROTATED = "trust_rotated"
    #: Recorded by the hub (not sent by agents): two devices write under one device id.
    IDENTITY_CONFLICT = "identity_conflict"


@dataclass(frozen=True)
class ModelVersion:
    """A model name and version (plus the bundle digest where known)."""

    name: str
    version: int
    sha256: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {"name": self.name, "version": self.version, "sha256": self.sha256}

    @classmethod
    def from_json(cls, value: Any, where: str) -> ModelVersion | None:
        """Parse the JSON form (``null`` gives None).

        Raises:
            ValidationError: malformed.
        """
        if value is None:
            return None
        obj = exact_fields(value, where, {"name", "version", "sha256"})
        digest = None if obj["sha256"] is None else sha256_hex(obj, "sha256", where)
        return cls(
            safe_name(obj["name"], f"{where}.name"), positive_int(obj, "version", where), digest
        )


def _opt_json(m: ModelVersion | None) -> dict[str, Any] | None:
    return m.to_json() if m else None


@dataclass(frozen=True)
class Event:
    """One deployment event."""

    device_id: str
    ts: float
    kind: EventKind
    detail: str = ""
    model: ModelVersion | None = None
    directive_seq: int | None = None
    progress: float | None = None

    def to_bytes(self) -> bytes:
        """The MQTT payload."""
        return canonical_bytes(
            {
                "format": EVENT_FORMAT,
                "device_id": self.device_id,
                "ts": self.ts,
                "kind": self.kind.value,
                "detail": self.detail,
                "model": _opt_json(self.model),
                "directive_seq": self.directive_seq,
                "progress": self.progress,
            }
        )

    @classmethod
    def from_bytes(cls, payload: bytes) -> Event:
        """Parse an event payload.

        Raises:
            ValidationError: malformed.
        """
        where = "event"
        obj = exact_fields(
            load_payload(payload, where),
            where,
            {"format", "device_id", "ts", "kind", "detail", "model", "directive_seq", "progress"},
        )
        _check_format(obj, EVENT_FORMAT, where)
        try:
            kind = EventKind(get(obj, "kind", str, where))
        except ValueError as exc:
            raise ValidationError(f"{where}.kind: unknown kind {obj['kind']!r}") from exc
        seq = obj["directive_seq"]
        progress = obj["progress"]
        return cls(
            device_id=safe_name(obj["device_id"], f"{where}.device_id"),
            ts=get(obj, "ts", float, where),
            kind=kind,
            detail=get(obj, "detail", str, where)[:1000],
            model=ModelVersion.from_json(obj["model"], f"{where}.model"),
            directive_seq=None if seq is None else positive_int(obj, "directive_seq", where),
            progress=None if progress is None else get(obj, "progress", float, where),
        )


@dataclass(frozen=True)
class Health:
    """System health a device reports."""

    cpu_percent: float = 0.0
    rss_bytes: int = 0
    disk_free_bytes: int = 0
    uptime_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "cpu_percent": self.cpu_percent,
            "rss_bytes": self.rss_bytes,
            "disk_free_bytes": self.disk_free_bytes,
            "uptime_s": self.uptime_s,
        }


@dataclass(frozen=True)
class State:
    """A device's retained state. ``online=False`` alone is the last-will message."""

    device_id: str
    online: bool
    ts: float = 0.0
    agent_version: str = ""
    active: ModelVersion | None = None
    previous: ModelVersion | None = None
    shadow: ModelVersion | None = None
    probation: str = "none"
    directive_seq: int = 0
    health: Health = field(default_factory=Health)
    buffer_depth: int = 0
    buffer_bytes: int = 0
    compactions: int = 0
    last_error: str = ""

    def to_bytes(self) -> bytes:
        """The MQTT payload."""
        return canonical_bytes(
            {
                "format": STATE_FORMAT,
                "device_id": self.device_id,
                "online": self.online,
                "ts": self.ts,
                "agent_version": self.agent_version,
                "active": _opt_json(self.active),
                "previous": _opt_json(self.previous),
                "shadow": _opt_json(self.shadow),
                "probation": self.probation,
                "directive_seq": self.directive_seq,
                "health": self.health.to_json(),
                "buffer": {
                    "depth": self.buffer_depth,
                    "bytes": self.buffer_bytes,
                    "compactions": self.compactions,
                },
                "last_error": self.last_error,
            }
        )

    @classmethod
    def from_bytes(cls, payload: bytes) -> State:
        """Parse a state payload.

        Raises:
            ValidationError: malformed.
        """
        where = "state"
        keys = {
            "format", "device_id", "online", "ts", "agent_version", "active", "previous",
            "shadow", "probation", "directive_seq", "health", "buffer", "last_error",
        }  # fmt: skip
        obj = exact_fields(load_payload(payload, where), where, keys)
        _check_format(obj, STATE_FORMAT, where)
        h = exact_fields(
            obj["health"],
            f"{where}.health",
            {"cpu_percent", "rss_bytes", "disk_free_bytes", "uptime_s"},
        )
        b = exact_fields(obj["buffer"], f"{where}.buffer", {"depth", "bytes", "compactions"})
        return cls(
            device_id=safe_name(obj["device_id"], f"{where}.device_id"),
            online=get(obj, "online", bool, where),
            ts=get(obj, "ts", float, where),
            agent_version=get(obj, "agent_version", str, where),
            active=ModelVersion.from_json(obj["active"], f"{where}.active"),
            previous=ModelVersion.from_json(obj["previous"], f"{where}.previous"),
            shadow=ModelVersion.from_json(obj["shadow"], f"{where}.shadow"),
            probation=get(obj, "probation", str, where),
            directive_seq=positive_int(obj, "directive_seq", where, minimum=0),
            health=Health(
                cpu_percent=get(h, "cpu_percent", float, f"{where}.health"),
                rss_bytes=positive_int(h, "rss_bytes", f"{where}.health", minimum=0),
                disk_free_bytes=positive_int(h, "disk_free_bytes", f"{where}.health", minimum=0),
                uptime_s=get(h, "uptime_s", float, f"{where}.health"),
            ),
            buffer_depth=positive_int(b, "depth", f"{where}.buffer", minimum=0),
            buffer_bytes=positive_int(b, "bytes", f"{where}.buffer", minimum=0),
            compactions=positive_int(b, "compactions", f"{where}.buffer", minimum=0),
            last_error=get(obj, "last_error", str, where)[:1000],
        )


def offline_state(device_id: str) -> State:
    """The last-will payload: the device is offline, nothing else is claimed."""
    return State(device_id=device_id, online=False)


@dataclass(frozen=True)
class MetricsMessage:
    """One outbox row: the windows closed together (active, and shadow when one runs),
    or a compacted range of them, covering sequences ``seq_lo..seq_hi``."""

    device_id: str
    seq_lo: int
    seq_hi: int
    windows: tuple[MetricsWindow, ...]
    #: The device's sequence space (its outbox's epoch); "" for agents without epochs.
    epoch: str = ""

    def to_bytes(self) -> bytes:
        """The MQTT payload."""
        return self.splice(
            self.device_id,
            self.seq_lo,
            self.seq_hi,
            canonical_bytes([w.to_json() for w in self.windows]),
            self.epoch,
        )

    @staticmethod
    def splice(
        device_id: str, seq_lo: int, seq_hi: int, windows_json: bytes, epoch: str = ""
    ) -> bytes:
        """The payload for an outbox row whose windows are already a canonical JSON array.

        The canonical bytes of the message, without parsing the windows again (fast
        drains).
        """
        head: dict[str, Any] = {
            "device_id": device_id,
            "format": METRICS_FORMAT,
            "seq_hi": seq_hi,
            "seq_lo": seq_lo,
        }
        if epoch:
            head["epoch"] = epoch
        return canonical_bytes(head)[:-1] + b',"windows":' + windows_json + b"}"

    @classmethod
    def from_bytes(cls, payload: bytes) -> MetricsMessage:
        """Parse a metrics payload.

        Raises:
            ValidationError: malformed, or ``seq_lo`` > ``seq_hi``.
        """
        obj = load_payload(payload, "metrics")
        fast = _metrics_fast(obj)
        return fast if fast is not None else _metrics_checked(obj)


def _metrics_checked(value: dict[str, Any]) -> MetricsMessage:
    """A metrics message field by field (see :func:`_metrics_fast`).

    Raises:
        ValidationError: malformed, or ``seq_lo`` > ``seq_hi``.
    """
    where = "metrics"
    obj = exact_fields(value, where, set(_METRICS_FIELDS), _EPOCH_FIELD)
    _check_format(obj, METRICS_FORMAT, where)
    lo = positive_int(obj, "seq_lo", where)
    hi = positive_int(obj, "seq_hi", where)
    if lo > hi:
        raise ValidationError(f"{where}: seq_lo {lo} is above seq_hi {hi}")
    return MetricsMessage(
        device_id=safe_name(obj["device_id"], f"{where}.device_id"),
        seq_lo=lo,
        seq_hi=hi,
        windows=_windows(obj["windows"], where),
        epoch=_epoch(obj, where),
    )


def _metrics_fast(obj: dict[str, Any]) -> MetricsMessage | None:
    """The message when its envelope is sound (checked in few operations), its windows
    parsed by :meth:`MetricsWindow.from_wire` (``obj`` is freshly parsed and handed
    over), which raises for a broken window as :func:`_metrics_checked` would; None when
    the envelope is off, for that function to name the problem.

    Raises:
        ValidationError: the envelope is sound and a window is not.
    """
    keys = obj.keys()
    if keys != _METRICS_FIELDS and keys != _METRICS_FIELDS_EPOCH:
        return None
    lo, hi, device_id, windows = obj["seq_lo"], obj["seq_hi"], obj["device_id"], obj["windows"]
    if (
        obj["format"] != METRICS_FORMAT
        or type(lo) is not int
        or type(hi) is not int
        or not 1 <= lo <= hi <= MAX_INT
        or not is_safe_name(device_id)
        or type(windows) is not list
        or not 1 <= len(windows) <= 16
    ):
        return None
    epoch = obj.get("epoch", "")
    if "epoch" in obj and (type(epoch) is not str or not _EPOCH.fullmatch(epoch)):
        return None
    return MetricsMessage(
        device_id,
        lo,
        hi,
        tuple(MetricsWindow.from_wire(w, f"metrics.windows[{i}]") for i, w in enumerate(windows)),
        epoch,
    )


def _windows(value: Any, where: str) -> tuple[MetricsWindow, ...]:
    if not isinstance(value, list) or not value or len(value) > 16:
        raise ValidationError(f"{where}.windows: expected an array of 1..16 windows")
    return tuple(MetricsWindow.from_json(w, f"{where}.windows[{i}]") for i, w in enumerate(value))


def _epoch(obj: dict[str, Any], where: str) -> str:
    if "epoch" not in obj:
        return ""
    value = get(obj, "epoch", str, where)
    if not _EPOCH.fullmatch(value):
        raise ValidationError(f"{where}.epoch: expected 16 lowercase hex digits")
    return value


_ACK_NO_EPOCH: Final = b'{"device_id":"%s","format":"' + ACK_FORMAT.encode() + b'","seq":%d}'
_ACK_WITH_EPOCH: Final = (
    b'{"device_id":"%s","epoch":"%s","format":"' + ACK_FORMAT.encode() + b'","seq":%d}'
)


@dataclass(frozen=True)
class Ack:
    """The hub's end-to-end acknowledgement: every window up to ``seq`` of the device's
    sequence space ``epoch`` is stored."""

    device_id: str
    seq: int
    epoch: str = ""

    def to_bytes(self) -> bytes:
        """The MQTT payload."""
        device_id, seq, epoch = self.device_id, self.seq, self.epoch
        if type(seq) is int and is_safe_name(device_id) and (not epoch or _EPOCH.fullmatch(epoch)):
            # The canonical bytes, written directly (the hub sends one per device and
            # batch): the keys in order, and no character that JSON would escape.
            if epoch:
                return _ACK_WITH_EPOCH % (device_id.encode(), epoch.encode(), seq)
            return _ACK_NO_EPOCH % (device_id.encode(), seq)
        doc: dict[str, Any] = {"format": ACK_FORMAT, "device_id": self.device_id, "seq": self.seq}
        if self.epoch:
            doc["epoch"] = self.epoch
        return canonical_bytes(doc)

    @classmethod
    def from_bytes(cls, payload: bytes) -> Ack:
        """Parse an ack payload.

        Raises:
            ValidationError: malformed.
        """
        where = "ack"
        obj = exact_fields(
            load_payload(payload, where), where, {"format", "device_id", "seq"}, _EPOCH_FIELD
        )
        _check_format(obj, ACK_FORMAT, where)
        return cls(
            safe_name(obj["device_id"], f"{where}.device_id"),
            positive_int(obj, "seq", where, minimum=0),
            _epoch(obj, where),
        )
