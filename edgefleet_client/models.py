"""The API's responses as frozen dataclasses, each with a strict ``from_json``.

Strict means: a field the client reads must be present with the right JSON type (an
``int`` is accepted where a number is expected, never a ``bool``); a wrong or missing
one raises :class:`ResponseError` naming it. Fields the client does not know are
ignored, so a newer hub that adds fields still works with this client. The answers a
script may want whole (a rollout, a drift result, a registered version) also keep
``source``: the JSON object as the hub sent it, unknown fields included (what the CLI's
``--json`` prints).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


class ResponseError(ValueError):
    """A response body does not have the documented shape (the client turns it into a
    :class:`~edgefleet_client.errors.HubError`)."""


class _Obj:
    """Typed reads from one JSON object, naming ``where`` in every error."""

    def __init__(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise ResponseError(f"{where}: expected an object, got {type(value).__name__}")
        self.value: dict[str, Any] = value
        self.where = where

    def _get(self, key: str, kinds: tuple[type, ...], label: str, optional: bool) -> Any:
        if key not in self.value:
            raise ResponseError(f"{self.where}.{key}: missing")
        v = self.value[key]
        if v is None and optional:
            return None
        if isinstance(v, bool) and bool not in kinds:
            raise ResponseError(f"{self.where}.{key}: expected {label}, got a boolean")
        if not isinstance(v, kinds):
            raise ResponseError(f"{self.where}.{key}: expected {label}, got {type(v).__name__}")
        return v

    def text(self, key: str) -> str:
        return str(self._get(key, (str,), "a string", False))

    def opt_text(self, key: str) -> str | None:
        v = self._get(key, (str,), "a string", True)
        return None if v is None else str(v)

    def integer(self, key: str) -> int:
        return int(self._get(key, (int,), "an integer", False))

    def opt_integer(self, key: str) -> int | None:
        v = self._get(key, (int,), "an integer", True)
        return None if v is None else int(v)

    def number(self, key: str) -> float:
        return float(self._get(key, (int, float), "a number", False))

    def opt_number(self, key: str) -> float | None:
        v = self._get(key, (int, float), "a number", True)
        return None if v is None else float(v)

    def flag(self, key: str) -> bool:
        return bool(self._get(key, (bool,), "a boolean", False))

    def opt_flag(self, key: str) -> bool | None:
        v = self._get(key, (bool,), "a boolean", True)
        return None if v is None else bool(v)

    def array(self, key: str) -> list[Any]:
        return list(self._get(key, (list,), "a list", False))

    def strs(self, key: str) -> tuple[str, ...]:
        items = self.array(key)
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise ResponseError(f"{self.where}.{key}[{i}]: expected a string")
        return tuple(items)

    def obj(self, key: str) -> _Obj:
        return _Obj(self._get(key, (dict,), "an object", False), f"{self.where}.{key}")

    def opt_obj(self, key: str) -> _Obj | None:
        v = self._get(key, (dict,), "an object", True)
        return None if v is None else _Obj(v, f"{self.where}.{key}")

    def maybe(self, key: str) -> Any:
        """A field that may be absent (older hubs): its value or None."""
        return self.value.get(key)


def _items(obj: _Obj, key: str, parse: Any) -> tuple[Any, ...]:
    return tuple(parse(v, f"{obj.where}.{key}[{i}]") for i, v in enumerate(obj.array(key)))


@dataclass(frozen=True)
class ModelRef:
    """A model name and version (with the bundle digest where known)."""

    name: str
    version: int
    sha256: str | None = None

    @property
    def label(self) -> str:
        """``name:vN``."""
        return f"{self.name}:v{self.version}"

    @classmethod
    def from_json(cls, value: Any, where: str) -> ModelRef:
        """Parse strictly. Raises: ResponseError: malformed."""
        o = _Obj(value, where)
        return cls(o.text("name"), o.integer("version"), o.opt_text("sha256"))

    @classmethod
    def opt(cls, obj: _Obj, key: str) -> ModelRef | None:
        v = obj.opt_obj(key)
        return None if v is None else cls.from_json(v.value, v.where)


@dataclass(frozen=True)
class Health:
    """What a device last reported about itself (None: not reported)."""

    cpu_percent: float | None = None
    rss_bytes: int | None = None
    disk_free_bytes: int | None = None
    uptime_s: float | None = None

    @classmethod
    def from_json(cls, value: Any, where: str) -> Health:
        """Parse strictly; an empty object is a device that never reported.

        Raises: ResponseError: a field of the wrong type."""
        o = _Obj(value, where)
        if not o.value:
            return cls()
        return cls(
            o.opt_number("cpu_percent"),
            o.opt_integer("rss_bytes"),
            o.opt_integer("disk_free_bytes"),
            o.opt_number("uptime_s"),
        )


@dataclass(frozen=True)
class Device:
    """One device as ``GET /v1/devices`` lists it."""

    id: str
    tags: tuple[str, ...]
    enrolled_at: float | None
    last_seen: float | None
    online: bool
    offline_since: float | None
    active: ModelRef | None
    previous: ModelRef | None
    shadow: ModelRef | None
    health: Health
    buffer_depth: int
    revoked_at: float | None
    #: The hub's drift verdict on the device's active version over the previous and the
    #: current clock hour (``insufficient``, ``none``, ``minor``, ``drift``, ``major``);
    #: None: no model, an unknown version, or a hub too old to say.
    drift: str | None = None

    @classmethod
    def from_json(cls, value: Any, where: str = "device") -> Device:
        """Parse strictly. Raises: ResponseError: malformed."""
        o = _Obj(value, where)
        return cls(**_device_fields(o))


def _device_fields(o: _Obj) -> dict[str, Any]:
    return {
        "id": o.text("id"),
        "tags": o.strs("tags"),
        "enrolled_at": o.opt_number("enrolled_at"),
        "last_seen": o.opt_number("last_seen"),
        "online": o.flag("online"),
        "offline_since": o.opt_number("offline_since"),
        "active": ModelRef.opt(o, "active"),
        "previous": ModelRef.opt(o, "previous"),
        "shadow": ModelRef.opt(o, "shadow"),
        "health": Health.from_json(o.obj("health").value, f"{o.where}.health"),
        "buffer_depth": o.integer("buffer_depth"),
        "revoked_at": o.opt_number("revoked_at"),
        "drift": o.opt_text("drift") if "drift" in o.value else None,
    }


@dataclass(frozen=True)
class DeviceDetail(Device):
    """One device (``GET /v1/devices/{id}``), with its highest contiguous metrics seq."""

    metrics_seq: int = 0

    @classmethod
    def from_json(cls, value: Any, where: str = "device") -> DeviceDetail:
        """Parse strictly. Raises: ResponseError: malformed."""
        o = _Obj(value, where)
        return cls(**_device_fields(o), metrics_seq=o.integer("metrics_seq"))


@dataclass(frozen=True)
class DevicePage:
    """A page of devices; ``next`` is the ``after`` for the next page (None: last)."""

    devices: tuple[Device, ...]
    next: str | None

    @classmethod
    def from_json(cls, value: Any, where: str = "devices") -> DevicePage:
        """Parse strictly. Raises: ResponseError: malformed."""
        o = _Obj(value, where)
        return cls(_items(o, "devices", Device.from_json), o.opt_text("next"))


@dataclass(frozen=True)
class Event:
    """A deployment event a device reported, with its id (for paging and resuming)."""

    id: int
    device_id: str
    ts: float
    kind: str
    detail: str
    model: ModelRef | None
    directive_seq: int | None
    progress: float | None

    @classmethod
    def from_json(cls, value: Any, where: str = "event") -> Event:
        """Parse strictly. Raises: ResponseError: malformed."""
        o = _Obj(value, where)
        return cls(
            o.integer("id"),
            o.text("device_id"),
            o.number("ts"),
            o.text("kind"),
            o.text("detail"),
            ModelRef.opt(o, "model"),
            o.opt_integer("directive_seq"),
            o.opt_number("progress"),
        )


@dataclass(frozen=True)
class EventPage:
    """A page of events, oldest first; ``next`` is the ``after_id`` of the next page."""

    events: tuple[Event, ...]
    next: int | None

    @classmethod
    def from_json(cls, value: Any, where: str = "events") -> EventPage:
        """Parse strictly. Raises: ResponseError: malformed."""
        o = _Obj(value, where)
        return cls(_items(o, "events", Event.from_json), o.opt_integer("next"))


@dataclass(frozen=True)
class WhoAmI:
    """The calling token."""

    id: str
    name: str
    scopes: tuple[str, ...]

    def allows(self, scope: str) -> bool:
        """Whether the token holds ``scope`` (admin holds every scope, deploy holds read)."""
        held = set(self.scopes)
        return "admin" in held or scope in held or (scope == "read" and "deploy" in held)

    @classmethod
    def from_json(cls, value: Any, where: str = "whoami") -> WhoAmI:
        """Parse strictly. Raises: ResponseError: malformed."""
        o = _Obj(value, where)
        return cls(o.text("id"), o.text("name"), o.strs("scopes"))


@dataclass(frozen=True)
class HubHealth:
    """``/healthz``: the hub answers, and its version."""

    status: str
    version: str

    @classmethod
    def from_json(cls, value: Any, where: str = "healthz") -> HubHealth:
        """Parse strictly. Raises: ResponseError: malformed."""
        o = _Obj(value, where)
        return cls(o.text("status"), o.text("version"))


@dataclass(frozen=True)
class ModelSummary:
    """A model name with its latest version."""

    name: str
    latest_version: int | None
    created: float | None

    @classmethod
    def from_json(cls, value: Any, where: str = "model") -> ModelSummary:
        """Parse strictly. Raises: ResponseError: malformed."""
        o = _Obj(value, where)
        return cls(o.text("name"), o.opt_integer("latest_version"), o.opt_number("created"))


@dataclass(frozen=True)
class ModelVersionInfo:
    """One registered version of a model."""

    name: str
    version: int
    sha256: str
    size: int
    created: float
    status: str
    quantization: str | None
    lineage: Mapping[str, Any]
    #: The answer as the hub sent it (empty when built in code).
    source: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, value: Any, where: str = "version") -> ModelVersionInfo:
        """Parse strictly. Raises: ResponseError: malformed."""
        o = _Obj(value, where)
        lineage = o.opt_obj("lineage")
        return cls(
            o.text("name"),
            o.integer("version"),
            o.text("sha256"),
            o.integer("size"),
            o.number("created"),
            o.text("status"),
            o.opt_text("quantization"),
            dict(lineage.value) if lineage else {},
            dict(o.value),
        )


@dataclass(frozen=True)
class GateResult:
    """One gate of a rollout's current stage: its value, its limit, the verdict and, in
    one line, why (``detail``, e.g. ``waiting for evidence: 40 of 133 predictions``;
    empty when the hub gave none)."""

    name: str
    value: float | None
    limit: float | None
    verdict: str
    detail: str = ""

    @classmethod
    def from_json(cls, value: Any, where: str = "gate") -> GateResult:
        """Parse strictly. Raises: ResponseError: malformed."""
        o = _Obj(value, where)
        detail = o.opt_text("detail") if "detail" in o.value else None
        return cls(
            o.text("name"),
            o.opt_number("value"),
            o.opt_number("limit"),
            o.text("verdict"),
            detail or "",
        )


@dataclass(frozen=True)
class RolloutStage:
    """One stage of a rollout spec: a cumulative share or a device count, its bake time,
    mode and gate thresholds (as the spec states them)."""

    share: float | None
    count: int | None
    bake_s: float
    mode: str
    gates: Mapping[str, float | int | None]

    @property
    def label(self) -> str:
        """``10%`` or ``5 devices``."""
        if self.share is not None:
            return f"{self.share * 100:g}%"
        return f"{self.count} devices"

    @classmethod
    def from_json(cls, value: Any, where: str = "stage") -> RolloutStage:
        """Parse strictly. Raises: ResponseError: malformed."""
        o = _Obj(value, where)
        gates = o.obj("gates")
        limits: dict[str, float | int | None] = {}
        for key, v in gates.value.items():
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
                raise ResponseError(f"{gates.where}.{key}: expected a number")
            limits[str(key)] = v
        return cls(
            o.opt_number("share"),
            o.opt_integer("count"),
            o.number("bake_s"),
            o.text("mode"),
            limits,
        )


@dataclass(frozen=True)
class Transition:
    """One recorded state change of a rollout."""

    at: float
    from_state: str
    to_state: str
    stage: int
    reason: str

    @classmethod
    def from_json(cls, value: Any, where: str = "transition") -> Transition:
        """Parse strictly. Raises: ResponseError: malformed."""
        o = _Obj(value, where)
        return cls(
            o.number("at"), o.text("from"), o.text("to"), o.integer("stage"), o.text("reason")
        )


@dataclass(frozen=True)
class StageDevices:
    """The devices one stage adds to a rollout: by status (``pending``, ``downloading``,
    ``activated``, ``passed``, ``failed``, ``stale``, ``rolled_back``) once the rollout
    reached the stage, and how many are offline or never seen now."""

    stage: int
    devices: int
    reached: bool
    statuses: Mapping[str, int]
    offline: int
    never_seen: int

    def count(self, *statuses: str) -> int:
        """How many devices have one of ``statuses``."""
        return sum(self.statuses.get(s, 0) for s in statuses)

    @property
    def on_target(self) -> int:
        """Running the target version (activated, or passed probation)."""
        return self.count("activated", "passed")

    @classmethod
    def from_json(cls, value: Any, where: str = "stage_devices") -> StageDevices:
        """Parse strictly. Raises: ResponseError: malformed."""
        o = _Obj(value, where)
        counts = o.obj("statuses")
        statuses: dict[str, int] = {}
        for key, n in counts.value.items():
            if isinstance(n, bool) or not isinstance(n, int):
                raise ResponseError(f"{counts.where}.{key}: expected an integer")
            statuses[str(key)] = n
        return cls(
            o.integer("stage"),
            o.integer("devices"),
            o.flag("reached"),
            statuses,
            o.integer("offline"),
            o.integer("never_seen"),
        )


ACTIVE_ROLLOUT_STATES = frozenset({"running", "waiting_approval", "paused"})


@dataclass(frozen=True)
class Rollout:
    """A rollout: its spec's essentials, state, stage, history, touched devices, gates."""

    id: str
    model: str
    target_version: int
    previous_version: int | None
    selector_tags: tuple[str, ...]
    selector_devices: tuple[str, ...]
    stages: tuple[RolloutStage, ...]
    promotion: str
    on_failure: str
    state: str
    stage: int
    stage_started_at: float | None
    history: tuple[Transition, ...]
    touched: tuple[str, ...]
    gates: tuple[GateResult, ...] = field(default=())
    #: Per stage, its devices by state (only when asked for: ``rollout(id, devices=True)``).
    stage_devices: tuple[StageDevices, ...] = field(default=())
    #: The answer as the hub sent it (empty when built in code).
    source: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def active(self) -> bool:
        """Running, waiting for approval or paused."""
        return self.state in ACTIVE_ROLLOUT_STATES

    @property
    def progress(self) -> float:
        """Share of stages finished, in [0, 1] (1 when completed)."""
        if self.state == "completed" or not self.stages:
            return 1.0
        return self.stage / len(self.stages)

    @classmethod
    def from_json(cls, value: Any, where: str = "rollout") -> Rollout:
        """Parse strictly. Raises: ResponseError: malformed."""
        o = _Obj(value, where)
        spec = o.obj("spec")
        selector = spec.obj("selector")
        return cls(
            id=spec.text("id"),
            model=spec.text("model"),
            target_version=spec.integer("target_version"),
            previous_version=spec.opt_integer("previous_version"),
            selector_tags=selector.strs("tags"),
            selector_devices=selector.strs("device_ids"),
            stages=_items(spec, "stages", RolloutStage.from_json),
            promotion=spec.text("promotion"),
            on_failure=spec.text("on_failure"),
            state=o.text("state"),
            stage=o.integer("stage"),
            stage_started_at=o.opt_number("stage_started_at"),
            history=_items(o, "history", Transition.from_json),
            touched=o.strs("touched"),
            gates=_items(o, "gates", GateResult.from_json),
            stage_devices=(
                _items(o, "stage_devices", StageDevices.from_json)
                if o.maybe("stage_devices") is not None
                else ()
            ),
            source=dict(o.value),
        )


