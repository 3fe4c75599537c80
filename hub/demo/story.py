"""The demo's story as a pure state machine: observations in, actions and a status out.

The story, on one timeline:

0. ``install``: v1 goes to every device (a one-stage rollout);
1. ``steady`` then ``drift``: after ``drift_after_s`` one tagged cohort's bearing
   temperature sensors lose their calibration; the cohort's drift alert must fire, and
   no alert on a healthy cohort may fire, ever; ``alerted`` leaves ``look_s`` to look;
2. ``canary``: the cohort is recalibrated and v2 (trained on newer data) goes out as a
   canary with gates; it must complete with every device on v2;
3. ``broken``: v3, whose smoke test fails, goes out the same way; the rollout must roll
   back automatically and every device stay on v2;
4. ``offline`` then ``catch_up``: one device loses its network for ``offline_s`` while
   it keeps serving; once back, the hub must have stored the windows it buffered.

:func:`begin` starts the story, :func:`step` advances it by one observation and
:func:`status_line` says where it is and what comes next. Nothing here does I/O or
reads a clock: the caller (``hub.demo.run``) observes the hub and carries out the
actions, and tests drive the machine directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Final


class Phase(StrEnum):
    """Where the story is."""

    INSTALL = "install"
    STEADY = "steady"
    DRIFT = "drift"
    ALERTED = "alerted"
    CANARY = "canary"
    BROKEN = "broken"
    OFFLINE = "offline"
    CATCH_UP = "catch_up"
    DONE = "done"
    FAILED = "failed"


#: The rollouts the story starts, by kind: the model version each one targets.
ROLLOUTS: Final = ("v1", "v2", "v3")


@dataclass(frozen=True)
class Timing:
    """How fast the story goes (seconds)."""

    window_s: float = 10.0  # the agents' monitoring window
    drift_after_s: float = 60.0  # steady fleet before the cohort drifts
    bake_s: float = 30.0  # each rollout stage's bake
    probation_s: float = 10.0  # each device's probation after an activation
    evidence_wait_s: float = 30.0  # a drift gate's wait for evidence past its bake
    alert_sustained_s: float = 10.0  # how long drift must hold before its alert fires
    look_s: float = 45.0  # time to look at the drift and the alert before the fix comes
    offline_s: float = 45.0  # how long the device stays cut off
    phase_timeout_s: float = 300.0  # a phase whose outcome does not come fails the story

    @classmethod
    def for_duration(cls, duration_s: float) -> Timing:
        """A faster timeline whose story normally ends within ``duration_s`` (at least
        about 40 s: below that the waits hit their floors and the story takes longer)."""
        f = min(1.0, max(0.0, duration_s) / 300.0)
        return cls(
            window_s=max(2.0, 10.0 * f),
            drift_after_s=max(3.0, 60.0 * f),
            bake_s=max(3.0, 30.0 * f),
            probation_s=max(3.0, 10.0 * f),
            evidence_wait_s=max(3.0, 30.0 * f),
            alert_sustained_s=max(2.0, 10.0 * f),
            look_s=max(2.0, 45.0 * f),
            offline_s=max(8.0, 45.0 * f),
            phase_timeout_s=max(90.0, 300.0 * f),
        )


@dataclass(frozen=True)
class Plan:
    """The fleet the story plays on: its devices, the cohort that drifts, the healthy
    cohorts (each has its own drift alert rule, ``drift-<tag>``), and the device that
    goes offline."""

    devices: tuple[str, ...]
    drifting_tag: str
    healthy_tags: tuple[str, ...]
    offline_device: str
    timing: Timing = Timing()

    @property
    def expected_buffered(self) -> int:
        """Windows the offline device must at least have buffered while cut off."""
        return max(1, int(self.timing.offline_s // self.timing.window_s) - 1)


def alert_rule(tag: str) -> str:
    """The name of the drift alert rule on the cohort ``tag``."""
    return f"drift-{tag}"


# ---------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class StartRollout:
    """Push the model version of ``kind`` (``v1``, ``v2``, ``v3``) and roll it out."""

    kind: str


@dataclass(frozen=True)
class StartDrift:
    """The cohort ``tag``'s sensors lose their calibration."""

    tag: str


@dataclass(frozen=True)
class Recalibrate:
    """The cohort ``tag``'s sensors are recalibrated (their drift ends)."""

    tag: str


@dataclass(frozen=True)
class CutLink:
    """``device`` loses its network (it keeps serving and buffering)."""

    device: str


@dataclass(frozen=True)
class RestoreLink:
    """``device`` gets its network back."""

    device: str


Action = StartRollout | StartDrift | Recalibrate | CutLink | RestoreLink


# ---------------------------------------------------------------------------- state


