"""The JSON documents the API answers with and accepts, as pydantic models, so
``/openapi.json`` documents every body.

Field order is the order the hub has always written, and a number is written as it
was computed (an integer stays an integer, see :data:`Number`), so a body is the same
bytes it was before the models existed. Every answer model forbids fields it does not
declare: a document that grows without its model fails the hub's tests, not a client.
Free-form parts (a model's lineage, an audit entry's details) stay JSON objects. The
documents more than one route answers with are built from the stored records here
(``DeviceOut.fields_of``, ``EventOut.of``, ``VersionOut.of``), so route modules need
only this module and :mod:`hub.api.context`, never each other.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from edge_agent.contract.messages import ModelVersion
from hub.drift import DriftVerdict
from hub.registry import RegisteredVersion
from hub.store import DeviceRecord, EventRecord

#: A JSON number, kept an integer when it is one (``float`` would write ``5`` as ``5.0``).
Number = Annotated[int | float, WithJsonSchema({"type": "number"})]
#: A drift verdict (see ``docs/drift.md``).


class Document(BaseModel):
    """Base of the API's answers: exact fields, names as written on the wire."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# --- health and tokens ------------------------------------------------------------------


class HealthOut(Document):
    """``GET /healthz``."""

    status: Literal["ok"]
    version: str


class WhoAmIOut(Document):
    """The calling token."""

    id: str
    name: str
    scopes: list[str]


class TokenOut(Document):
    """One token as listed (never its secret)."""

    id: str
    name: str
    scopes: list[str]
    revoked: bool


class TokenRequest(BaseModel):
    """Body of ``POST /v1/tokens``."""

    name: str = Field(min_length=1, max_length=100)
    scopes: list[str] = Field(min_length=1)


class CreatedTokenOut(Document):
    """A new token: its secret (``token``) is in this answer only."""

    id: str
    token: str
    scopes: list[str]


# --- devices and events -------------------------------------------------------------


class RunningModel(Document):
    """A model version a device runs, as its state reports it."""

    name: str
    version: int
    sha256: str | None


class DeviceOut(Document):
    """One device: connection, models, health (the last reported values: cpu_percent,
    rss_bytes, disk_free_bytes, uptime_s; empty when never reported), buffered windows,
    revocation, and its drift verdict."""

    id: str
    tags: list[str]
    enrolled_at: Number | None
    last_seen: Number | None
    online: bool
    offline_since: Number | None
    active: RunningModel | None
    previous: RunningModel | None
    shadow: RunningModel | None
    health: dict[str, Number | None]
    buffer_depth: int
    revoked_at: Number | None
    #: The one rule's verdict on the active version's windows of the previous and the
    #: current clock hour (``hub.device_drift``); null: no model, or an unknown version.
    drift: DriftVerdict | None = None

    @staticmethod
    def fields_of(d: DeviceRecord) -> dict[str, Any]:
        """A stored device's fields as the API shows them."""

        def model(m: ModelVersion | None) -> RunningModel | None:
            return (
                None if m is None else RunningModel(name=m.name, version=m.version, sha256=m.sha256)
            )

        return {
            "id": d.id,
            "tags": list(d.tags),
            "enrolled_at": d.enrolled_at,
            "last_seen": d.last_seen,
            "online": d.online,
            "offline_since": d.offline_since,
            "active": model(d.active),
            "previous": model(d.previous),
            "shadow": model(d.shadow),
            "health": d.health,
            "buffer_depth": d.buffer_depth,
            "revoked_at": d.revoked_at,
        }


class DevicePage(Document):
    """A page of devices in id order; ``next`` is the ``after`` of the next page."""

    devices: list[DeviceOut]
    next: str | None


class DeviceDetail(DeviceOut):
    """One device, with the highest metrics sequence number stored without a gap."""

    metrics_seq: int


class DeployRequest(BaseModel):
    """Body of ``POST /v1/devices/{id}/deploy``."""

    name: str
    version: int = Field(ge=1, le=2**53)
    mode: Literal["active", "shadow"] = "active"
    downgrade: bool = False
    probation: dict[str, Any] | None = None
    ttl_s: int = Field(default=7 * 24 * 3600, ge=60)


class DeployOut(Document):
    """The directive published for a deploy."""

    device_id: str
    seq: int
    model: str
    version: int
    mode: Literal["active", "shadow"]
    expires_at: int


class EventModel(Document):
    """A model version as an event names it (keys in canonical order)."""

    name: str
    sha256: str | None
    version: int


