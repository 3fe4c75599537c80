"""Messages the console's workers post: every hub result comes back to its view as a
message, handled on the UI side (as toolong and posting do)."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from edgefleet_client import (
    AlertPage,
    AuditEntry,
    DeviceDetail,
    DeviceHistory,
    DevicePage,
    DriftBins,
    DriftHistory,
    DriftResult,
    Event,
    FleetSummary,
    ModelVersionInfo,
    Rollout,
)


@dataclass
class EventsArrived(Message):
    """New events from the hub's stream, coalesced (at most one message per flush)."""

    events: tuple[Event, ...]


@dataclass
class HubStateChanged(Message):
    """The hub was lost (``error`` is the one-line reason) or is back (``error`` None)."""

    error: str | None


# Results of the views' hub calls: a worker posts one, the view's handler shows it.


@dataclass
class FleetPageLoaded(Message):
    """A page of devices for the Fleet view."""

    page: DevicePage


@dataclass
class DeviceLoaded(Message):
    """One device and its newest events (oldest first)."""

    detail: DeviceDetail
    events: tuple[Event, ...]
    drift: DriftResult | None = None  # its active version's drift on this device


@dataclass
class DevicePlotsLoaded(Message):
    """A device's health history and the reference vs live bins of one feature of its
    active version on it (None: the hub could not say, or no active version)."""

    history: DeviceHistory | None
    bins: DriftBins | None


@dataclass
class RolloutsLoaded(Message):
    """Every rollout (the list) or the active ones (Pulse)."""

    rollouts: tuple[Rollout, ...]


@dataclass
class RolloutLoaded(Message):
    """One rollout, fetched or as a command left it."""

    rollout: Rollout


@dataclass
class SummaryLoaded(Message):
    """The fleet's counts by state and version."""

    summary: FleetSummary


@dataclass
class ModelsLoaded(Message):
    """Every registered version, with the devices running it (active, shadow)."""

    versions: tuple[tuple[ModelVersionInfo, int, int], ...]
    models: int


@dataclass
class DriftLoaded(Message):
    """One version's fleet drift."""

    result: DriftResult


@dataclass
class DriftPlotsLoaded(Message):
    """A version's PSI per hour and the bins of the chosen feature (None: unavailable)."""

    history: DriftHistory | None
    bins: DriftBins | None


@dataclass
class AuditLoaded(Message):
    """The newest audit entries and whether the chain verifies."""

    entries: tuple[AuditEntry, ...]
    verified: bool
    problem: str | None


@dataclass
class AlertsLoaded(Message):
    """A page of alert transitions (Pulse asks for the firings still in force)."""

    page: AlertPage