@dataclass(frozen=True)
class Observation:
    """What the hub shows at ``now``.

    ``rollouts``: the state of each started rollout by kind (``running``,
    ``completed``, ``rolled_back``...); ``targets``: the version each kind's model got
    when pushed; ``fired``: alert rules that have fired; ``versions``: each device's
    active version; ``online``: each device's link; ``stored``: each device's windows
    stored by the hub without a gap.
    """

    now: float
    rollouts: Mapping[str, str] = field(default_factory=dict)
    targets: Mapping[str, int] = field(default_factory=dict)
    fired: frozenset[str] = frozenset()
    versions: Mapping[str, int | None] = field(default_factory=dict)
    online: Mapping[str, bool] = field(default_factory=dict)
    stored: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """One thing the story set out to show, as it happened."""

    name: str
    detail: str


#: The outcomes a complete story shows, in order.
OUTCOMES: Final = ("installed", "drift_alert", "canary_completed", "broken_rolled_back",
                   "caught_up")  # fmt: skip


@dataclass(frozen=True)
class StoryState:
    """The story so far: its phase (entered at ``since``), the outcomes shown, the
    offline device's stored windows when it was cut off (``mark``), and why it failed."""

    phase: Phase
    since: float
    outcomes: tuple[Outcome, ...] = ()
    mark: int = 0
    failure: str = ""

    @property
    def finished(self) -> bool:
        """Done or failed: nothing more happens."""
        return self.phase in (Phase.DONE, Phase.FAILED)

    @property
    def succeeded(self) -> bool:
        """Every outcome of the story happened."""
        return self.phase == Phase.DONE and tuple(o.name for o in self.outcomes) == OUTCOMES


def begin(plan: Plan, now: float) -> tuple[StoryState, list[Action]]:
    """The story's first state: v1 is rolled out."""
    del plan
    return StoryState(Phase.INSTALL, now), [StartRollout("v1")]


def _all_on(plan: Plan, obs: Observation, kind: str) -> bool:
    target = obs.targets.get(kind)
    return target is not None and all(obs.versions.get(d) == target for d in plan.devices)


def _move(
    s: StoryState, obs: Observation, phase: Phase, outcome: Outcome | None = None, mark: int = -1
) -> StoryState:
    outcomes = s.outcomes if outcome is None else (*s.outcomes, outcome)
    kept = s.mark if mark < 0 else mark
    return replace(s, phase=phase, since=obs.now, outcomes=outcomes, mark=kept)


def _fail(s: StoryState, obs: Observation, why: str) -> tuple[StoryState, list[Action]]:
    return replace(s, phase=Phase.FAILED, since=obs.now, failure=why), []


#: What each phase waits for (said when it times out, and in the status line).
WAITING_FOR: Final = {
    Phase.INSTALL: "v1 to be installed on every device",
    Phase.STEADY: "the drift to start",
    Phase.DRIFT: "the drifting cohort's alert",
    Phase.ALERTED: "the fix",
    Phase.CANARY: "the v2 canary to complete with every device on v2",
    Phase.BROKEN: "the v3 rollout to roll back with every device on v2",
    Phase.OFFLINE: "the device to go offline",
    Phase.CATCH_UP: "the device's buffered windows to be stored",
}


