"""Each device's drift verdict and faults, for the fleet list (``GET /v1/devices``:
the ``drift`` field, the ``drift`` and ``faulty`` filters).

A device's verdict is the one rule of :mod:`hub.drift` (:func:`~hub.drift.decide_counts`,
Holm at alpha = 0.01, the default effect thresholds; ``docs/drift.md``) applied to its own
windows of its **active** version over the previous clock hour and the current one so
far (60 to 120 minutes), read from its hourly roll-ups (an index seek per device),
never the stored windows. ``insufficient`` when those windows lack the evidence (none
at all included); null when the device runs no model or its version is not in the
registry (nothing to compare with).

Applied per device, the rule's false-alarm rate is per device: on stable data each
device's look flags it with probability at most alpha, so about 1 % of a healthy fleet's
devices with enough evidence may show ``drift`` (and, at a large effect, ``major``) at
any time, each look independently of the last.

The verdicts are computed on demand and kept for :attr:`DeviceVerdicts.ttl_s`: the first
request computes them (answering with fresh ones), later ones answer from the kept
verdicts and, once they are older than the TTL, have one background thread compute the
next (``computed_at`` says when). A device whose roll-up documents did not change
since the last computation keeps its verdict without being decided again; one that
changed costs about 1.5 ms (merge and decide), so a fleet of 10,000 reporting devices
takes some 15 s of one core per TTL, in the background. Deployment failures are read
incrementally from the events by id.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Final

from edge_agent.contract.messages import EventKind
from edge_agent.contract.reference import ReferenceStats
from edge_agent.errors import EdgeFleetError
from hub.drift import DriftVerdict, decide_counts, summarize
from hub.errors import HubError, UnavailableError
from hub.rollups import HOUR_S, hour_of
from hub.store import DeviceRecord, Store, merge_stored

log = logging.getLogger("edgefleet.hub")

#: Deployment events; the latest of a device says how its last deployment went.
DEPLOYMENT_KINDS: Final = frozenset(
    {
        EventKind.RECEIVED,
        EventKind.DOWNLOADING,
        EventKind.VERIFIED,
        EventKind.ACTIVATED,
        EventKind.SHADOW_STARTED,
        EventKind.PROBATION_PASSED,
        EventKind.ROLLED_BACK,
        EventKind.REFUSED,
        EventKind.FAILED,
    }
)
#: A last deployment event of these kinds: the deployment (or its probation) failed.
FAILED_KINDS: Final = frozenset({EventKind.FAILED, EventKind.REFUSED, EventKind.ROLLED_BACK})
#: Verdicts that make a device faulty.
FAULTY_VERDICTS: Final = frozenset({"drift", "major"})
#: How long computed verdicts are served before the next are computed.
DEFAULT_TTL_S: Final = 60.0


@dataclass(frozen=True)
class FleetVerdicts:
    """Every device's verdict at one time."""

    computed_at: float
    since: float  # the first window start counted (the previous clock hour's start)
    drift: Mapping[str, DriftVerdict] = field(default_factory=dict)
    failed: frozenset[str] = frozenset()  # latest deployment event failed/refused/rolled back

    def verdict(self, device_id: str) -> DriftVerdict | None:
        """The device's verdict (None: no model, or its version is unknown)."""
        return self.drift.get(device_id)

    def faulty(self, d: DeviceRecord) -> bool:
        """Not connected (offline or never seen), last deployment failed, or drifted."""
        return (not d.online) or d.id in self.marked_faulty

    @cached_property
    def marked_faulty(self) -> frozenset[str]:
        """The devices faulty whether connected or not: last deployment failed, or
        their verdict is drift or major."""
        drifted = {d for d, v in self.drift.items() if v in FAULTY_VERDICTS}
        return self.failed | drifted

    def with_verdict(self, verdicts: Collection[str]) -> set[str]:
        """The devices whose verdict is one of ``verdicts``."""
        return {d for d, v in self.drift.items() if v in verdicts}


def verdict_of(reference: ReferenceStats, payloads: list[str]) -> DriftVerdict:
    """The one rule's verdict on merged stored window documents (no report, no
    accuracy estimate: only the decision). ``insufficient`` when nothing merges.

    Raises:
        DriftError, ValidationError: the windows do not fit the reference's bins.
    """
    merged = merge_stored(payloads).window
    if merged is None or merged.n == 0:
        return "insufficient"
    merged.check_reference(reference)
    decided = decide_counts(
        reference,
        [fw.counts[:-1] for fw in merged.features],
        merged.class_counts,
        merged.confidence[:-1],
    )
    return summarize(decided).verdict


