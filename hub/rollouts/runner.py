"""Runs the rollout state machine (:mod:`hub.rollouts`) against the live fleet.

Each tick, for every active rollout: the fleet (device tags), the cohort's progress
from the events devices reported, the stage's measurements (drift of the target
version on the cohort, latency p95 against the previous version, shadow agreement),
then :func:`hub.rollouts.evaluate_rollout`; the actions it returns are carried out (signed
directives published, notes audited) and the rollout is saved. All decisions are
the pure state machine's: this module only gathers inputs and performs outputs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from edge_agent.contract.messages import State
from edge_agent.errors import EdgeFleetError
from hub.audit import AuditLog
from hub.errors import NotFoundError
from hub.operations import Deployer, DriftQueries, DriftScope
from hub.registry import Registry
from hub.rollouts import (
    Action,
    DeviceProgress,
    GateResult,
    GateVerdict,
    Notify,
    PublishDirectives,
    Rollout,
    RolloutError,
    RolloutSpec,
    RolloutState,
    RolloutStore,
    StageMetrics,
    StoredRollout,
    abort,
    cohort,
    drift_gate_thresholds,
    ensure_no_conflicts,
    evaluate_rollout,
    new_rollout,
    pause,
    progress,
    promote,
    resume,
    rollback,
    start,
)
from hub.store import Store

log = logging.getLogger("edgefleet.hub")


@dataclass(frozen=True)
class StageDevices:
    """The devices one stage adds to the rollout (its cohort minus the earlier
    stages'), by status (:class:`hub.rollouts.DeviceStatus` values) once the rollout has
    reached the stage; how many of them the hub sees offline now (seen before, not
    connected) and how many it has never seen."""

    stage: int
    devices: int
    reached: bool
    statuses: dict[str, int] = field(default_factory=dict)
    offline: int = 0
    never_seen: int = 0

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "stage": self.stage,
            "devices": self.devices,
            "reached": self.reached,
            "statuses": dict(sorted(self.statuses.items())),
            "offline": self.offline,
            "never_seen": self.never_seen,
        }


class RolloutRunner:
    """Starts, steers and advances rollouts. Thread-safe (one lock around every step)."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        rollouts: RolloutStore,
        deployer: Deployer,
        audit: AuditLog | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Wire the parts; nothing runs before :meth:`start_thread`. Directives go out
        through ``deployer`` (the one deploy path); drift is measured with the one drift
        query over ``store`` and the registry's references."""
        self.store, self.registry, self.rollouts = store, registry, rollouts
        self.deployer, self.audit, self.clock = deployer, audit, clock
        self.drift = DriftQueries(store, registry.reference)
        self._lock = threading.RLock()
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- commands -----------------------------------------------------------------------

    def create(self, spec: RolloutSpec, actor: str = "hub") -> Rollout:
        """Start a rollout.

        Raises:
            RolloutError: an unknown model version, an id in use, or devices another
                active rollout of the same model already targets.
        """
        with self._lock:
            for version in (spec.target_version, spec.previous_version):
                if version is not None and self.registry.get(spec.model, version) is None:
                    raise RolloutError(f"no registered model {spec.model!r} v{version}")
            fleet = self.fleet()
            active = [s.rollout for s in self.rollouts.list(active_only=True)]
            ensure_no_conflicts(spec, active, fleet)
            r, actions = start(new_rollout(spec), self.clock(), devices=fleet)
            self._carry_out(r, actions)
            self.rollouts.save(r)
            self._audit(actor, "rollout.start", spec.id, spec=spec.to_json())
            return r

    def command(self, rollout_id: str, name: str, actor: str = "hub", reason: str = "") -> Rollout:
        """Apply an operator command: pause, resume, promote, abort or rollback.

        Raises:
            RolloutError: unknown rollout or command, or a command its state forbids.
        """
        with self._lock:
            stored = self.rollouts.get(rollout_id)
            r, now, why = stored.rollout, self.clock(), reason or f"operator {actor}"
            commands: dict[str, Callable[[], tuple[Rollout, list[Action]]]] = {
                "pause": lambda: pause(r, now, why),
                "resume": lambda: resume(r, now, why),
                "promote": lambda: promote(r, now, devices=self.fleet()),
                "abort": lambda: abort(r, now, why),
                "rollback": lambda: rollback(r, now, why),
            }
            if name not in commands:
                raise RolloutError(f"unknown command {name!r}; one of {', '.join(commands)}")
            new, actions = commands[name]()
            self._carry_out(new, actions)
            self.rollouts.save(new, stored.version)
            self._audit(actor, f"rollout.{name}", rollout_id, reason=why)
            return new

    def tick(self) -> None:
        """Advance every active rollout by one evaluation (never raises)."""
        with self._lock:
            for stored in self.rollouts.list(active_only=True):
                try:
                    r = stored.rollout
                    fleet = self.fleet()
                    members = cohort(r.spec, r.stage, fleet)
                    progress_map = self._progress(r, members)
                    metrics = self._metrics(r, members, progress_map)
                    new, actions = evaluate_rollout(
                        r, self.clock(), progress_map, metrics, devices=fleet
                    )
                    if new != r:
                        self._carry_out(new, actions)
                        self.rollouts.save(new, stored.version)
                except Exception as exc:  # one rollout's failure must not stop the others
                    self._cannot_evaluate(stored, exc)

    def _cannot_evaluate(self, stored: StoredRollout, exc: Exception) -> None:
        """Say in the rollout's gate status why it could not be evaluated (logged once
        per distinct reason); the rollout waits, and the next tick tries again."""
        r = stored.rollout
        reason = " ".join(f"cannot evaluate: {exc}".split()) or type(exc).__name__
        status = (GateResult("evaluation", None, None, GateVerdict.WAITING, reason),)
        if r.gates == status:
            return
        unexpected = not isinstance(exc, EdgeFleetError | OSError)
        log.error("rollout %s: %s", r.spec.id, reason, exc_info=unexpected)
        try:
            self.rollouts.save(replace(r, gates=status), stored.version)
        except (EdgeFleetError, OSError) as save_exc:
            log.error("rollout %s: status not saved: %s", r.spec.id, save_exc)

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Block until ``predicate()`` holds, re-checked after every tick; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    # --- the thread ---------------------------------------------------------------------

    def start_thread(self, interval_s: float = 1.0) -> None:
        """Run :meth:`tick` every ``interval_s`` seconds."""

        def loop() -> None:
            while not self._stop.wait(interval_s):
                self.tick()
                self._notify()

        self._thread = threading.Thread(target=loop, name="hub-rollouts", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (promptly)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    # --- inputs -------------------------------------------------------------------------

    def fleet(self) -> dict[str, tuple[str, ...]]:
        """Every known device and its tags."""
        return {d.id: d.tags for d in self.store.all_devices()}

    def stage_devices(self, r: Rollout) -> list[StageDevices]:
        """Per stage, its own devices by status (stages the rollout has not reached:
        just how many devices they hold), offline and never seen. Reads each reached
        device's recent events, as a tick does for the current stage.

        Raises:
            StoreError: SQLite failed.
        """
        fleet = self.fleet()
        out: list[StageDevices] = []
        earlier: set[str] = set()
        for i in range(len(r.spec.stages)):
            members = set(cohort(r.spec, i, fleet))
            own = sorted(members - earlier)
            earlier = members
            if i > r.stage and r.state != RolloutState.COMPLETED:
                out.append(StageDevices(i, len(own), reached=False))
                continue
            statuses = Counter(p.status.value for p in self._progress(r, own).values())
            records = [rec for d in own if (rec := self.store.device(d)) is not None]
            offline = sum(1 for rec in records if not rec.online and rec.last_seen is not None)
            never = sum(1 for rec in records if not rec.online and rec.last_seen is None)
            out.append(StageDevices(i, len(own), True, dict(statuses), offline, never))
        return out

    def _progress(self, r: Rollout, members: Sequence[str]) -> dict[str, DeviceProgress]:
        started = r.history[0].at if r.history else 0.0
        out = {}
        now = self.clock()
        for device_id in members:
            events = [
                e.event
                for e in self.store.events(device=device_id, limit=1000)
                if e.event.ts >= started - 1.0
            ]
            record = self.store.device(device_id)
            state = None
            if record is not None:  # what the hub knows now, last will included
                state = State(
                    device_id=device_id,
                    online=record.online,
                    ts=record.last_seen or 0.0,
                    active=record.active,
                    previous=record.previous,
                    shadow=record.shadow,
                )
            out[device_id] = progress(events, state, now, r.spec)
        return out

    def _metrics(
        self, r: Rollout, members: Sequence[str], progress_map: dict[str, DeviceProgress]
    ) -> StageMetrics:
        spec, stage = r.spec, r.current_stage
        since = r.stage_started_at
        role = "shadow" if stage.mode == "shadow" else "active"
        scope = DriftScope(spec.model, spec.target_version, role, devices=tuple(members))
        measured = self.drift.fetch(scope, since)
        ratio = agreement = None
        floor = max(1, stage.gates.min_predictions)  # predictions, not devices
        drift = {
            name: measured.decision(thresholds=rule, min_count=floor)
            for name, rule in drift_gate_thresholds(stage.gates).items()
        }
        report = measured.report()
        if report is not None:
            agreement = report.agreement
            if spec.previous_version is not None:
                p95 = report.latency_ms.get("p95") if report.latency_ms else None
                ratio = self._latency_ratio(p95, spec, since)
        return StageMetrics.from_progress(
            progress_map, drift=drift, latency_ratio=ratio, shadow_agreement=agreement
        )

    def _latency_ratio(
        self, p95: float | None, spec: RolloutSpec, since: float | None
    ) -> float | None:
        if p95 is None or spec.previous_version is None:
            return None
        champion = self.drift.fetch(DriftScope(spec.model, spec.previous_version), since)
        report = champion.report()
        latency = report.latency_ms if report is not None else None
        base = latency.get("p95") if latency else None
        return p95 / base if base else None

    # --- outputs ------------------------------------------------------------------------

    def _carry_out(self, r: Rollout, actions: Sequence[Action]) -> None:
        for action in actions:
            if isinstance(action, PublishDirectives):
                try:
                    ref = self.deployer.bundle_ref(r.spec.model, action.version)
                except NotFoundError:
                    log.error("rollout %s: v%s is not registered", r.spec.id, action.version)
                    continue
                for device_id in action.device_ids:
                    self.deployer.publish(
                        device_id,
                        ref,
                        actor="hub",
                        mode=action.mode,
                        downgrade=action.downgrade,
                        probation=r.spec.probation,
                        rollout=r.spec.id,
                    )
            elif isinstance(action, Notify):
                log.info("rollout %s: %s", r.spec.id, action.message)
                self._audit("hub", "rollout.note", r.spec.id, message=action.message)

    def _audit(self, actor: str, action: str, target: str, **details: Any) -> None:
        if self.audit is not None:
            self.audit.append(actor, action, target, details)