def step(s: StoryState, plan: Plan, obs: Observation) -> tuple[StoryState, list[Action]]:
    """Advance the story by one observation; returns the new state and what to do.

    A healthy cohort's alert firing fails the story at once; so does a rollout ending
    the wrong way, or a phase waiting longer than ``phase_timeout_s``.
    """
    if s.finished:
        return s, []
    noisy = sorted(t for t in plan.healthy_tags if alert_rule(t) in obs.fired)
    if noisy:
        return _fail(s, obs, f"a drift alert fired on a healthy cohort ({', '.join(noisy)})")
    t = plan.timing
    waited = obs.now - s.since
    p = s.phase
    if p == Phase.INSTALL:
        state = obs.rollouts.get("v1")
        if state == "completed" and _all_on(plan, obs, "v1"):
            done = Outcome("installed", f"v{obs.targets['v1']} on {len(plan.devices)} devices")
            return _move(s, obs, Phase.STEADY, done), []
        if state in ("rolled_back", "aborted"):
            return _fail(s, obs, f"the v1 install ended {state}")
    elif p == Phase.STEADY:
        if waited >= t.drift_after_s:
            return _move(s, obs, Phase.DRIFT), [StartDrift(plan.drifting_tag)]
        return s, []
    elif p == Phase.DRIFT:
        rule = alert_rule(plan.drifting_tag)
        if rule in obs.fired:
            quiet = ", ".join(plan.healthy_tags) or "none"
            done = Outcome(
                "drift_alert",
                f"{rule} fired {waited:.0f} s after the drift began; healthy cohorts "
                f"({quiet}) quiet",
            )
            return _move(s, obs, Phase.ALERTED, done), []
    elif p == Phase.ALERTED:
        if waited >= t.look_s:
            actions: list[Action] = [Recalibrate(plan.drifting_tag), StartRollout("v2")]
            return _move(s, obs, Phase.CANARY), actions
        return s, []
    elif p == Phase.CANARY:
        state = obs.rollouts.get("v2")
        if state == "completed" and _all_on(plan, obs, "v2"):
            done = Outcome("canary_completed", f"v{obs.targets['v2']} passed its gates")
            return _move(s, obs, Phase.BROKEN, done), [StartRollout("v3")]
        if state in ("rolled_back", "aborted"):  # paused: an operator may resume
            return _fail(s, obs, f"the v2 canary ended {state}")
    elif p == Phase.BROKEN:
        state = obs.rollouts.get("v3")
        if state == "rolled_back" and _all_on(plan, obs, "v2"):
            done = Outcome(
                "broken_rolled_back",
                f"v{obs.targets.get('v3', '?')} rolled back; fleet on v{obs.targets['v2']}",
            )
            mark = obs.stored.get(plan.offline_device, 0)
            return _move(s, obs, Phase.OFFLINE, done, mark=mark), [CutLink(plan.offline_device)]
        if state in ("completed", "aborted"):
            return _fail(s, obs, f"the broken v3 rollout ended {state}, not rolled back")
    elif p == Phase.OFFLINE:
        if waited >= t.offline_s:
            if obs.online.get(plan.offline_device, True):
                return _fail(s, obs, f"{plan.offline_device} never showed offline")
            return _move(s, obs, Phase.CATCH_UP), [RestoreLink(plan.offline_device)]
        return s, []
    elif p == Phase.CATCH_UP:
        dev = plan.offline_device
        gained = obs.stored.get(dev, 0) - s.mark
        if obs.online.get(dev, False) and gained >= plan.expected_buffered:
            done = Outcome(
                "caught_up", f"{dev} was offline {t.offline_s:.0f} s; {gained} windows stored since"
            )
            return _move(s, obs, Phase.DONE, done), []
    if waited > t.phase_timeout_s:
        return _fail(s, obs, f"waited {waited:.0f} s for {WAITING_FOR[p]}")
    return s, []


#: What the status line announces as coming after each phase.
_NEXT: Final = {
    Phase.INSTALL: "steady fleet on v1",
    Phase.DRIFT: "a look at the drift, then the fix",
    Phase.CANARY: "a broken v3, rolled back automatically",
    Phase.BROKEN: "one device goes offline",
    Phase.OFFLINE: "it comes back and catches up",
    Phase.CATCH_UP: "end of the story",
}


def status_line(s: StoryState, plan: Plan, now: float) -> str:
    """One line for the console: the step, what it waits for, and what comes next."""
    done = len(s.outcomes)
    head = f"demo {done}/{len(OUTCOMES)}"
    if s.phase == Phase.DONE:
        return f"{head} · story complete: every outcome happened · the fleet keeps running"
    if s.phase == Phase.FAILED:
        return f"{head} · story stopped: {s.failure}"
    if s.phase == Phase.STEADY:
        left = max(0.0, plan.timing.drift_after_s - (now - s.since))
        return (
            f"{head} · healthy fleet on v1 · next: {plan.drifting_tag}'s sensors drift "
            f"in {left:.0f} s"
        )
    if s.phase == Phase.ALERTED:
        left = max(0.0, plan.timing.look_s - (now - s.since))
        return (
            f"{head} · ALERT {alert_rule(plan.drifting_tag)} fired: {plan.drifting_tag}'s "
            f"bearing temperature drifted (5 Models, Enter: drift) · next: recalibrate "
            f"and a v2 canary in {left:.0f} s"
        )
    if s.phase == Phase.OFFLINE:
        left = max(0.0, plan.timing.offline_s - (now - s.since))
        return (
            f"{head} · {plan.offline_device} is offline, buffering · next: it comes back "
            f"in {left:.0f} s"
        )
    what = {
        Phase.INSTALL: "installing v1",
        Phase.DRIFT: f"{plan.drifting_tag} drifting · waiting for its alert",
        Phase.CANARY: f"{plan.drifting_tag} recalibrated · v2 canary rolling out (gates: "
        "3 Rollouts, Enter)",
        Phase.BROKEN: "v3 (broken) rolling out",
        Phase.CATCH_UP: f"{plan.offline_device} back · catching up",
    }[s.phase]
    return f"{head} · {what} · next: {_NEXT[s.phase]}"
