"""Windows stored at the hub's time, made visible in the audit log without flooding it.

A device whose clock runs more than a day ahead has every metrics message stored
restamped to the hub's arrival time (:mod:`hub.plausibility`, :class:`~hub.ingest.Ingest`).
An operator needs to see that, once, with how often it happens; a device whose clock
stays wrong must not add one hash-chained audit entry per message for as long as it
runs. :class:`RestampLog` appends an ``ingest.restamped`` entry (target: the device;
details: the last message's epoch, sequence range, original end and shift, and
``messages``, how many restamped messages the entry stands for) at most once per device
per ``interval_s``. The first message of a quiet device is audited at once; the ones
after it within the interval are counted into the device's next entry. The ingest's
per-device counter (``clock_skewed``, on ``/metrics``) still counts every message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

from hub.errors import HubError
from hub.refusals import AuditSink, Throttle

log = logging.getLogger("edgefleet.hub.ingest")

#: The audit action of a metrics message stored at the hub's time.
ACTION: Final = "ingest.restamped"


class RestampLog:
    """Rate-limited ``ingest.restamped`` audit entries (see the module docstring)."""

    def __init__(
        self,
        audit: AuditSink,
        *,
        interval_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``audit``: the hub's :class:`~hub.audit.AuditLog` (anything with its ``append``)."""
        self._audit = audit
        self._throttle = Throttle(interval_s, clock=clock)

    def record(self, device_id: str, details: dict[str, object]) -> bool:
        """Note one restamped message of ``device_id``; returns whether an audit entry
        was written now (else it is counted into the device's next one). Never raises:
        an audit failure is logged."""
        count = self._throttle.admit(device_id)
        if count is None:
            return False
        try:
            self._audit.append("ingest", ACTION, device_id, {**details, "messages": count})
        except HubError as exc:
            log.error("ingest: restamped message not audited: %s", exc)
            return False
        return True
