"""Signed desired-state directives: what model a device should run, and how.

The hub publishes one retained directive per device. The agent accepts it only when
all of these hold, and otherwise refuses with a :class:`Refusal` reason it reports:

- the payload is within size and parses strictly;
- a threshold of trusted keys signed the canonical directive bytes;
- it names this device;
- it has not expired (a freeze attack replays an old, validly signed directive);
- its sequence number is above the last accepted one (replay);
- its model version is not below the installed one, unless ``downgrade`` is set
  (a rollback is an explicit, signed decision).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Literal

from edge_agent.contract.canonical import canonical_bytes, parse_json
from edge_agent.contract.fields import exact_fields, list_of, positive_int, safe_name, sha256_hex
from edge_agent.contract.fields import field as get
from edge_agent.contract.trust import Context, Signature, TrustRoot, signatures_from_json
from edge_agent.errors import DirectiveError, EdgeFleetError, TrustError

DIRECTIVE_FORMAT: Final = "edgefleet-directive/1"
MAX_DIRECTIVE_BYTES: Final = 64 << 10
Mode = Literal["active", "shadow"]


class Refusal(StrEnum):
    """Why a directive was refused (reported in the ``refused`` event)."""

    MALFORMED = "malformed"
    TOO_LARGE = "too_large"
    UNTRUSTED = "untrusted"
    WRONG_DEVICE = "wrong_device"
    EXPIRED = "expired"
    REPLAY = "replay"
    DOWNGRADE = "downgrade"


class DirectiveRefusedError(DirectiveError):
    """A directive was refused; ``reason`` says which check failed."""

    def __init__(self, reason: Refusal, message: str, seq: int | None = None) -> None:
        super().__init__(f"directive refused ({reason.value}): {message}")
        self.reason = reason
        self.seq = seq


@dataclass(frozen=True)
class ModelRef:
    """The bundle a directive points at."""

    name: str
    version: int
    sha256: str
    size: int
    urls: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "size": self.size,
            "urls": list(self.urls),
        }

    @classmethod
    def from_json(cls, value: Any, where: str) -> ModelRef:
        """Parse the JSON form.

        Raises:
            ValidationError: malformed.
        """
        obj = exact_fields(value, where, {"name", "version", "sha256", "size", "urls"})
        urls = tuple(list_of(obj, "urls", str, where))
        if not urls or not all(u.startswith(("http://", "https://")) for u in urls):
            raise DirectiveRefusedError(Refusal.MALFORMED, f"{where}.urls: need http(s) URLs")
        return cls(
            name=safe_name(obj["name"], f"{where}.name"),
            version=positive_int(obj, "version", where),
            sha256=sha256_hex(obj, "sha256", where),
            size=positive_int(obj, "size", where),
            urls=urls,
        )


@dataclass(frozen=True)
class Probation:
    """Gates a newly activated model must pass before it is kept."""

    window_s: float = 300.0
    min_predictions: int = 20
    max_error_rate: float = 0.05
    max_latency_p95_ms: float | None = None
    max_crashes: int = 2

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "window_s": self.window_s,
            "min_predictions": self.min_predictions,
            "max_error_rate": self.max_error_rate,
            "max_latency_p95_ms": self.max_latency_p95_ms,
            "max_crashes": self.max_crashes,
        }

    @classmethod
    def from_json(cls, value: Any, where: str) -> Probation:
        """Parse the JSON form.

        Raises:
            ValidationError: malformed.
        """
        keys = {
            "window_s",
            "min_predictions",
            "max_error_rate",
            "max_latency_p95_ms",
            "max_crashes",
        }
        obj = exact_fields(value, where, keys)
        p95 = obj["max_latency_p95_ms"]
        return cls(
            window_s=get(obj, "window_s", float, where),
            min_predictions=positive_int(obj, "min_predictions", where, minimum=0),
            max_error_rate=get(obj, "max_error_rate", float, where),
            max_latency_p95_ms=None
            if p95 is None
            else get(obj, "max_latency_p95_ms", float, where),
            max_crashes=positive_int(obj, "max_crashes", where),
        )


@dataclass(frozen=True)
class Directive:
    """The desired state of one device."""

    device_id: str
    seq: int
    issued_at: int
    expires_at: int
    model: ModelRef
    mode: Mode = "active"
    downgrade: bool = False
    probation: Probation = field(default_factory=Probation)
    rollout: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the JSON document (the signed part)."""
        return {
            "format": DIRECTIVE_FORMAT,
            "device_id": self.device_id,
            "seq": self.seq,
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
            "model": self.model.to_json(),
            "mode": self.mode,
            "downgrade": self.downgrade,
            "probation": self.probation.to_json(),
            "rollout": self.rollout,
        }

    def signed_bytes(self) -> bytes:
        """The canonical bytes that signatures cover."""
        return canonical_bytes(self.to_json())

    @classmethod
    def from_json(cls, value: Any, where: str = "directive") -> Directive:
        """Parse the JSON document strictly.

        Raises:
            ValidationError: malformed.
        """
        keys = {
            "format", "device_id", "seq", "issued_at", "expires_at", "model", "mode",
            "downgrade", "probation", "rollout",
        }  # fmt: skip
        obj = exact_fields(value, where, keys)
        if get(obj, "format", str, where) != DIRECTIVE_FORMAT:
            raise DirectiveRefusedError(
                Refusal.MALFORMED, f"{where}.format is not {DIRECTIVE_FORMAT}"
            )
        mode = get(obj, "mode", str, where)
        if mode not in ("active", "shadow"):
            raise DirectiveRefusedError(Refusal.MALFORMED, f"{where}.mode: {mode!r}")
        rollout = obj["rollout"]
        return cls(
            device_id=safe_name(obj["device_id"], f"{where}.device_id"),
            seq=positive_int(obj, "seq", where),
            issued_at=positive_int(obj, "issued_at", where, minimum=0),
            expires_at=positive_int(obj, "expires_at", where, minimum=0),
            model=ModelRef.from_json(obj["model"], f"{where}.model"),
            mode=mode,  # type: ignore[arg-type]
            downgrade=get(obj, "downgrade", bool, where),
            probation=Probation.from_json(obj["probation"], f"{where}.probation"),
            rollout=None if rollout is None else safe_name(rollout, f"{where}.rollout"),
        )


