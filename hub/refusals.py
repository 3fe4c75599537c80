"""Device messages the hub refused, made visible in the audit log with their reason.

The ingest counts every refusal (``/metrics``) and logs it in one line; an operator
looking at a device also needs to see that someone sent garbage, another device's
metrics or implausible counts on its topics. :class:`RefusalLog` appends an
``ingest.refused`` audit entry (target: the device the topic names; details: the kind,
the reason, and how many refusals of that kind it stands for) at most once per device
and kind per ``interval_s``, and at most ``max_per_interval`` entries per interval over
all devices, so a flood of garbage (or of invented device ids) cannot flood the
hash-chained log: the counters still count everything.

Not device events: a ``refused`` event counts against a device in a rollout, and
anyone able to publish on a topic could otherwise fail a device's rollout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Final, Protocol

from hub.errors import HubError

log = logging.getLogger("edgefleet.hub.ingest")

#: The audit action of a refused device message.
ACTION: Final = "ingest.refused"
_MAX_TARGET: Final = 200


class AuditSink(Protocol):
    """Where rate-limited entries go: the hub's :class:`~hub.audit.AuditLog` or a test's."""

    def append(self, actor: str, action: str, target: str, details: dict[str, object]) -> object:
        """Append one audit entry."""


def device_of(topic_name: str) -> str:
    """The device segment of ``edgefleet/v1/devices/<device>/<channel>`` (printable,
    truncated), or the truncated topic itself."""
    parts = topic_name.split("/")
    name = parts[3] if len(parts) >= 5 and parts[3] else topic_name
    clean = "".join(c if c.isprintable() else "?" for c in name)
    return clean[:_MAX_TARGET] or "?"


class Throttle:
    """At most one entry per key every ``interval_s`` (and, with ``max_per_interval``, at
    most that many over all keys per interval); the events a key had meanwhile are counted
    into its next entry. Shared by the hub's rate-limited audit entries."""

    def __init__(
        self,
        interval_s: float,
        *,
        max_per_interval: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Limit entries to one per key per ``interval_s`` seconds of ``clock``."""
        self._interval = interval_s
        self._max = max_per_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[Hashable, float] = {}
        self._pending: dict[Hashable, int] = {}
        self._window_start = clock()
        self._written = 0

    def admit(self, key: Hashable) -> int | None:
        """Note one event of ``key``: the number of events an entry written now stands for
        (this one and those counted since the key's last entry), or None when no entry
        may be written now (the event is counted into the next)."""
        now = self._clock()
        with self._lock:
            if now - self._window_start >= self._interval:
                self._window_start, self._written = now, 0
            self._pending[key] = self._pending.get(key, 0) + 1
            last = self._last.get(key)
            full = self._max is not None and self._written >= self._max
            if (last is not None and now - last < self._interval) or full:
                return None
            count = self._pending.pop(key)
            self._last[key] = now
            self._written += 1
            if self._max is not None and len(self._last) > 10 * self._max:
                cutoff = now - self._interval  # forget quiet keys (invented device ids)
                self._last = {k: t for k, t in self._last.items() if t >= cutoff}
        return count


class RefusalLog:
    """Rate-limited ``ingest.refused`` audit entries (see the module docstring)."""

    def __init__(
        self,
        audit: AuditSink,
        *,
        interval_s: float = 60.0,
        max_per_interval: int = 100,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``audit``: the hub's :class:`~hub.audit.AuditLog` (anything with its ``append``)."""
        self._audit = audit
        self._throttle = Throttle(interval_s, max_per_interval=max_per_interval, clock=clock)

    def record(self, topic_name: str, kind: str, reason: str) -> bool:
        """Note one refused message on ``topic_name``; returns whether an audit entry was
        written now (else it is counted into the next one). Never raises: an audit
        failure is logged."""
        device = device_of(topic_name)
        count = self._throttle.admit((device, kind))
        if count is None:
            return False
        try:
            self._audit.append(
                "ingest", ACTION, device, {"kind": kind, "reason": reason[:500], "count": count}
            )
        except HubError as exc:
            log.error("ingest: refusal not audited: %s", exc)
            return False
        return True
