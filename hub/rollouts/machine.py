"""The rollout state machine, pure: :func:`start`, :func:`evaluate_rollout` and the
operator commands (:func:`pause`, :func:`resume`, :func:`promote`, :func:`abort`,
:func:`rollback`) take a frozen :class:`Rollout` and ``now`` and return a new one plus
:class:`Action` data (:class:`PublishDirectives`, :class:`Notify`) for the caller to
carry out.

States: ``draft`` → ``running`` (stage k) → ``waiting_approval`` → ``paused`` →
``completed`` | ``aborted`` | ``rolled_back``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Final

from edge_agent.contract.fields import exact_fields, list_of, positive_int, safe_name
from edge_agent.contract.fields import field as get
from edge_agent.errors import ValidationError
from hub.rollouts.cohorts import cohort, selected
from hub.rollouts.errors import RolloutConflictError, RolloutStateError
from hub.rollouts.gates import DeviceProgress, GateResult, GateVerdict, StageMetrics, check_gates
from hub.rollouts.spec import ROLLOUT_FORMAT, Fleet, Mode, RolloutSpec, Stage, opt_float

# ---------------------------------------------------------------------------- state machine


class RolloutState(StrEnum):
    """Where a rollout is."""

    DRAFT = "draft"
    RUNNING = "running"
    WAITING_APPROVAL = "waiting_approval"
    PAUSED = "paused"
    COMPLETED = "completed"
    ABORTED = "aborted"
    ROLLED_BACK = "rolled_back"


ACTIVE_STATES: Final = frozenset(
    {RolloutState.RUNNING, RolloutState.WAITING_APPROVAL, RolloutState.PAUSED}
)


@dataclass(frozen=True)
class Transition:
    """One recorded state change."""

    at: float
    from_state: RolloutState
    to_state: RolloutState
    stage: int
    reason: str

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "at": self.at,
            "from": self.from_state.value,
            "to": self.to_state.value,
            "stage": self.stage,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, value: Any, where: str) -> Transition:
        """Parse the JSON form.

        Raises:
            ValidationError: malformed.
        """
        obj = exact_fields(value, where, {"at", "from", "to", "stage", "reason"})
        return cls(
            get(obj, "at", float, where),
            _state(obj, "from", where),
            _state(obj, "to", where),
            positive_int(obj, "stage", where, minimum=0),
            get(obj, "reason", str, where),
        )


def _state(obj: Mapping[str, Any], key: str, where: str) -> RolloutState:
    try:
        return RolloutState(get(obj, key, str, where))
    except ValueError as exc:
        raise ValidationError(f"{where}.{key}: unknown state {obj[key]!r}") from exc


@dataclass(frozen=True)
class PublishDirectives:
    """Publish directives for ``version`` of the rollout's model to these devices."""

    device_ids: tuple[str, ...]
    version: int
    mode: Mode
    downgrade: bool


@dataclass(frozen=True)
class Notify:
    """Tell operators something (audit log, alert, console)."""

    message: str


Action = PublishDirectives | Notify


