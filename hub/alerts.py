"""Alert rules over fleet metrics: fire, resolve, record, and call a webhook.

A rule (:class:`AlertRule`, loaded from strict JSON) names a metric, a comparison
against a threshold, how long the condition must hold before it fires
(``sustained_s``), a cooldown between firings (``cooldown_s``) and a scope (model
and version, optionally one device or one tag). The webhook is the hook for an
automated retraining pipeline.

Three layers, pure logic apart from I/O:

- :func:`evaluate` is the pure state machine: ``(rule, value, now, state) ->
  (new_state, transition)`` with ``transition`` None, ``"firing"`` or ``"resolved"``.
  A condition must hold at every evaluation for ``sustained_s`` seconds (a value that
  misses the condition, or None, restarts the count); a firing rule does not fire
  again; it resolves at the first evaluation where the value is known and misses the
  condition; after a firing, no new firing happens before ``cooldown_s`` has passed.
  A value of None (not enough data) never fires, and never resolves a firing rule.
- :func:`metric_value` extracts a metric from a :class:`~hub.drift.DriftReport` or
  from device records.
- :class:`Alerter` computes every rule's value from the store (windows merged over
  the last ``window_s`` seconds), evaluates, and on a transition records a row in the
  ``alerts`` table of the hub's SQLite file and POSTs a JSON document to the webhook
  (``timeout`` 5 s, up to ``retries`` retries with exponential backoff; its ``drift``
  field is the drift decision behind a report metric's value, with its evidence). Webhook
  failures are logged in one line and recorded on the row; they never reach the caller.
  The webhook URL is logged without its credentials, query or fragment.

Metrics (``None`` when there is not enough data; drift metrics use the one decision
rule of :mod:`hub.drift`, the same code as reports and rollout gates, and are None
while the rule says ``insufficient``, so no alert fires or resolves on a guess):

======================== ==============================================================
``drift``                1 when the rule says drift (or major) on any distribution of
                         the scope, 0 when it says none or minor (fire with ``> 0.5``)
``drifted_features``     how many distributions the rule says drifted
``psi_max``              highest PSI over the decided features (an effect size)
``js_max``               highest Jensen-Shannon distance over the decided features
``drifted_share``        drifted / decided features
``prediction_psi``       PSI of the predicted-class distribution, once decided
``error_rate``           errors of every kind / attempts (predictions plus errors)
``latency_p95_ms``       estimated p95 latency
``nan_rate_max``         highest per-feature NaN rate
``offline_devices_share`` offline / all devices in scope (from device records)
``identity_conflicts``   devices in scope with an ``identity_conflict`` event (two
                         devices writing under one id, :mod:`hub.store`) in the window
======================== ==============================================================

Every metric but the two device metrics comes from a drift report and needs the
scope's model and version. The hub always evaluates :data:`BUILTIN_RULES` (today one:
``identity-conflict``, firing while any device had an identity conflict in the last
window) before the operator's rules.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, Literal, get_args
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx

from edge_agent.contract.canonical import canonical_bytes, parse_json
from edge_agent.contract.fields import exact_fields, positive_int, safe_name
from edge_agent.contract.fields import field as get
from edge_agent.contract.messages import EventKind
from edge_agent.contract.reference import ReferenceStats
from edge_agent.errors import EdgeFleetError, ValidationError
from edge_agent.urls import redact_url
from hub.db import open_database, open_read_only
from hub.drift import DEFAULT_THRESHOLDS, DriftReport, DriftThresholds
from hub.errors import HubError
from hub.operations import DriftQueries, DriftScope
from hub.store import DeviceRecord, Store

log = logging.getLogger("edgefleet.hub.alerts")

Metric = Literal[
    "drift",
    "drifted_features",
    "psi_max",
    "js_max",
    "drifted_share",
    "prediction_psi",
    "error_rate",
    "latency_p95_ms",
    "nan_rate_max",
    "offline_devices_share",
    "identity_conflicts",
]
Comparison = Literal[">", "<"]
Transition = Literal["firing", "resolved"]

METRICS: Final[tuple[str, ...]] = get_args(Metric)
#: Metrics computed from device records rather than from a drift report.
DEVICE_METRICS: Final = frozenset({"offline_devices_share", "identity_conflicts"})
ALERT_FORMAT: Final = "edgefleet-alert/1"
#: Largest rule file :func:`load_rules` accepts.
MAX_RULES_BYTES: Final = 1 << 20


class AlertError(HubError):
    """The alerter cannot be set up (its ``alerts`` table cannot be opened or created)."""


# ---------------------------------------------------------------------------
# Rules


@dataclass(frozen=True)
class Scope:
    """What a rule looks at: a model version (``role`` windows), one device or one tag."""

    model: str | None = None
    version: int | None = None
    device: str | None = None
    tag: str | None = None
    role: str = "active"

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "model": self.model,
            "version": self.version,
            "device": self.device,
            "tag": self.tag,
            "role": self.role,
        }

    @classmethod
    def from_json(cls, value: Any, where: str) -> Scope:
        """Parse the JSON form (every field optional; ``role`` defaults to ``active``).

        Raises:
            ValidationError: malformed, a version without a model, both a device and a
                tag, or a role other than ``active``/``shadow``.
        """
        keys = frozenset({"model", "version", "device", "tag", "role"})
        obj = exact_fields(value, where, set(), keys)

        def name(key: str) -> str | None:
            v = obj.get(key)
            return None if v is None else safe_name(v, f"{where}.{key}")

        version = None if obj.get("version") is None else positive_int(obj, "version", where)
        role = "active" if obj.get("role") is None else get(obj, "role", str, where)
        scope = cls(name("model"), version, name("device"), name("tag"), role)
        if scope.version is not None and scope.model is None:
            raise ValidationError(f"{where}: a version needs a model")
        if scope.device is not None and scope.tag is not None:
            raise ValidationError(f"{where}: give a device or a tag, not both")
        if role not in ("active", "shadow"):
            raise ValidationError(f"{where}.role: expected 'active' or 'shadow', got {role!r}")
        return scope

    def describe(self) -> str:
        """A short human form, e.g. ``m v3 tag=north``."""
        parts = [] if self.model is None else [self.model]
        if self.version is not None:
            parts.append(f"v{self.version}")
        if self.device is not None:
            parts.append(f"device={self.device}")
        if self.tag is not None:
            parts.append(f"tag={self.tag}")
        return " ".join(parts) or "fleet"


@dataclass(frozen=True)
class AlertRule:
    """One alert rule: ``metric comparison threshold`` held for ``sustained_s`` seconds."""

    name: str
    metric: Metric
    comparison: Comparison
    threshold: float
    sustained_s: float = 0.0
    cooldown_s: float = 0.0
    scope: Scope = Scope()

    def holds(self, value: float | None) -> bool:
        """Whether ``value`` meets the condition (None and NaN never do)."""
        if value is None or math.isnan(value):
            return False
        return value > self.threshold if self.comparison == ">" else value < self.threshold

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "name": self.name,
            "metric": self.metric,
            "comparison": self.comparison,
            "threshold": self.threshold,
            "sustained_s": self.sustained_s,
            "cooldown_s": self.cooldown_s,
            "scope": self.scope.to_json(),
        }

    @classmethod
    def from_json(cls, value: Any, where: str = "rule") -> AlertRule:
        """Parse one rule's JSON object (``cooldown_s`` optional, default 0).

        Raises:
            ValidationError: a field is missing, unknown, mistyped or out of range
                (unknown metric or comparison, non-finite threshold, negative
                durations), or a drift metric's scope lacks a model and version.
        """
        obj = exact_fields(
            value,
            where,
            {"name", "metric", "comparison", "threshold", "sustained_s", "scope"},
            frozenset({"cooldown_s"}),
        )
        name = safe_name(obj["name"], f"{where}.name")
        metric = get(obj, "metric", str, where)
        if metric not in METRICS:
            raise ValidationError(
                f"{where}.metric: unknown metric {metric!r} (one of {', '.join(METRICS)})"
            )
        comparison = get(obj, "comparison", str, where)
        if comparison not in (">", "<"):
            raise ValidationError(f"{where}.comparison: expected '>' or '<', got {comparison!r}")
        threshold = get(obj, "threshold", float, where)
        if not math.isfinite(threshold):
            raise ValidationError(f"{where}.threshold: must be finite")
        sustained = _duration(obj, "sustained_s", where)
        cooldown = _duration(obj, "cooldown_s", where) if "cooldown_s" in obj else 0.0
        scope = Scope.from_json(obj["scope"], f"{where}.scope")
        if metric not in DEVICE_METRICS and (scope.model is None or scope.version is None):
            raise ValidationError(f"{where}.scope: metric {metric} needs a model and a version")
        return cls(
            name,
            metric,  # type: ignore[arg-type]
            comparison,  # type: ignore[arg-type]
            threshold,
            sustained,
            cooldown,
            scope,
        )


def _duration(obj: dict[str, Any], key: str, where: str) -> float:
    value = get(obj, key, float, where)
    if not math.isfinite(value) or value < 0:
        raise ValidationError(f"{where}.{key}: must be a finite number of seconds >= 0")
    return value


def load_rules(data: bytes) -> tuple[AlertRule, ...]:
    """Parse a rule file: a JSON array of rules, or an object with a ``rules`` array.

    Rule names must be unique.

    Raises:
        ValidationError: too large, not JSON, or a malformed or duplicate rule (one line
            naming it).
    """
    if len(data) > MAX_RULES_BYTES:
        raise ValidationError(f"rules: {len(data)} bytes is over {MAX_RULES_BYTES}")
    doc = parse_json(data, "rules")
    items = exact_fields(doc, "rules", {"rules"})["rules"] if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise ValidationError("rules: expected an array of rules")
    rules = tuple(AlertRule.from_json(r, f"rules[{i}]") for i, r in enumerate(items))
    seen: set[str] = set()
    for r in rules:
        if r.name in seen:
            raise ValidationError(f"rules: rule name {r.name!r} is used twice")
        seen.add(r.name)
    return rules


# ---------------------------------------------------------------------------
# Pure evaluation


@dataclass(frozen=True)
class RuleState:
    """Where a rule stands between evaluations.

    ``since``: when the condition started holding without a break (None when it does
    not hold now); ``last_fired``: when the rule last fired (for the cooldown).
    """

    firing: bool = False
    since: float | None = None
    last_fired: float | None = None


def evaluate_rule(
    rule: AlertRule, value: float | None, now: float, state: RuleState
) -> tuple[RuleState, Transition | None]:
    """Evaluate ``rule`` on ``value`` at ``now``; returns the new state and the transition.

    See the module doc for the semantics. A clock that went backwards counts as no
    time passing. Never raises.
    """
    known = value is not None and not math.isnan(value)
    holds = rule.holds(value)
    if state.firing:
        if holds or not known:
            return state, None
        return RuleState(firing=False, since=None, last_fired=state.last_fired), "resolved"
    if not holds:
        return replace(state, since=None), None
    since = now if state.since is None else state.since
    sustained = max(0.0, now - since) >= rule.sustained_s
    cooled = state.last_fired is None or now - state.last_fired >= rule.cooldown_s
    if sustained and cooled:
        return RuleState(firing=True, since=since, last_fired=now), "firing"
    return replace(state, since=since), None


def metric_value(
    rule: AlertRule, report: DriftReport | None, devices: Iterable[DeviceRecord] = ()
) -> float | None:
    """The rule's metric from a drift report, or from ``devices`` for device metrics.

    None when there is not enough data: no report, no reported feature or score, no
    attempts, no timed invocation, or no device. ``offline_devices_share`` only uses
    ``devices`` (the caller picks those in scope). Never raises.
    """
    if rule.metric == "offline_devices_share":
        recs = list(devices)
        return sum(not d.online for d in recs) / len(recs) if recs else None
    if rule.metric == "identity_conflicts":  # the caller passes the conflicted devices
        return float(len(list(devices)))
    if report is None:
        return None
    m = rule.metric
    decision = report.decision
    if m == "drift":
        if decision.drifted_any:
            return 1.0
        return 0.0 if decision.decided else None
    if m == "drifted_features":
        return float(len(decision.drifted)) if decision.drifted or decision.decided else None
    if m in ("psi_max", "js_max"):
        decided = [f for f in report.features if f.verdict != "insufficient"]
        scores = [f.psi if m == "psi_max" else f.js for f in decided]
        known = [s for s in scores if s is not None]
        return max(known) if known else None
    if m == "drifted_share":
        return report.drifted_share
    if m == "prediction_psi":
        pred = report.prediction  # None for a model that is not a classifier
        return None if pred is None or pred.verdict == "insufficient" else pred.psi
    if m == "error_rate":
        if report.n == 0 and not report.error_rates:
            return None
        return float(sum(report.error_rates.values()))
    if m == "latency_p95_ms":
        return None if report.latency_ms is None else report.latency_ms.get("p95")
    # nan_rate_max
    if report.n == 0 or not report.data_quality:
        return None
    return max(d.nan_rate for d in report.data_quality)


#: Rules the hub always evaluates, before any from the operator's rule file.
BUILTIN_RULES: Final[tuple[AlertRule, ...]] = (
    AlertRule(
        name="identity-conflict",
        metric="identity_conflicts",
        comparison=">",
        threshold=0.0,
    ),
)


# ---------------------------------------------------------------------------
# The alerter


@dataclass(frozen=True)
class AlertRecord:
    """One transition, as recorded in the ``alerts`` table (``id`` None if not stored)."""

    id: int | None
    rule: str
    state: Transition
    value: float | None
    ts: float
    delivery: str


@dataclass(frozen=True)
class AlertLog:
    """A page of recorded transitions, newest first, as :func:`read_alerts` returns it.

    ``open_ids`` are the ids of the rows that are firing transitions still in force (the
    latest transition recorded for their rule); ``firing`` counts every such rule, on
    this page or not; ``next`` is the ``before_id`` of the next page (None: last page).
    """

    alerts: list[AlertRecord]
    open_ids: frozenset[int]
    firing: int
    next: int | None


def read_alerts(
    db_path: Path | str,
    *,
    state: Transition | None = None,
    open_only: bool = False,
    before_id: int | None = None,
    limit: int = 100,
) -> AlertLog:
    """Read the ``alerts`` table of the hub's SQLite file (read-only; another process,
    the alerter, writes it): transitions newest first, at most ``limit``, with ids below
    ``before_id``; only ``state`` transitions, and with ``open_only`` only the firing
    ones still in force. A file without the table (no alert rule ever ran) has none.

    Raises:
        AlertError: SQLite failed.
        ValueError: ``limit`` < 1.
    """
    if limit < 1:
        raise ValueError("alerts: limit must be >= 1")
    latest = "SELECT MAX(id) FROM alerts GROUP BY rule"
    where: list[str] = []
    params: list[Any] = []
    if state is not None:
        where.append("state = ?")
        params.append(state)
    if open_only:
        where.append(f"state = 'firing' AND id IN ({latest})")
    if before_id is not None:
        where.append("id < ?")
        params.append(before_id)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    try:
        conn = open_read_only(Path(db_path))
    except sqlite3.Error as exc:
        raise AlertError(f"alerts: cannot open {db_path}: {exc}") from exc
    try:
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alerts'"
        ).fetchone()
        if exists is None:
            return AlertLog([], frozenset(), 0, None)
        rows = conn.execute(
            f"SELECT id, rule, state, value, ts, delivery FROM alerts{clause}"  # noqa: S608
            " ORDER BY id DESC LIMIT ?",
            (*params, limit),
        ).fetchall()
        open_ids = frozenset(
            int(r[0])
            for r in conn.execute(
                f"SELECT id FROM alerts WHERE state = 'firing' AND id IN ({latest})"  # noqa: S608
            )
        )
    except sqlite3.Error as exc:
        raise AlertError(f"alerts: cannot read {db_path}: {exc}") from exc
    finally:
        conn.close()
    records = [AlertRecord(int(r[0]), str(r[1]), r[2], r[3], float(r[4]), str(r[5])) for r in rows]
    last = records[-1].id if len(records) == limit else None
    return AlertLog(records, open_ids, len(open_ids), last)


class Alerter:
    """Evaluates rules against the store and reports transitions to a webhook.

    ``reference_for(model, version)`` gives the bundle's reference statistics.
    :meth:`tick` is thread-safe (ticks are serialised); :meth:`start`/:meth:`stop`
    run it on a background thread. Rule state is kept in memory; a firing rule is
    restored from the ``alerts`` table when the alerter is created.
    """

    def __init__(
        self,
        store: Store,
        reference_for: Callable[[str, int], ReferenceStats],
        rules: Sequence[AlertRule],
        webhook_url: str | None = None,
        *,
        clock: Callable[[], float] = time.time,
        window_s: float = 3600.0,
        min_count: int = 1,
        thresholds: DriftThresholds = DEFAULT_THRESHOLDS,
        timeout_s: float = 5.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """Open the ``alerts`` table in the store's SQLite file (creating it if needed).

        ``retries`` is how many times a failed POST is retried after the first try,
        waiting ``backoff_s * 2**k`` before retry ``k``. ``thresholds`` is the drift
        decision rule (:mod:`hub.drift`); ``min_count`` an extra floor on the
        predictions a distribution needs before it is tested. Each evaluation is one
        look at the last ``window_s`` seconds at the rule's alpha; ``sustained_s``
        spanning several windows keeps repeated looks from firing on one unlucky one.

        Raises:
            AlertError: the table cannot be created or read.
            ValueError: duplicate rule names, ``window_s`` <= 0, ``retries`` < 0 or
                ``backoff_s`` < 0.
        """
        names = [r.name for r in rules]
        if len(set(names)) != len(names):
            raise ValueError("alerts: rule names must be unique")
        if window_s <= 0 or retries < 0 or backoff_s < 0:
            raise ValueError("alerts: window_s must be > 0, retries and backoff_s >= 0")
        self._store = store
        self._drift = DriftQueries(store, reference_for)
        self.rules: tuple[AlertRule, ...] = tuple(rules)
        self._url = webhook_url
        self._safe_url = None if webhook_url is None else redact_url(webhook_url)
        self._clock = clock
        self._window_s = window_s
        self._min_count = min_count
        self._thresholds = thresholds
        self._timeout = httpx.Timeout(timeout_s)
        self._retries = retries
        self._backoff_s = backoff_s
        self._transport = transport or httpx.HTTPTransport()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Per rule, the drift decision behind its last value (the webhook sends it).
        self._evidence: dict[str, dict[str, Any]] = {}
        self._conn = open_database(store.path, label=f"alerts {store.path}", error=AlertError)
        try:
            self._states = self._restore()
        except sqlite3.Error as exc:
            raise AlertError(
                f"alerts: cannot open the alerts table in {store.path}: {exc}"
            ) from exc

    # --- lifecycle ----------------------------------------------------------------

    def start(self, interval_s: float = 60.0) -> None:
        """Run :meth:`tick` every ``interval_s`` seconds on a daemon thread.

        Raises:
            ValueError: ``interval_s`` <= 0.
            RuntimeError: already started.
        """
        if interval_s <= 0:
            raise ValueError("alerts: interval_s must be > 0")
        if self._thread is not None:
            raise RuntimeError("alerts: already started")
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(interval_s,), name="edgefleet-alerts", daemon=True
        )
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the background thread (waits for a tick in progress). Idempotent."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout_s)

    def close(self) -> None:
        """Stop, then close the alerter's database connection and HTTP transport."""
        self.stop()
        with self._lock:
            self._conn.close()
            self._transport.close()

    def _run(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            self.tick()

    # --- evaluation -----------------------------------------------------------------

    def state(self, rule: str) -> RuleState:
        """The current state of the rule named ``rule`` (a fresh state if unknown)."""
        return self._states.get(rule, RuleState())

    def tick(self, now: float | None = None) -> list[AlertRecord]:
        """Evaluate every rule at ``now`` (default: the clock); returns the transitions.

        Never raises for a rule whose value cannot be computed (logged; the value is
        then None), a database write that fails (logged; ``id`` None) or a webhook
        that fails (logged; ``delivery`` says why).
        """
        now = self._clock() if now is None else now
        out: list[AlertRecord] = []
        with self._lock:
            for rule in self.rules:
                value = self._value(rule, now)
                state, transition = evaluate_rule(rule, value, now, self.state(rule.name))
                self._states[rule.name] = state
                if transition is not None:
                    out.append(self._report(rule, transition, value, now))
        return out

    def alerts(self, rule: str | None = None, limit: int = 100) -> list[AlertRecord]:
        """Recorded transitions, newest first, at most ``limit``.

        Raises:
            AlertError: SQLite failed.
        """
        sql = "SELECT id, rule, state, value, ts, delivery FROM alerts"
        params: tuple[Any, ...] = ()
        if rule is not None:
            sql, params = f"{sql} WHERE rule = ?", (rule,)
        with self._lock:
            try:
                rows = self._conn.execute(f"{sql} ORDER BY id DESC LIMIT ?", (*params, limit))
                return [
                    AlertRecord(int(r[0]), str(r[1]), r[2], r[3], float(r[4]), str(r[5]))
                    for r in rows.fetchall()
                ]
            except sqlite3.Error as exc:
                raise AlertError(f"alerts: cannot read: {exc}") from exc

    def _restore(self) -> dict[str, RuleState]:
        rows = self._conn.execute(
            "SELECT rule, state, ts FROM alerts WHERE id IN (SELECT MAX(id) FROM alerts"
            " GROUP BY rule)"
        ).fetchall()
        return {
            str(r[0]): RuleState(firing=True, since=float(r[2]), last_fired=float(r[2]))
            for r in rows
            if r[1] == "firing"
        }

    def _value(self, rule: AlertRule, now: float) -> float | None:
        self._evidence.pop(rule.name, None)
        try:
            if rule.metric == "identity_conflicts":
                conflicted = self._store.devices_with_event(
                    EventKind.IDENTITY_CONFLICT, now - self._window_s
                )
                in_scope = [d for d in self._devices(rule.scope) if d.id in conflicted]
                return metric_value(rule, None, in_scope)
            if rule.metric in DEVICE_METRICS:
                return metric_value(rule, None, self._devices(rule.scope))
            s = rule.scope
            if s.model is None or s.version is None:
                log.warning("alerts: rule %s: %s needs a model and version", rule.name, rule.metric)
                return None
            scope = DriftScope(s.model, s.version, s.role, device=s.device, tag=s.tag)
            report = self._drift.fetch(scope, now - self._window_s).report(
                min_count=self._min_count, thresholds=self._thresholds
            )
            if report is None:
                return None
            self._evidence[rule.name] = report.decision.to_json()
            return metric_value(rule, report)
        except (EdgeFleetError, LookupError, OSError, ValueError) as exc:
            log.warning("alerts: rule %s: no value (%s)", rule.name, _one_line(exc))
            return None

    def _devices(self, scope: Scope) -> list[DeviceRecord]:
        if scope.device is not None:
            rec = self._store.device(scope.device)
            devices = [] if rec is None else [rec]
        else:
            devices = self._store.all_devices(tag=scope.tag)
        if scope.model is not None:
            devices = [
                d
                for d in devices
                if d.active is not None
                and d.active.name == scope.model
                and (scope.version is None or d.active.version == scope.version)
            ]
        return devices

    # --- reporting ------------------------------------------------------------------

    def _report(
        self, rule: AlertRule, transition: Transition, value: float | None, now: float
    ) -> AlertRecord:
        log.info(
            "alerts: rule %s %s (%s %s = %s, threshold %s)",
            rule.name, transition, rule.scope.describe(), rule.metric, value, rule.threshold,
        )  # fmt: skip
        delivery = "pending" if self._url is not None else "no webhook"
        alert_id: int | None = None
        try:
            cur = self._conn.execute(
                "INSERT INTO alerts (rule, state, value, ts, delivery) VALUES (?, ?, ?, ?, ?)",
                (rule.name, transition, value, now, delivery),
            )
            alert_id = cur.lastrowid
        except sqlite3.Error as exc:
            log.warning("alerts: rule %s: cannot record the alert (%s)", rule.name, exc)
        if self._url is not None:
            doc = {
                "format": ALERT_FORMAT,
                "id": alert_id,
                "rule": rule.name,
                "state": transition,
                "metric": rule.metric,
                "value": value,
                "comparison": rule.comparison,
                "threshold": rule.threshold,
                "sustained_s": rule.sustained_s,
                "scope": rule.scope.to_json(),
                "ts": now,
                "drift": self._evidence.get(rule.name),
            }
            delivery = self._post(self._url, doc, rule.name)
            if alert_id is not None:
                try:
                    self._conn.execute(
                        "UPDATE alerts SET delivery = ? WHERE id = ?", (delivery, alert_id)
                    )
                except sqlite3.Error as exc:
                    log.warning("alerts: rule %s: cannot record delivery (%s)", rule.name, exc)
        return AlertRecord(alert_id, rule.name, transition, value, now, delivery)

    def _post(self, url: str, doc: dict[str, Any], rule: str) -> str:
        """POST ``doc``; returns ``delivered`` or ``failed: <why>``. Never raises."""
        try:
            body = canonical_bytes(doc)
            request = _request(url, body, self._timeout)
        except (EdgeFleetError, ValueError, httpx.InvalidURL) as exc:
            why = f"failed: {_one_line(exc)}"
            log.warning("alerts: webhook %s for rule %s %s", self._safe_url, rule, why)
            return why
        why = ""
        for attempt in range(self._retries + 1):
            if attempt:
                # An Event wait, so stop() cuts the backoff short.
                self._stop.wait(self._backoff_s * 2 ** (attempt - 1))
            why = self._send(request)
            if not why:
                return "delivered"
            if why.startswith("HTTP 4") and why != "HTTP 429":
                break  # the hook refuses this document: retrying will not help
        tries = attempt + 1
        failed = f"failed after {tries} {'try' if tries == 1 else 'tries'}: {why}"
        log.warning("alerts: webhook %s for rule %s %s", self._safe_url, rule, failed)
        return failed

    def _send(self, request: httpx.Request) -> str:
        """One POST through the transport (no client, so httpx logs no URL); "" when 2xx."""
        try:
            response = self._transport.handle_request(request)
            try:
                response.read()
            finally:
                response.close()
        except httpx.HTTPError as exc:
            return type(exc).__name__
        if 200 <= response.status_code < 300:
            return ""
        return f"HTTP {response.status_code}"


def _request(url: str, body: bytes, timeout: httpx.Timeout) -> httpx.Request:
    """The POST request; credentials in the URL become a Basic authorization header.

    Raises:
        ValueError: not an http(s) URL with a host.
        httpx.InvalidURL: httpx refuses the URL.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("webhook URL must be http(s) with a host")
    headers = {"content-type": "application/json", "user-agent": "edgefleet-hub-alerts"}
    netloc = parts.netloc.rpartition("@")[2]
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        headers["authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
    clean = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    return httpx.Request(
        "POST", clean, content=body, headers=headers, extensions={"timeout": timeout.as_dict()}
    )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def rules_to_json(rules: Iterable[AlertRule]) -> str:
    """Serialise rules to the JSON array :func:`load_rules` reads."""
    return json.dumps([r.to_json() for r in rules], indent=2, sort_keys=True)