class DeviceVerdicts:
    """Computes and keeps :class:`FleetVerdicts` (see the module doc). Thread-safe."""

    def __init__(
        self,
        store: Store,
        reference_for: Callable[[str, int], ReferenceStats],
        *,
        clock: Callable[[], float] = time.time,
        ttl_s: float = DEFAULT_TTL_S,
    ) -> None:
        """Read ``store``; ``reference_for(model, version)`` gives a version's reference
        (raising :class:`HubError` when it has none); ``clock`` says what "now" is."""
        self.store, self.reference_for, self.clock, self.ttl_s = store, reference_for, clock, ttl_s
        self._lock = threading.Lock()  # one computation at a time
        self._kept: FleetVerdicts | None = None
        self._refreshing = False
        self._last_event = 0
        self._last_kind: dict[str, EventKind] = {}
        self._references: dict[tuple[str, int], ReferenceStats | None] = {}
        # device -> (hash of its model, version and roll-up documents, its verdict):
        # a device whose hours did not change is not decided again
        self._memo: dict[str, tuple[int, DriftVerdict]] = {}

    def current(self) -> FleetVerdicts:
        """The kept verdicts; the first call computes them, and a call that finds them
        older than the TTL starts their recomputation in the background.

        Raises:
            StoreError: SQLite failed (first computation only; a background one logs).
        """
        kept = self._kept
        if kept is None:
            with self._lock:
                if self._kept is None:
                    self._kept = self._compute()
                return self._kept
        if not 0 <= self.clock() - kept.computed_at < self.ttl_s and not self._refreshing:
            self._refreshing = True
            threading.Thread(target=self._refresh, name="hub-device-drift", daemon=True).start()
        return kept

    def refresh(self) -> FleetVerdicts:
        """Compute the verdicts now and keep them.

        Raises:
            StoreError: SQLite failed.
        """
        with self._lock:
            self._kept = self._compute()
            return self._kept

    def _refresh(self) -> None:
        try:
            self.refresh()
        except HubError as exc:
            log.error("hub: device drift verdicts not refreshed: %s", exc)
        finally:
            self._refreshing = False

    def _reference(self, model: str, version: int) -> ReferenceStats | None:
        key = (model, version)
        if key not in self._references:
            try:
                self._references[key] = self.reference_for(model, version)
            except UnavailableError:
                return None  # no registry at all: every verdict is null
            except HubError as exc:
                log.warning("hub: no drift reference for %s v%d: %s", model, version, exc)
                return None  # not kept: the version may be registered later
        return self._references[key]

    def _compute(self) -> FleetVerdicts:
        now = self.clock()
        first_hour = hour_of(now) - 1
        running = self.store.active_versions()
        hours = self.store.device_hours(running, first_hour)
        drift: dict[str, DriftVerdict] = {}
        memo_next: dict[str, tuple[int, DriftVerdict]] = {}
        for device_id, (model, version) in running.items():
            reference = self._reference(model, version)
            if reference is None:
                continue
            payloads = hours.get(device_id)
            if not payloads:
                drift[device_id] = "insufficient"
                continue
            key = hash((model, version, *payloads))
            memo = self._memo.get(device_id)
            if memo is not None and memo[0] == key:
                drift[device_id] = memo[1]
                memo_next[device_id] = memo
                continue
            try:
                drift[device_id] = verdict_of(reference, payloads)
            except (EdgeFleetError, HubError) as exc:
                log.warning("hub: drift of %s not decided: %s", device_id, exc)
                continue
            memo_next[device_id] = (key, drift[device_id])
        for event_id, device_id, kind in self.store.events_of_kinds(
            DEPLOYMENT_KINDS, self._last_event
        ):
            self._last_kind[device_id] = kind
            self._last_event = event_id
        self._memo = memo_next
        failed = frozenset(d for d, k in self._last_kind.items() if k in FAILED_KINDS)
        return FleetVerdicts(now, float(first_hour * HOUR_S), drift, failed)
