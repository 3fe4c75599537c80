"""Probation of a newly activated model: a small, pure state machine.

It watches prediction outcomes and latency for the directive's window, and decides
``passed`` when the window ends with the gates met, or ``failed`` as soon as enough
predictions show an error rate or a latency p95 above the gates. Time is passed in
(monotonic seconds), so tests drive it directly.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from edge_agent.contract.directive import Probation


class ProbationVerdict(StrEnum):
    """Where a probation stands."""

    RUNNING = "running"
    PASSED = "passed"
    FAILED = "failed"


@dataclass(frozen=True)
class ProbationOutcome:
    """A verdict with the figures behind it, for the deployment event."""

    verdict: ProbationVerdict
    reason: str
    predictions: int
    errors: int
    latency_p95_ms: float | None


class ProbationMonitor:
    """Tracks one model's probation against its gates."""

    def __init__(self, gates: Probation, started: float, keep_latencies: int = 2048) -> None:
        """Start watching at monotonic time ``started``."""
        self.gates = gates
        self.started = started
        self.ok = 0
        self.errors = 0
        self._latencies: deque[float] = deque(maxlen=keep_latencies)

    def observe(self, ok: int, errors: int, latency_s: float | None = None) -> None:
        """Count ``ok`` successful and ``errors`` failed predictions (one call's latency)."""
        self.ok += ok
        self.errors += errors
        if latency_s is not None:
            self._latencies.append(latency_s)

    def latency_p95_ms(self) -> float | None:
        """p95 of the recent call latencies in milliseconds (None before any call)."""
        if not self._latencies:
            return None
        return float(np.percentile(np.fromiter(self._latencies, float), 95) * 1000.0)

    def outcome(self, now: float) -> ProbationOutcome:
        """The verdict at monotonic time ``now``."""
        total = self.ok + self.errors
        p95 = self.latency_p95_ms()
        enough = total >= max(self.gates.min_predictions, 1)
        if enough and self.errors / total > self.gates.max_error_rate:
            return self._done(
                ProbationVerdict.FAILED,
                f"error rate {self.errors / total:.1%} over {self.gates.max_error_rate:.1%} "
                f"({self.errors} of {total})",
                p95,
            )
        limit = self.gates.max_latency_p95_ms
        if enough and limit is not None and p95 is not None and p95 > limit:
            return self._done(
                ProbationVerdict.FAILED, f"latency p95 {p95:.2f} ms over {limit:.2f} ms", p95
            )
        if now - self.started >= self.gates.window_s:
            note = "" if enough else f" (only {total} predictions seen)"
            return self._done(
                ProbationVerdict.PASSED, f"gates met over {self.gates.window_s:g} s{note}", p95
            )
        return self._done(ProbationVerdict.RUNNING, "", p95)

    def _done(self, verdict: ProbationVerdict, reason: str, p95: float | None) -> ProbationOutcome:
        return ProbationOutcome(verdict, reason, self.ok + self.errors, self.errors, p95)