@dataclass(frozen=True)
class Rollout:
    """A rollout's state: its spec, where it is, how it got there, whom it touched.

    ``touched`` holds every device directives were published to (rollback targets);
    ``gates`` the last gate results of :func:`evaluate`.
    """

    spec: RolloutSpec
    state: RolloutState = RolloutState.DRAFT
    stage: int = 0
    stage_started_at: float | None = None
    history: tuple[Transition, ...] = ()
    touched: tuple[str, ...] = ()
    gates: tuple[GateResult, ...] = ()

    @property
    def active(self) -> bool:
        """Running, waiting for approval or paused."""
        return self.state in ACTIVE_STATES

    @property
    def current_stage(self) -> Stage:
        """The stage the rollout is at."""
        return self.spec.stages[self.stage]

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form (what :class:`RolloutStore` keeps)."""
        return {
            "format": ROLLOUT_FORMAT,
            "spec": self.spec.to_json(),
            "state": self.state.value,
            "stage": self.stage,
            "stage_started_at": self.stage_started_at,
            "history": [t.to_json() for t in self.history],
            "touched": list(self.touched),
            "gates": [g.to_json() for g in self.gates],
        }

    @classmethod
    def from_json(cls, value: Any, where: str = "rollout") -> Rollout:
        """Parse the JSON form strictly.

        Raises:
            ValidationError: malformed, or the stage index is out of range.
        """
        keys = {
            "format", "spec", "state", "stage", "stage_started_at", "history", "touched", "gates",
        }  # fmt: skip
        obj = exact_fields(value, where, keys)
        if get(obj, "format", str, where) != ROLLOUT_FORMAT:
            raise ValidationError(f"{where}.format: expected {ROLLOUT_FORMAT!r}")
        spec = RolloutSpec.from_json(obj["spec"], f"{where}.spec")
        stage = positive_int(obj, "stage", where, minimum=0)
        if stage >= len(spec.stages):
            raise ValidationError(f"{where}.stage: {stage} is past the last stage")
        history = get(obj, "history", list, where)
        gates = get(obj, "gates", list, where)
        return cls(
            spec=spec,
            state=_state(obj, "state", where),
            stage=stage,
            stage_started_at=opt_float(obj, "stage_started_at", where),
            history=tuple(
                Transition.from_json(t, f"{where}.history[{i}]") for i, t in enumerate(history)
            ),
            touched=tuple(
                safe_name(d, f"{where}.touched") for d in list_of(obj, "touched", str, where)
            ),
            gates=tuple(
                GateResult.from_json(g, f"{where}.gates[{i}]") for i, g in enumerate(gates)
            ),
        )


def new_rollout(spec: RolloutSpec) -> Rollout:
    """A draft rollout for ``spec``."""
    return Rollout(spec=spec)


def _move(r: Rollout, now: float, to: RolloutState, reason: str, **changes: Any) -> Rollout:
    stage = changes.get("stage", r.stage)
    t = Transition(now, r.state, to, stage, reason)
    return replace(r, state=to, history=(*r.history, t), **changes)


def _require(r: Rollout, command: str, allowed: Collection[RolloutState]) -> None:
    if r.state not in allowed:
        raise RolloutStateError(
            f"rollout {r.spec.id}: cannot {command} while {r.state.value} "
            f"(allowed when {' or '.join(sorted(s.value for s in allowed))})"
        )


def _publish_stage(
    r: Rollout, stage_index: int, devices: Fleet
) -> tuple[tuple[str, ...], list[Action]]:
    """Devices of the stage's cohort not yet touched: the new ``touched`` and the action."""
    done = set(r.touched)
    new = [d for d in cohort(r.spec, stage_index, devices) if d not in done]
    if not new:
        return r.touched, []
    action = PublishDirectives(
        tuple(new), r.spec.target_version, r.spec.stages[stage_index].mode, downgrade=False
    )
    return tuple(sorted({*r.touched, *new})), [action]


def _enter_stage(
    r: Rollout, now: float, index: int, devices: Fleet, reason: str
) -> tuple[Rollout, list[Action]]:
    touched, actions = _publish_stage(r, index, devices)
    stages = r.spec.stages
    if index > 0 and stages[index].mode == "active" and stages[index - 1].mode == "shadow":
        # The challenger ran in shadow on the earlier cohort: switch those devices too.
        earlier = tuple(d for d in cohort(r.spec, index - 1, devices) if d in set(r.touched))
        if earlier:
            actions = [
                PublishDirectives(earlier, r.spec.target_version, "active", downgrade=False),
                *actions,
            ]
    moved = _move(
        r, now, RolloutState.RUNNING, reason, stage=index, stage_started_at=now, touched=touched
    )
    note = Notify(f"rollout {r.spec.id}: stage {index + 1}/{len(r.spec.stages)} started ({reason})")
    return replace(moved, gates=()), [*actions, note]