@dataclass(frozen=True)
class DeployResult:
    """The directive a deploy signed and published."""

    device_id: str
    seq: int
    model: str
    version: int
    mode: str
    expires_at: float

    @classmethod
    def from_json(cls, value: Any, where: str = "deploy") -> DeployResult:
        """Parse strictly. Raises: ResponseError: malformed."""
        o = _Obj(value, where)
        return cls(
            o.text("device_id"),
            o.integer("seq"),
            o.text("model"),
            o.integer("version"),
            o.text("mode"),
            o.number("expires_at"),
        )


@dataclass(frozen=True)
class DriftFeature:
    """One distribution's (a feature's, the predictions' or the confidences') drift
    scores, verdict and evidence: the chi-square ``statistic`` with ``df`` degrees of
    freedom, its ``p_value`` against the Holm ``threshold``, and the predictions
    ``n_needed`` for a decision (None where the hub did not compute them)."""

    name: str
    n: int
    psi: float | None
    js: float | None
    hellinger: float | None
    drifted: bool | None
    verdict: str | None
    statistic: float | None = None
    df: int | None = None
    p_value: float | None = None
    threshold: float | None = None
    n_needed: int | None = None

    @classmethod
    def from_json(cls, value: Any, where: str = "feature") -> DriftFeature:
        """Parse strictly. Raises: ResponseError: malformed."""
        o = _Obj(value, where)
        return cls(
            o.text("name"),
            o.integer("n"),
            o.opt_number("psi"),
            o.opt_number("js"),
            o.opt_number("hellinger"),
            o.opt_flag("drifted"),
            o.opt_text("verdict"),
            _opt(o, "statistic", o.opt_number),
            _opt(o, "df", o.opt_integer),
            _opt(o, "p_value", o.opt_number),
            _opt(o, "threshold", o.opt_number),
            _opt(o, "n_needed", o.opt_integer),
        )