class EventOut(Document):
    """A stored deployment event with its id; the event's own keys in canonical (sorted)
    order, as devices sent them."""

    id: int
    detail: str
    device_id: str
    directive_seq: int | None
    format: str
    kind: str
    model: EventModel | None
    progress: Number | None
    ts: Number

    @classmethod
    def of(cls, record: EventRecord) -> EventOut:
        """A stored event: its id, then the event's canonical keys."""
        return cls.model_validate({"id": record.id, **json.loads(record.event.to_bytes())})


class EventPage(Document):
    """Events, oldest first; ``next`` is the ``after_id`` of the next page."""

    events: list[EventOut]
    next: int | None


# --- models, bundles and drift -------------------------------------------------------


class ModelOut(Document):
    """A model name with its latest version."""

    name: str
    latest_version: int | None
    created: Number


class ModelList(Document):
    """Every model name."""

    models: list[ModelOut]


class QuantizationOut(Document):
    """Affine quantization: ``real = scale * (q - zero_point)``."""

    scale: Number
    zero_point: int


class TensorOut(Document):
    """A model input or output."""

    name: str
    dtype: str
    shape: list[int]
    quantization: QuantizationOut | None


class VersionOut(Document):
    """A registered model version (one signed bundle)."""

    name: str
    version: int
    sha256: str
    size: int
    created: Number
    status: str
    quantization: str
    lineage: dict[str, Any]
    inputs: list[TensorOut]
    outputs: list[TensorOut]

    @classmethod
    def of(cls, v: RegisteredVersion) -> VersionOut:
        """A registered version as the API shows it."""
        return cls(
            name=v.name,
            version=v.version,
            sha256=v.sha256,
            size=v.size,
            created=v.created,
            status=v.status.value,
            quantization=v.quantization,
            lineage=v.lineage,
            inputs=[TensorOut.model_validate(t.to_json()) for t in v.inputs],
            outputs=[TensorOut.model_validate(t.to_json()) for t in v.outputs],
        )


class VersionList(Document):
    """Every registered version of a model, lowest first."""

    versions: list[VersionOut]


class DriftDecisionOut(Document):
    """One verdict over a set of distributions, with the deciding one."""

    verdict: DriftVerdict
    n: int
    n_needed: int | None
    drifted: list[str]
    worst: str | None
    detail: str


class DriftRuleOut(Document):
    """The rule a report was decided with."""

    alpha: Number
    psi: Number | None
    js: Number | None
    hellinger: Number | None
    psi_major: Number
    power: Number
    min_expected: Number
    dataset_share: Number


class FeatureDriftOut(Document):
    """The verdict on one distribution with its evidence (see ``docs/drift.md``)."""

    name: str
    n: int
    m: int
    psi: Number | None
    js: Number | None
    hellinger: Number | None
    statistic: Number | None
    df: int | None
    p_value: Number | None
    p_adjusted: Number | None
    threshold: Number | None
    alpha: Number
    n_needed: int | None
    m_needed: int | None
    effect_reached: bool
    drifted: bool
    verdict: DriftVerdict
    reason: str


class DataQualityOut(Document):
    """One feature's NaN and out-of-range rates."""

    name: str
    nan_rate: Number
    out_of_range_rate: Number


class AccuracyOut(Document):
    """The label-free accuracy estimate, or why there is none."""

    status: str
    label: str
    value: Number | None
    low: Number | None
    high: Number | None
    n: int
    reason: str | None
    mean_confidence: Number | None
    class_mix: list[Number] | None
    holdout_accuracy: Number | None
    exact_sums: bool
    input_distance: Number | None
    typicality_ratio: Number | None


class OutputShiftOut(Document):
    """How one output of a model that is not a classifier moved (``hub.drift.OutputShift``)."""

    name: str
    n: int
    mean: Number | None
    std: Number | None
    reference_mean: Number | None
    reference_std: Number | None
    mean_shift_sd: Number | None
    std_ratio: Number | None
    cut: Number | None
    rate: Number | None
    reference_rate: Number | None


class ChannelValuesOut(Document):
    """Effect sizes of one tensor channel's values at every position (shown, not tested)."""

    name: str
    values: int
    psi: Number | None
    js: Number | None
    hellinger: Number | None
    nan_rate: Number


class DriftReportOut(Document):
    """A version's drift and health over merged windows."""

    model: str
    version: int
    role: str
    start: Number
    end: Number
    n: int
    min_count: int
    rule: DriftRuleOut
    decision: DriftDecisionOut
    features: list[FeatureDriftOut]
    drifted_share: Number | None
    dataset_drift: bool | None
    # A classifier's report has prediction and confidence; another output kind's has
    # output_kind and output_shift instead; a tensor input's may add channel_values.
    # Unset ones are not written (the route excludes them), so each keeps its exact keys.
    prediction: FeatureDriftOut | None = None
    confidence: FeatureDriftOut | None = None
    output_kind: str | None = None
    output_shift: list[OutputShiftOut] | None = None
    channel_values: list[ChannelValuesOut] | None = None
    data_quality: list[DataQualityOut]
    error_rates: dict[str, Number]
    latency_ms: dict[str, Number | None] | None
    accuracy_estimate: Number | None
    reference_accuracy_estimate: Number | None
    agreement: Number | None
    compared: int
    accuracy: AccuracyOut | None