def _rollback(r: Rollout, now: float, reason: str) -> tuple[Rollout, list[Action]]:
    prev = r.spec.previous_version
    if prev is None:
        raise RolloutStateError(
            f"rollout {r.spec.id}: a first install has no previous version to roll back to; "
            "abort it instead"
        )
    moved = _move(r, now, RolloutState.ROLLED_BACK, reason)
    actions: list[Action] = []
    if r.touched:
        actions.append(PublishDirectives(r.touched, prev, "active", downgrade=True))
    actions.append(
        Notify(
            f"rollout {r.spec.id}: rolled back to v{prev} on {len(r.touched)} device(s): {reason}"
        )
    )
    return moved, actions


def start(r: Rollout, now: float, *, devices: Fleet) -> tuple[Rollout, list[Action]]:
    """Start a draft rollout: stage 1's cohort gets directives.

    Raises:
        RolloutStateError: the rollout is not a draft.
    """
    _require(r, "start", {RolloutState.DRAFT})
    return _enter_stage(r, now, 0, devices, "started")


def _advance(r: Rollout, now: float, devices: Fleet, reason: str) -> tuple[Rollout, list[Action]]:
    if r.stage + 1 >= len(r.spec.stages):
        done = _move(r, now, RolloutState.COMPLETED, reason)
        return done, [Notify(f"rollout {r.spec.id}: completed ({reason})")]
    return _enter_stage(r, now, r.stage + 1, devices, reason)


def evaluate_rollout(
    r: Rollout,
    now: float,
    cohort_progress: Mapping[str, DeviceProgress],
    metrics: StageMetrics,
    *,
    devices: Fleet,
) -> tuple[Rollout, list[Action]]:
    """One step of a running rollout; a no-op (no actions) in any other state.

    Devices that newly fall in the current cohort (enrolled later) get directives unless
    a gate fails. A failing gate pauses or rolls back per ``on_failure`` (pauses when
    there is no previous version). When every gate passes after ``bake_s``: the last
    stage completes, otherwise the next stage starts (``auto``) or the rollout waits for
    approval (``manual``). ``cohort_progress`` is informational (failure reasons in notices).
    """
    if r.state != RolloutState.RUNNING:
        return r, []
    started = r.stage_started_at if r.stage_started_at is not None else now
    results = check_gates(
        r.current_stage,
        metrics,
        max(0.0, now - started),
        on_insufficient=r.spec.on_insufficient,
        previous=r.gates,
    )
    r = replace(r, gates=tuple(results))
    failing = [g for g in results if g.verdict == GateVerdict.FAIL]
    lacking = [g for g in results if g.verdict == GateVerdict.INSUFFICIENT]
    if lacking and not failing:
        reason = "not enough evidence: " + "; ".join(f"{g.name} {g.detail}" for g in lacking)
        if r.spec.on_insufficient == "rollback" and r.spec.previous_version is not None:
            return _rollback(r, now, reason)
        moved = _move(r, now, RolloutState.PAUSED, reason)
        return moved, [Notify(f"rollout {r.spec.id}: paused, {reason}")]
    if failing:
        reasons = [p.reason for p in cohort_progress.values() if p.reason][:3]
        reason = "gate failed: " + ", ".join(
            f"{g.name}={g.value} (limit {g.limit})" + (f" [{g.detail}]" if g.detail else "")
            for g in failing
        )
        if reasons:
            reason += "; e.g. " + "; ".join(reasons)
        if r.spec.on_failure == "rollback" and r.spec.previous_version is not None:
            return _rollback(r, now, reason)
        moved = _move(r, now, RolloutState.PAUSED, reason)
        return moved, [Notify(f"rollout {r.spec.id}: paused, {reason}")]
    # late joiners of the current cohort (none while a gate fails)
    touched, actions = _publish_stage(r, r.stage, devices)
    r = replace(r, touched=touched)
    if all(g.verdict == GateVerdict.PASS for g in results):
        label = f"stage {r.stage + 1} gates passed"
        if r.spec.promotion == "manual" and r.stage + 1 < len(r.spec.stages):
            moved = _move(r, now, RolloutState.WAITING_APPROVAL, label)
            return moved, [*actions, Notify(f"rollout {r.spec.id}: {label}, awaiting approval")]
        moved, more = _advance(r, now, devices, label)
        return moved, [*actions, *more]
    return r, actions