def _opt(o: _Obj, key: str, read: Callable[[str], T | None]) -> T | None:
    """``read(key)`` when the field is there (typed strictly), None when it is absent."""
    return read(key) if key in o.value else None


@dataclass(frozen=True)
class DriftDecision:
    """A drift result's one verdict (``insufficient``/``none``/``minor``/``drift``/
    ``major``), the smallest count ``n`` and the ``n_needed`` for a decision, the
    distributions that drifted, the worst one, and ``detail``: the verdict in one line."""

    verdict: str
    n: int
    n_needed: int | None
    drifted: tuple[str, ...]
    worst: str | None
    detail: str

    @classmethod
    def from_json(cls, value: Any, where: str = "decision") -> DriftDecision:
        """Parse strictly. Raises: ResponseError: malformed."""
        o = _Obj(value, where)
        return cls(
            o.text("verdict"),
            o.integer("n"),
            o.opt_integer("n_needed"),
            o.strs("drifted"),
            o.opt_text("worst"),
            o.text("detail"),
        )


@dataclass(frozen=True)
class DriftRule:
    """What a drift report was decided with: the family-wise false-alarm rate ``alpha``
    and the effect sizes worth acting on (None: not used)."""

    alpha: float
    psi: float | None
    js: float | None
    hellinger: float | None

    @classmethod
    def from_json(cls, value: Any, where: str = "rule") -> DriftRule:
        """Parse strictly. Raises: ResponseError: malformed."""
        o = _Obj(value, where)
        return cls(
            o.number("alpha"), o.opt_number("psi"), o.opt_number("js"), o.opt_number("hellinger")
        )