@dataclass(frozen=True)
class SignedDirective:
    """A directive with its detached signatures: the retained MQTT payload."""

    directive: Directive
    signatures: tuple[Signature, ...]

    def to_bytes(self) -> bytes:
        """The MQTT payload."""
        return canonical_bytes(
            {
                "directive": self.directive.to_json(),
                "signatures": [s.to_json() for s in self.signatures],
            }
        )


def accept_directive(
    payload: bytes,
    *,
    trust: TrustRoot,
    device_id: str,
    now: float,
    last_seq: int,
    installed_version: int | None,
    installed_name: str | None = None,
) -> Directive:
    """Check a directive payload completely; return it if this device must follow it.

    ``installed_version`` is the version of the active model of the same name (None
    when none is installed). Pure: no I/O, ``now`` is passed in.

    Raises:
        DirectiveRefusedError: with the :class:`Refusal` reason and a one-line message.
    """
    if len(payload) > MAX_DIRECTIVE_BYTES:
        raise DirectiveRefusedError(
            Refusal.TOO_LARGE, f"{len(payload)} bytes > {MAX_DIRECTIVE_BYTES}"
        )
    try:
        envelope = exact_fields(
            parse_json(payload, "directive"), "envelope", {"directive", "signatures"}
        )
        signatures = signatures_from_json(envelope["signatures"], "envelope.signatures")
        signed = canonical_bytes(envelope["directive"])
        trust.verify(Context.DIRECTIVE, signed, signatures, "directive")
        directive = Directive.from_json(envelope["directive"])
    except DirectiveRefusedError:
        raise
    except TrustError as exc:
        raise DirectiveRefusedError(Refusal.UNTRUSTED, str(exc)) from exc
    except EdgeFleetError as exc:
        raise DirectiveRefusedError(Refusal.MALFORMED, str(exc)) from exc
    d = directive
    if d.device_id != device_id:
        raise DirectiveRefusedError(Refusal.WRONG_DEVICE, f"addressed to {d.device_id!r}", d.seq)
    if now >= d.expires_at:
        raise DirectiveRefusedError(
            Refusal.EXPIRED, f"seq {d.seq} expired at {d.expires_at} (now {int(now)})", d.seq
        )
    if d.seq <= last_seq:
        raise DirectiveRefusedError(
            Refusal.REPLAY, f"seq {d.seq} is not above the last accepted seq {last_seq}", d.seq
        )
    same_model = installed_name is None or installed_name == d.model.name
    if (
        installed_version is not None
        and same_model
        and d.mode == "active"
        and d.model.version < installed_version
        and not d.downgrade
    ):
        raise DirectiveRefusedError(
            Refusal.DOWNGRADE,
            f"v{d.model.version} is below the installed v{installed_version} and the "
            "directive is not a signed downgrade",
            d.seq,
        )
    return d
