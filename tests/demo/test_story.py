"""The demo's story as a pure state machine, driven directly (no hub, no clock)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from hub.demo.story import (
    OUTCOMES,
    CutLink,
    Observation,
    Phase,
    Plan,
    Recalibrate,
    RestoreLink,
    StartDrift,
    StartRollout,
    StoryState,
    Timing,
    alert_rule,
    begin,
    status_line,
    step,
)

DEVICES = ("pump-01", "pump-02", "pump-03", "pump-04")
TIMING = Timing(
    window_s=5, drift_after_s=30, bake_s=10, offline_s=20, phase_timeout_s=100, look_s=10
)
PLAN = Plan(DEVICES, "line-3", ("line-1", "line-2"), "pump-02", TIMING)
TARGETS = {"v1": 1, "v2": 2, "v3": 3}


def obs(now: float, **kw) -> Observation:
    base = {
        "targets": TARGETS,
        "versions": dict.fromkeys(DEVICES, 1),
        "online": dict.fromkeys(DEVICES, True),
        "stored": dict.fromkeys(DEVICES, 10),
    }
    base.update(kw)
    return Observation(now, **base)


def on(version: int) -> dict[str, int | None]:
    return dict.fromkeys(DEVICES, version)


def play_to(phase: Phase) -> StoryState:
    """The happy path up to ``phase``, checking each action on the way."""
    s, actions = begin(PLAN, 0.0)
    assert actions == [StartRollout("v1")]
    script = [
        (Phase.STEADY, obs(5, rollouts={"v1": "completed"}), []),
        (Phase.DRIFT, obs(36, rollouts={"v1": "completed"}), [StartDrift("line-3")]),
        (
            Phase.ALERTED,
            obs(50, rollouts={"v1": "completed"}, fired=frozenset({"drift-line-3"})),
            [],
        ),
        (
            Phase.CANARY,
            obs(60, rollouts={"v1": "completed"}, fired=frozenset({"drift-line-3"})),
            [Recalibrate("line-3"), StartRollout("v2")],
        ),
        (
            Phase.BROKEN,
            obs(80, rollouts={"v2": "completed"}, versions=on(2)),
            [StartRollout("v3")],
        ),
        (
            Phase.OFFLINE,
            obs(90, rollouts={"v3": "rolled_back"}, versions=on(2)),
            [CutLink("pump-02")],
        ),
        (
            Phase.CATCH_UP,
            obs(111, versions=on(2), online={**dict.fromkeys(DEVICES, True), "pump-02": False}),
            [RestoreLink("pump-02")],
        ),
        (Phase.DONE, obs(115, versions=on(2), stored={"pump-02": 13}), []),
    ]
    for want, o, expected in script:
        if s.phase == phase:
            return s
        s, actions = step(s, PLAN, o)
        assert (s.phase, actions) == (want, expected), s.failure
    assert s.phase == phase
    return s


def test_the_whole_story_shows_every_outcome_in_order():
    s = play_to(Phase.DONE)
    assert s.succeeded and s.finished
    assert tuple(o.name for o in s.outcomes) == OUTCOMES
    assert "drift-line-3 fired 14 s after" in s.outcomes[1].detail
    assert "3 windows stored since" in s.outcomes[-1].detail


def test_nothing_happens_before_its_time():
    s = play_to(Phase.STEADY)
    same, actions = step(s, PLAN, obs(20, rollouts={"v1": "completed"}))
    assert (same, actions) == (s, [])  # 15 s of the 30 s steady period
    s = play_to(Phase.DRIFT)
    assert step(s, PLAN, obs(60, fired=frozenset({"drift-line-1-other"})))[0].phase == Phase.DRIFT
    s = play_to(Phase.ALERTED)
    assert step(s, PLAN, obs(59, fired=frozenset({"drift-line-3"}))) == (s, [])  # 9 of 10 s


def test_install_waits_for_every_device_on_v1():
    s, _ = begin(PLAN, 0.0)
    lagging = {**on(1), "pump-04": None}
    s2, _ = step(s, PLAN, obs(5, rollouts={"v1": "completed"}, versions=lagging))
    assert s2.phase == Phase.INSTALL


def test_alert_on_a_healthy_cohort_fails_the_story_at_once():
    s = play_to(Phase.CANARY)
    s, actions = step(s, PLAN, obs(60, fired=frozenset({alert_rule("line-1"), "drift-line-3"})))
    assert s.phase == Phase.FAILED and actions == []
    assert "healthy cohort (line-1)" in s.failure
    assert not s.succeeded


def test_broken_v3_that_completes_fails_the_story():
    s = play_to(Phase.BROKEN)
    s, _ = step(s, PLAN, obs(100, rollouts={"v3": "completed"}, versions=on(3)))
    assert s.phase == Phase.FAILED and "not rolled back" in s.failure


def test_rolled_back_v3_waits_until_the_fleet_is_on_v2():
    s = play_to(Phase.BROKEN)
    mixed = {**on(2), "pump-01": 3}
    s2, actions = step(s, PLAN, obs(100, rollouts={"v3": "rolled_back"}, versions=mixed))
    assert (s2.phase, actions) == (Phase.BROKEN, [])


def test_canary_rolled_back_fails_but_a_pause_by_the_operator_waits():
    s = play_to(Phase.CANARY)
    paused, _ = step(s, PLAN, obs(60, rollouts={"v2": "paused"}))
    assert paused.phase == Phase.CANARY
    failed, _ = step(s, PLAN, obs(60, rollouts={"v2": "rolled_back"}))
    assert failed.phase == Phase.FAILED


def test_a_phase_that_waits_too_long_fails_naming_what_it_waited_for():
    s = play_to(Phase.DRIFT)
    s, _ = step(s, PLAN, obs(36 + 101))
    assert s.phase == Phase.FAILED
    assert "waited 101 s for the drifting cohort's alert" in s.failure


def test_device_that_never_went_offline_fails_the_story():
    s = play_to(Phase.OFFLINE)
    s, _ = step(s, PLAN, obs(111, versions=on(2)))
    assert s.phase == Phase.FAILED and "never showed offline" in s.failure


def test_catch_up_needs_the_buffered_windows_stored():
    s = play_to(Phase.CATCH_UP)
    assert PLAN.expected_buffered == 3  # 20 s offline, 5 s windows, one may straddle
    short, _ = step(s, PLAN, obs(113, versions=on(2), stored={"pump-02": 12}))
    assert short.phase == Phase.CATCH_UP
    offline, _ = step(s, PLAN, obs(113, versions=on(2), stored={"pump-02": 20},
                                   online={"pump-02": False}))  # fmt: skip
    assert offline.phase == Phase.CATCH_UP


def test_a_finished_story_stays_finished():
    s = play_to(Phase.DONE)
    assert step(s, PLAN, obs(500, fired=frozenset({"drift-line-1"}))) == (s, [])


@pytest.mark.parametrize(
    ("phase", "now", "text"),
    [
        (Phase.INSTALL, 1, "demo 0/5 · installing v1 · next: steady fleet on v1"),
        (Phase.STEADY, 17, "next: line-3's sensors drift in 18 s"),
        (Phase.OFFLINE, 95, "pump-02 is offline, buffering · next: it comes back in 15 s"),
        (Phase.ALERTED, 53, "ALERT drift-line-3 fired: line-3's bearing temperature drifted"),
        (Phase.ALERTED, 53, "next: recalibrate and a v2 canary in 7 s"),
        (Phase.DONE, 200, "demo 5/5 · story complete"),
    ],
)
def test_status_line_says_what_comes_next(phase, now, text):
    s = play_to(phase)
    assert text in status_line(s, PLAN, now)


def test_status_line_of_a_failed_story_says_why():
    why = "the v2 canary ended rolled_back"
    s = replace(play_to(Phase.CANARY), phase=Phase.FAILED, failure=why)
    assert status_line(s, PLAN, 0) == "demo 2/5 · story stopped: the v2 canary ended rolled_back"


def test_timing_for_a_short_run_keeps_its_floors_and_a_long_one_is_the_default():
    short = Timing.for_duration(30)
    assert short.window_s == 2.0 and short.offline_s == 8.0 and short.phase_timeout_s == 90.0
    assert Timing.for_duration(300) == Timing()
    assert Timing.for_duration(10_000) == Timing()