@dataclass(frozen=True)
class DriftResult:
    """A version's drift over the fleet, a device or a tag cohort (``features`` empty,
    ``rule``, ``prediction``, ``confidence`` and ``report`` None when no window was
    stored). ``decision`` is its one verdict (None from a hub that sends none);
    ``report`` keeps the full report document."""

    model: str
    version: int
    since: float | None
    n: int
    features: tuple[DriftFeature, ...]
    report: Mapping[str, Any] | None
    decision: DriftDecision | None = None
    rule: DriftRule | None = None
    prediction: DriftFeature | None = None
    confidence: DriftFeature | None = None
    #: The answer as the hub sent it (empty when built in code).
    source: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, value: Any, where: str = "drift") -> DriftResult:
        """Parse strictly. Raises: ResponseError: malformed."""
        o = _Obj(value, where)
        report = o.opt_obj("report")
        features = _items(report, "features", DriftFeature.from_json) if report else ()
        decision = _opt(o, "decision", o.opt_obj)

        def part(key: str, parse: Callable[[Any, str], T]) -> T | None:
            if report is None or key not in report.value:
                return None
            return parse(report.obj(key).value, f"{report.where}.{key}")

        return cls(
            o.text("model"),
            o.integer("version"),
            o.opt_number("since"),
            o.integer("n"),
            features,
            dict(report.value) if report else None,
            None if decision is None else DriftDecision.from_json(decision.value, decision.where),
            part("rule", DriftRule.from_json),
            part("prediction", DriftFeature.from_json),
            part("confidence", DriftFeature.from_json),
            dict(o.value),
        )