class DriftOut(Document):
    """Drift of a version over a scope: ``report`` is null when no window counts."""

    model: str
    version: int
    since: Number | None
    n: int
    decision: DriftDecisionOut
    report: DriftReportOut | None


# --- rollouts -------------------------------------------------------------------------


class GatesOut(Document):
    """A stage's gates."""

    min_success_share: Number
    max_failure_share: Number
    max_psi: Number | None
    max_js: Number | None
    max_latency_ratio: Number | None
    min_shadow_agreement: Number | None
    min_count: int
    min_predictions: int
    max_evidence_wait_s: Number | None


class StageOut(Document):
    """One stage of a rollout."""

    share: Number | None
    count: int | None
    bake_s: Number
    gates: GatesOut
    mode: Literal["active", "shadow"]


class SelectorOut(Document):
    """Which devices a rollout may select."""

    tags: list[str]
    device_ids: list[str]


class ProbationOut(Document):
    """The probation rules a rollout's directives carry."""

    window_s: Number
    min_predictions: int
    max_error_rate: Number
    max_latency_p95_ms: Number | None
    max_crashes: int


class RolloutSpecOut(Document):
    """A rollout's spec, as started."""

    format: str
    id: str
    model: str
    target_version: int
    previous_version: int | None
    selector: SelectorOut
    stages: list[StageOut]
    promotion: str
    on_failure: str
    stale_after_s: Number
    probation: ProbationOut
    on_insufficient: str


class TransitionOut(Document):
    """One change of a rollout's state."""

    at: Number
    from_: str = Field(alias="from")
    to: str
    stage: int
    reason: str


class GateResultOut(Document):
    """A gate's last value, limit and verdict."""

    name: str
    value: Number | None
    limit: Number | None
    verdict: str
    detail: str


class StageDevicesOut(Document):
    """The devices one stage adds, by status, offline and never seen."""

    stage: int
    devices: int
    reached: bool
    statuses: dict[str, int]
    offline: int
    never_seen: int


class RolloutOut(Document):
    """A rollout: spec, state, stage, history, touched devices, gate values."""

    format: str
    spec: RolloutSpecOut
    state: str
    stage: int
    stage_started_at: Number | None
    history: list[TransitionOut]
    touched: list[str]
    gates: list[GateResultOut]


class RolloutDetail(RolloutOut):
    """One rollout; ``stage_devices`` only when asked for (``devices=true``)."""

    stage_devices: list[StageDevicesOut] | None = None


class RolloutList(Document):
    """Rollouts, oldest first."""

    rollouts: list[RolloutOut]


# --- audit ----------------------------------------------------------------------------


class AuditEntryOut(Document):
    """One entry of the hash-chained audit log."""

    id: int
    ts: Number
    actor: str
    action: str
    target: str
    details: dict[str, Any]
    prev_hash: str
    hash: str


class AuditPage(Document):
    """Audit entries, oldest first, and whether the whole chain verifies."""

    entries: list[AuditEntryOut]
    verified: bool
    problem: str | None


# --- fleet and alerts -----------------------------------------------------------------


class VersionCount(Document):
    """How many (non-revoked) devices run a model version, active or in shadow."""

    model: str
    version: int
    active: int
    shadow: int


class FleetSummary(Document):
    """Device counts by connection state and by model version."""

    total: int
    online: int
    offline: int
    never_seen: int
    without_model: int
    buffered_windows: int
    versions: list[VersionCount]
    generated_at: Number


class LatestEvents(Document):
    """The newest events, oldest first; ``next`` is always null (resume with
    ``/v1/events?after_id=`` or the stream from the last id)."""

    events: list[EventOut]
    next: None = None


class AlertOut(Document):
    """One recorded alert transition; ``open``: a firing that is still in force (the
    latest transition of its rule)."""

    id: int
    rule: str
    state: Literal["firing", "resolved"]
    value: Number | None
    ts: Number
    delivery: str
    open: bool


class AlertPage(Document):
    """Alert transitions, newest first; ``firing`` counts the rules firing now (on this
    page or not); ``next`` is the ``before_id`` of the next page (null: the last)."""

    alerts: list[AlertOut]
    firing: int
    next: int | None
