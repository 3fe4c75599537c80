"""Messages the console's workers post (results come back to the UI as messages)."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from edgefleet_client import Event


@dataclass
class EventsArrived(Message):
    """New events from the hub's stream, coalesced (at most one message per flush)."""

    events: tuple[Event, ...]


@dataclass
class HubStateChanged(Message):
    """The hub was lost (``error`` is the one-line reason) or is back (``error`` None)."""

    error: str | None