@dataclass(frozen=True)
class AuditEntry:
    """One entry of the hash-chained audit log."""

    id: int
    ts: float
    actor: str
    action: str
    target: str
    details: Mapping[str, Any]
    hash: str

    @classmethod
    def from_json(cls, value: Any, where: str = "audit") -> AuditEntry:
        """Parse strictly. Raises: ResponseError: malformed."""
        o = _Obj(value, where)
        return cls(
            o.integer("id"),
            o.number("ts"),
            o.text("actor"),
            o.text("action"),
            o.text("target"),
            dict(o.obj("details").value),
            o.text("hash"),
        )


@dataclass(frozen=True)
class AuditPage:
    """A page of audit entries and whether the whole chain verifies."""

    entries: tuple[AuditEntry, ...]
    verified: bool
    problem: str | None

    @classmethod
    def from_json(cls, value: Any, where: str = "audit") -> AuditPage:
        """Parse strictly. Raises: ResponseError: malformed."""
        o = _Obj(value, where)
        return cls(
            _items(o, "entries", AuditEntry.from_json), o.flag("verified"), o.opt_text("problem")
        )


@dataclass(frozen=True)
class VersionCount:
    """How many devices run a model version (active or in shadow)."""

    model: str
    version: int
    active: int
    shadow: int

    @property
    def label(self) -> str:
        """``name:vN``."""
        return f"{self.model}:v{self.version}"

    @classmethod
    def from_json(cls, value: Any, where: str = "version_count") -> VersionCount:
        """Parse strictly. Raises: ResponseError: malformed."""
        o = _Obj(value, where)
        return cls(o.text("model"), o.integer("version"), o.integer("active"), o.integer("shadow"))


