"""Plausibility of a device's metrics: what one device could really have counted.

The wire contract checks that a window is *consistent* (every feature's counts add up
to its ``n``, classes and confidences too). A consistent window can still be absurd: a
window of 60 seconds holding 10^12 predictions is internally sound, and once merged it
outweighs the whole fleet (fleet drift then describes that one device). So the ingest
also bounds every count by what the device could have done in the time the window
covers: at most ``max_rate_per_s`` predictions (and as many errors) per second of the
window's span, never less than ``min_span_s`` of it. Every other count is tied to ``n``
by the contract, so bounding ``n`` and the error counts bounds them all (and keeps sums
over a fleet-year far below 2^53).

Time. The hub's clock is the reference. A window with plausible counts that ends more
than ``max_clock_skew_s`` after the hub's clock (a device whose wall clock ran ahead by
more than a day) is not refused: refusing it would never be acknowledged, and the
device would resend it until the hub's clock caught up. It is *restamped*: stored as
ending at the hub's arrival time, starting its own span before (see :func:`restamp`),
and the ingest records the correction. Counting problems are refused whatever the time.

Pure functions; :class:`~hub.ingest.Ingest` applies them to each message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import Enum
from typing import Final

from edge_agent.contract.messages import MetricsMessage
from edge_agent.contract.window import MetricsWindow

#: A Raspberry-Pi-class device serves well under 20,000 predictions a second even for
#: the smallest models (bench_predict: ~2 us of overhead per call on a desktop core).
DEFAULT_MAX_RATE_PER_S: Final = 50_000.0


@dataclass(frozen=True)
class Limits:
    """What a device can plausibly count."""

    #: Predictions (and, separately, errors) one device can serve per second.
    max_rate_per_s: float = DEFAULT_MAX_RATE_PER_S
    #: A window shorter than this is judged as if it lasted this long.
    min_span_s: float = 1.0
    #: How far in the future (by the hub's clock) a window may end.
    max_clock_skew_s: float = 24 * 3600.0


class Verdict(Enum):
    """What the ingest does with a window (see :func:`judge_window`)."""

    ACCEPT = "accept"  # store it as the device stamped it
    RESTAMP = "restamp"  # store it at the hub's time (it ends too far in the future)
    REFUSE = "refuse"  # a device cannot have counted it: refused, not acknowledged


@dataclass(frozen=True)
class Judgement:
    """The verdict on one window, with why (REFUSE: one line) or the window to store
    instead (RESTAMP)."""

    verdict: Verdict
    problem: str | None = None
    restamped: MetricsWindow | None = None


def counting_problem(w: MetricsWindow, limits: Limits) -> str | None:
    """Why ``w``'s counts cannot be one device's over the window's span (one line), or
    None if they can. Independent of the window's place in time."""
    what = f"{w.model_name} v{w.model_version} {w.role}"
    if not (math.isfinite(w.start) and math.isfinite(w.end)):  # validation already refuses
        return f"{what}: its start {w.start} or end {w.end} is not a finite time"
    span = max(w.end - w.start, limits.min_span_s)
    most = limits.max_rate_per_s * span
    if w.n > most:
        return (
            f"{what}: n = {w.n} predictions in {w.end - w.start:.3g} s is over "
            f"{limits.max_rate_per_s:g}/s"
        )
    for name, count in (("errors", sum(w.errors.values())), ("shadow comparisons", w.compared)):
        if count > most:
            return (
                f"{what}: {count} {name} in {w.end - w.start:.3g} s is over "
                f"{limits.max_rate_per_s:g}/s"
            )
    return None


def restamp(w: MetricsWindow, now: float) -> MetricsWindow:
    """``w`` moved to end at ``now`` (the hub's arrival time), starting its own span
    before (a negative span, impossible in a validated window, counts as 0). Counts are
    unchanged."""
    span = max(w.end - w.start, 0.0)
    return replace(w, start=now - span, end=now)


def judge_window(w: MetricsWindow, limits: Limits, now: float) -> Judgement:
    """Refuse ``w`` if a device cannot have counted it (:func:`counting_problem`, checked
    first: a window both over the rate and in the future is refused); restamp it to
    ``now`` if it ends more than ``limits.max_clock_skew_s`` after ``now`` (exactly at
    the bound is accepted); accept it otherwise."""
    problem = counting_problem(w, limits)
    if problem is not None:
        return Judgement(Verdict.REFUSE, problem=problem)
    if w.end > now + limits.max_clock_skew_s:
        return Judgement(Verdict.RESTAMP, restamped=restamp(w, now))
    return Judgement(Verdict.ACCEPT)


def window_problem(w: MetricsWindow, limits: Limits, now: float) -> str | None:
    """Why ``w`` cannot be a real device's window (one line), or None if it can be (a
    window only ending too far in the future can be: it is restamped, see
    :func:`judge_window`)."""
    return judge_window(w, limits, now).problem


@dataclass(frozen=True)
class MessageJudgement:
    """The verdict on a metrics message: refused (``problem``, one line naming the
    device and the sequence range), or stored as sent (``windows`` None), or stored with
    ``windows`` instead of its own (some restamped; the others as sent, in order)."""

    problem: str | None = None
    windows: tuple[MetricsWindow, ...] | None = None
    original_end: float = 0.0  # RESTAMP: the latest end of the windows restamped
    shift_s: float = 0.0  # RESTAMP: how far that end was moved (negative: back)

    @property
    def restamped(self) -> bool:
        """Whether any window of the message is stored at the hub's time."""
        return self.windows is not None


def judge_message(m: MetricsMessage, limits: Limits, now: float) -> MessageJudgement:
    """Judge every window of ``m`` (:func:`judge_window`): one refused window refuses the
    message (the store keeps a range whole); else any restamped window makes the message
    stored with the restamped windows."""
    judgements = [judge_window(w, limits, now) for w in m.windows]
    for j in judgements:
        if j.problem is not None:
            return MessageJudgement(problem=f"{m.device_id} [{m.seq_lo}, {m.seq_hi}]: {j.problem}")
    moved = [(w, j.restamped) for w, j in zip(m.windows, judgements, strict=True) if j.restamped]
    if not moved:
        return MessageJudgement()
    original_end = max(w.end for w, _ in moved)
    return MessageJudgement(
        windows=tuple(j.restamped or w for w, j in zip(m.windows, judgements, strict=True)),
        original_end=original_end,
        shift_s=now - original_end,
    )


def message_problem(m: MetricsMessage, limits: Limits, now: float) -> str | None:
    """Why the metrics message ``m`` is implausible (one line naming the device and its
    sequence range), or None if it can be stored (possibly restamped:
    :func:`judge_message`)."""
    return judge_message(m, limits, now).problem
