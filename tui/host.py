"""What a view may ask of the app it runs in: the console's side of the contract
between :mod:`tui.app` and the screens, so the screens never import the app (the app
imports every screen)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol

from edgefleet_client import AsyncHubClient, Event, HubError, WhoAmI


class ConsoleHost(Protocol):
    """The console application as its views see it (:class:`tui.app.ConsoleApp`)."""

    client: AsyncHubClient
    hub_url: str
    clock: Callable[[], float]
    refresh_s: float
    redact: bool
    identity: WhoAmI | None
    hub_lost: str | None
    hub_version: str
    last_contact: float | None
    stream_state: str
    recent_events: deque[Event]

    @property
    def can_deploy(self) -> bool:
        """Whether the token may deploy and command rollouts."""
        ...

    def read_only_reason(self) -> str:
        """Why actions are disabled ('' when they are enabled)."""
        ...

    def hub_reachable(self) -> None:
        """Note that the hub answered (clears the lost-hub banner)."""
        ...

    def report(self, exc: HubError) -> None:
        """Show a failed hub call in one line (a banner when the hub is gone)."""
        ...

    def open_device(self, device_id: str) -> None:
        """Push the Device view of ``device_id``."""
        ...

    def open_rollout(self, rollout_id: str) -> None:
        """Push the Rollout view of ``rollout_id``."""
        ...

    def open_drift(self, model: str, version: int) -> None:
        """Push the Drift view of a model version."""
        ...