@dataclass(frozen=True)
class FleetSummary:
    """``GET /v1/fleet/summary``: device counts by state and by version."""

    total: int
    online: int
    offline: int
    never_seen: int
    without_model: int
    buffered_windows: int
    versions: tuple[VersionCount, ...]
    generated_at: float

    @classmethod
    def from_json(cls, value: Any, where: str = "summary") -> FleetSummary:
        """Parse strictly. Raises: ResponseError: malformed."""
        o = _Obj(value, where)
        return cls(
            o.integer("total"),
            o.integer("online"),
            o.integer("offline"),
            o.integer("never_seen"),
            o.integer("without_model"),
            o.integer("buffered_windows"),
            _items(o, "versions", VersionCount.from_json),
            o.number("generated_at"),
        )


@dataclass(frozen=True)
class Alert:
    """One recorded alert transition (``GET /v1/alerts``): a rule firing or resolving,
    with the metric's value then; ``open`` when it is a firing still in force."""

    id: int
    rule: str
    state: str
    value: float | None
    ts: float
    delivery: str
    open: bool

    @classmethod
    def from_json(cls, value: Any, where: str = "alert") -> Alert:
        """Parse strictly. Raises: ResponseError: malformed."""
        o = _Obj(value, where)
        return cls(
            o.integer("id"),
            o.text("rule"),
            o.text("state"),
            o.opt_number("value"),
            o.number("ts"),
            o.text("delivery"),
            o.flag("open"),
        )


