"""Plausibility of a device's metrics: what one device could really have counted.

The wire contract checks that a window is *consistent* (every feature's counts add up
to its ``n``, classes and confidences too). A consistent window can still be absurd: a
window of 60 seconds holding 10^12 predictions is internally sound, and once merged it
outweighs the whole fleet (fleet drift then describes that one device). So the ingest
also bounds every count by what the device could have done in the time the window
covers: at most ``max_rate_per_s`` predictions (and as many errors) per second of the
window's span, never less than ``min_span_s`` of it, and a window cannot end far in
the future. Every other count is tied to ``n`` by the contract, so bounding ``n`` and
the error counts bounds them all (and keeps sums over a fleet-year far below 2^53).

Pure functions; :class:`~hub.ingest.Ingest` applies them to each message.
"""

from __future__ import annotations

from dataclasses import dataclass
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


def window_problem(w: MetricsWindow, limits: Limits, now: float) -> str | None:
    """Why ``w`` cannot be a real device's window (one line), or None if it can be."""
    span = max(w.end - w.start, limits.min_span_s)
    most = limits.max_rate_per_s * span
    what = f"{w.model_name} v{w.model_version} {w.role}"
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
    if w.end > now + limits.max_clock_skew_s:
        return f"{what}: ends {w.end - now:.0f} s in the future"
    return None


def message_problem(m: MetricsMessage, limits: Limits, now: float) -> str | None:
    """Why the metrics message ``m`` is implausible (one line naming the device and its
    sequence range), or None if every window in it is plausible."""
    for w in m.windows:
        problem = window_problem(w, limits, now)
        if problem is not None:
            return f"{m.device_id} [{m.seq_lo}, {m.seq_hi}]: {problem}"
    return None