def pause(r: Rollout, now: float, reason: str = "operator") -> tuple[Rollout, list[Action]]:
    """Pause a running (or approval-waiting) rollout.

    Raises:
        RolloutStateError: the rollout is not running or waiting for approval.
    """
    _require(r, "pause", {RolloutState.RUNNING, RolloutState.WAITING_APPROVAL})
    return _move(r, now, RolloutState.PAUSED, reason), [
        Notify(f"rollout {r.spec.id}: paused ({reason})")
    ]


def resume(r: Rollout, now: float, reason: str = "operator") -> tuple[Rollout, list[Action]]:
    """Resume a paused rollout at its stage; the bake time starts again.

    Raises:
        RolloutStateError: the rollout is not paused.
    """
    _require(r, "resume", {RolloutState.PAUSED})
    moved = _move(r, now, RolloutState.RUNNING, reason, stage_started_at=now, gates=())
    return moved, [Notify(f"rollout {r.spec.id}: resumed at stage {r.stage + 1} ({reason})")]


def promote(
    r: Rollout, now: float, *, devices: Fleet, reason: str = "operator"
) -> tuple[Rollout, list[Action]]:
    """Move to the next stage now (approves a waiting rollout; skips bake when running).

    Raises:
        RolloutStateError: the rollout is not running or waiting for approval.
    """
    _require(r, "promote", {RolloutState.RUNNING, RolloutState.WAITING_APPROVAL})
    return _advance(r, now, devices, f"promoted by {reason}")


def abort(r: Rollout, now: float, reason: str = "operator") -> tuple[Rollout, list[Action]]:
    """Stop the rollout for good; devices keep what they run.

    Raises:
        RolloutStateError: the rollout already ended.
    """
    _require(r, "abort", {RolloutState.DRAFT, *ACTIVE_STATES})
    return _move(r, now, RolloutState.ABORTED, reason), [
        Notify(f"rollout {r.spec.id}: aborted ({reason})")
    ]


def rollback(r: Rollout, now: float, reason: str = "operator") -> tuple[Rollout, list[Action]]:
    """Roll every touched device back to the previous version (signed downgrade).

    Raises:
        RolloutStateError: the rollout is a draft or already aborted/rolled back, or it is a
            first install (no previous version).
    """
    _require(r, "roll back", {*ACTIVE_STATES, RolloutState.COMPLETED})
    return _rollback(r, now, reason)


# ---------------------------------------------------------------------------- conflicts


def conflicts(
    new_spec: RolloutSpec, active_rollouts: Iterable[Rollout], devices: Fleet
) -> list[str]:
    """Devices that ``new_spec`` and an active rollout of the same model both select.

    Two active rollouts may not target the same device for the same model; the caller
    refuses a new rollout when this is not empty (see :func:`ensure_no_conflicts`).
    """
    mine = set(selected(new_spec, devices))
    clash: set[str] = set()
    for r in active_rollouts:
        if r.spec.id == new_spec.id or r.spec.model != new_spec.model or not r.active:
            continue
        clash.update(mine.intersection(selected(r.spec, devices)), mine.intersection(r.touched))
    return sorted(clash)


def ensure_no_conflicts(
    new_spec: RolloutSpec, active_rollouts: Iterable[Rollout], devices: Fleet
) -> None:
    """Refuse ``new_spec`` when it overlaps an active rollout of the same model.

    Raises:
        RolloutConflictError: naming the first conflicting devices.
    """
    clash = conflicts(new_spec, active_rollouts, devices)
    if clash:
        shown = ", ".join(clash[:5]) + (f" and {len(clash) - 5} more" if len(clash) > 5 else "")
        raise RolloutConflictError(
            f"rollout {new_spec.id}: {len(clash)} device(s) already in an active rollout of "
            f"{new_spec.model} ({shown}); finish or abort that rollout first"
        )