@dataclass(frozen=True)
class AlertPage:
    """Alert transitions, newest first; ``firing`` counts the rules firing now; ``next``
    is the ``before_id`` of the next page (None: the last)."""

    alerts: tuple[Alert, ...]
    firing: int
    next: int | None

    @classmethod
    def from_json(cls, value: Any, where: str = "alerts") -> AlertPage:
        """Parse strictly. Raises: ResponseError: malformed."""
        o = _Obj(value, where)
        return cls(_items(o, "alerts", Alert.from_json), o.integer("firing"), o.opt_integer("next"))


def _numbers(o: _Obj, key: str) -> tuple[float, ...]:
    items = o.array(key)
    for i, item in enumerate(items):
        if isinstance(item, bool) or not isinstance(item, int | float):
            raise ResponseError(f"{o.where}.{key}[{i}]: expected a number")
    return tuple(float(v) for v in items)


def _integers(o: _Obj, key: str) -> tuple[int, ...]:
    items = o.array(key)
    for i, item in enumerate(items):
        if isinstance(item, bool) or not isinstance(item, int):
            raise ResponseError(f"{o.where}.{key}[{i}]: expected an integer")
    return tuple(items)


@dataclass(frozen=True)
class HistoryPoint:
    """A device's windows starting in ``[start, end)``: predictions ``n``, errors, the
    p95 latency in ms and the error rate (None: nothing timed / no attempts)."""

    start: float
    end: float
    windows: int
    n: int
    errors: int
    p95_ms: float | None
    error_rate: float | None

    @classmethod
    def from_json(cls, value: Any, where: str = "point") -> HistoryPoint:
        """Parse strictly. Raises: ResponseError: malformed."""
        o = _Obj(value, where)
        return cls(
            o.number("start"),
            o.number("end"),
            o.integer("windows"),
            o.integer("n"),
            o.integer("errors"),
            o.opt_number("p95_ms"),
            o.opt_number("error_rate"),
        )


@dataclass(frozen=True)
class DeviceHistory:
    """``GET /v1/devices/{id}/history``: a device's health per bucket, oldest first
    (buckets without a window left out)."""

    device_id: str
    role: str
    since: float
    until: float
    bucket_s: float
    points: tuple[HistoryPoint, ...]

    @classmethod
    def from_json(cls, value: Any, where: str = "history") -> DeviceHistory:
        """Parse strictly. Raises: ResponseError: malformed."""
        o = _Obj(value, where)
        return cls(
            o.text("device_id"),
            o.text("role"),
            o.number("since"),
            o.number("until"),
            o.number("bucket_s"),
            _items(o, "points", HistoryPoint.from_json),
        )


@dataclass(frozen=True)
class DriftBins:
    """One feature's reference proportions and live counts over the bundle's bins
    (``[underflow, interior bins..., overflow]``, NaN apart in ``live_nan``)."""

    model: str
    version: int
    feature: str
    features: tuple[str, ...]
    edges: tuple[float, ...]
    reference: tuple[float, ...]
    reference_counts: tuple[int, ...]
    live: tuple[int, ...]
    live_nan: int
    n: int
    since: float | None

    @property
    def live_share(self) -> tuple[float, ...]:
        """The live counts as proportions (zeros when nothing was counted)."""
        total = sum(self.live)
        return tuple(c / total if total else 0.0 for c in self.live)

    @classmethod
    def from_json(cls, value: Any, where: str = "bins") -> DriftBins:
        """Parse strictly. Raises: ResponseError: malformed or inconsistent lengths."""
        o = _Obj(value, where)
        bins = cls(
            o.text("model"),
            o.integer("version"),
            o.text("feature"),
            o.strs("features"),
            _numbers(o, "edges"),
            _numbers(o, "reference"),
            _integers(o, "reference_counts"),
            _integers(o, "live"),
            o.integer("live_nan"),
            o.integer("n"),
            o.opt_number("since"),
        )
        k = len(bins.edges) + 1
        if not len(bins.reference) == len(bins.reference_counts) == len(bins.live) == k:
            raise ResponseError(f"{where}: {len(bins.edges)} edges need {k} bins in each list")
        return bins


@dataclass(frozen=True)
class FeaturePsi:
    """One feature in one hour: PSI (None without finite values) and its verdict."""

    name: str
    psi: float | None
    verdict: str

    @classmethod
    def from_json(cls, value: Any, where: str = "feature") -> FeaturePsi:
        """Parse strictly. Raises: ResponseError: malformed."""
        o = _Obj(value, where)
        return cls(o.text("name"), o.opt_number("psi"), o.text("verdict"))


@dataclass(frozen=True)
class DriftHour:
    """The windows ending in one hour, decided on their own."""

    start: float
    n: int
    features: tuple[FeaturePsi, ...]
    verdict: str

    def psi_of(self, feature: str) -> float | None:
        """The hour's PSI of ``feature`` (None when absent or unscored)."""
        return next((f.psi for f in self.features if f.name == feature), None)

    @classmethod
    def from_json(cls, value: Any, where: str = "hour") -> DriftHour:
        """Parse strictly. Raises: ResponseError: malformed."""
        o = _Obj(value, where)
        return cls(
            o.number("start"),
            o.integer("n"),
            _items(o, "features", FeaturePsi.from_json),
            o.text("verdict"),
        )


@dataclass(frozen=True)
class DriftHistory:
    """``GET /v1/models/{name}/versions/{v}/drift/history``: per hour, oldest first, each
    feature's PSI and verdict; ``psi_threshold`` (worth acting on) and ``psi_major``."""

    model: str
    version: int
    role: str
    since: float
    until: float
    psi_threshold: float | None
    psi_major: float
    hours: tuple[DriftHour, ...]

    @classmethod
    def from_json(cls, value: Any, where: str = "drift_history") -> DriftHistory:
        """Parse strictly. Raises: ResponseError: malformed."""
        o = _Obj(value, where)
        return cls(
            o.text("model"),
            o.integer("version"),
            o.text("role"),
            o.number("since"),
            o.number("until"),
            o.opt_number("psi_threshold"),
            o.number("psi_major"),
            _items(o, "hours", DriftHour.from_json),
        )
