"""The console application: views on a screen stack, one hub watcher, one event stream.

The app owns the connection: a health loop that notices a lost hub (banner on every
view) and retries with back-off, the token's identity (which decides whether actions
are enabled), and the event stream (resumed by id after a drop) whose events are
collected and handed to the visible view at most twice a second.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import ClassVar

from rich.markup import escape
from textual import work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.dom import DOMNode

from edgefleet_client import AsyncHubClient, Event, HubError, WhoAmI
from edgefleet_client.sse import Backoff
from tui.commands import VIEWS, Command
from tui.messages import EventsArrived, HubStateChanged
from tui.screens.alerts import AlertsView
from tui.screens.audit import AuditView
from tui.screens.base import View
from tui.screens.device import DeviceView
from tui.screens.drift import DriftView
from tui.screens.events import EventsView
from tui.screens.fleet import FleetView
from tui.screens.modals import CommandPrompt, HelpScreen
from tui.screens.models import ModelsView
from tui.screens.pulse import PulseView
from tui.screens.rollouts import RolloutsView, RolloutView
from tui.story import follow_story

VIEW_CLASSES: dict[str, type[View]] = {
    "pulse": PulseView,
    "fleet": FleetView,
    "rollouts": RolloutsView,
    "events": EventsView,
    "models": ModelsView,
    "audit": AuditView,
    "alerts": AlertsView,
}
THEMES = ("textual-dark", "textual-light")


def _own_keys(node: DOMNode) -> set[str]:
    """The keys the console's own classes bind on ``node`` (not Textual's defaults)."""
    keys: set[str] = set()
    for cls in type(node).__mro__:
        if cls.__module__.startswith("tui."):
            for b in cls.__dict__.get("BINDINGS", ()):
                if isinstance(b, Binding):
                    keys.update(k.strip() for k in b.key.split(","))
    return keys


class ViewCommands(Provider):
    """The command palette's entries: open each view."""

    async def discover(self) -> Hits:
        app = self.app
        if not isinstance(app, ConsoleApp):
            return
        for v in VIEWS:
            yield DiscoveryHit(f"Open {v.name}", partial(app.action_view, v.name), help=v.help)

    async def search(self, query: str) -> Hits:
        app = self.app
        if not isinstance(app, ConsoleApp):
            return
        matcher = self.matcher(query)
        for v in VIEWS:
            text = f"Open {v.name}"
            score = max(matcher.match(text), *(matcher.match(a) for a in v.aliases))
            if score > 0:
                yield Hit(
                    score, matcher.highlight(text), partial(app.action_view, v.name), help=v.help
                )


class ConsoleApp(App[None]):
    """``edgefleet console``."""

    CSS_PATH = Path(__file__).with_name("console.tcss")
    TITLE = "EdgeFleet console"
    COMMANDS = App.COMMANDS | {ViewCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("1", "view('pulse')", "Pulse"),
        Binding("2", "view('fleet')", "Fleet"),
        Binding("3", "view('rollouts')", "Rollouts"),
        Binding("4", "view('events')", "Events"),
        Binding("5", "view('models')", "Models"),
        Binding("6", "view('audit')", "Audit", show=False),
        Binding("7", "view('alerts')", "Alerts", show=False),
        Binding("colon", "command_mode", "Cmd", key_display=":"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("ctrl+t", "toggle_theme", "Theme", show=False),
        Binding("q", "quit", "Quit", show=False),
    ]

    def __init__(
        self,
        client: AsyncHubClient,
        hub_url: str,
        *,
        clock: Callable[[], float] = time.time,
        refresh_s: float = 2.0,
        health_s: float = 5.0,
        light: bool = False,
        stream: bool = True,
        redact: bool = False,
    ) -> None:
        """A console on ``client``; ``clock`` gives "now" for the ages it shows;
        ``redact`` masks what only the hub's own clock and keys decide (bundle digests,
        registration and audit times, token ids), for reproducible screenshots."""
        super().__init__()
        self.redact = redact
        self.client, self.hub_url, self.clock = client, hub_url, clock
        self.refresh_s, self.health_s, self.stream = refresh_s, health_s, stream
        self.start_theme = THEMES[1] if light else THEMES[0]
        self.identity: WhoAmI | None = None
        self.identity_error = ""
        self.hub_version = ""
        self.hub_lost: str | None = None
        self.last_contact: float | None = None
        self.stream_state = "starting"
        self.recent_events: deque[Event] = deque(maxlen=2000)
        self.last_event_id = 0
        self._pending: list[Event] = []
        self._notified: dict[str, float] = {}

    # ------------------------------------------------------------------ lifecycle

    def on_mount(self) -> None:
        self.theme = self.start_theme
        self.push_screen(PulseView())
        self.watch_hub()
        if self.stream:
            self.follow_stream()
        self.set_interval(0.5, self.flush_events)
        follow_story(self)  # the demo's "next: ..." line (only under `edgefleet demo`)

    @property
    def can_deploy(self) -> bool:
        """Whether the token may deploy and command rollouts."""
        return self.identity is not None and self.identity.allows("deploy")

    def read_only_reason(self) -> str:
        """Why actions are disabled ('' when they are enabled)."""
        if self.identity is None:
            return self.identity_error or "actions are enabled once the hub confirms the token"
        if not self.identity.allows("deploy"):
            return (
                f"read-only token {self.identity.name!r} ({', '.join(self.identity.scopes)}): "
                "deploy, roll back and rollout actions need the 'deploy' scope"
            )
        return ""

    @work(exclusive=True, group="hub", exit_on_error=False)
    async def watch_hub(self) -> None:
        """Poll the hub's health; after a loss retry with back-off until it answers."""
        backoff = Backoff(initial_s=1.0, max_s=30.0)
        while True:
            try:
                self.hub_version = (await self.client.health()).version
                if self.identity is None and not self.identity_error:
                    await self._learn_identity()
                self.hub_reachable()
                if isinstance(self.screen, View):
                    self.screen.hub_status_changed()
                backoff.reset()
                await asyncio.sleep(self.health_s)
            except HubError as exc:
                self.report(exc)
                await asyncio.sleep(backoff.next_delay())

    async def _learn_identity(self) -> None:
        try:
            self.identity = await self.client.whoami()
        except HubError as exc:
            if not exc.auth:
                raise
            self.identity_error = self._auth_text(exc)
            self.report(exc)
        for screen in self.screen_stack:
            if isinstance(screen, View):
                screen.identity_known()

    @work(exclusive=True, group="stream", exit_on_error=False)
    async def follow_stream(self) -> None:
        """The newest stored events, then the live stream from the last one's id."""
        backoff = Backoff(initial_s=1.0, max_s=30.0)
        while True:
            try:
                backlog = await self._backlog()
                break
            except HubError as exc:
                self.report(exc)
                if exc.auth:
                    self.stream_state = "refused"
                    return
                await asyncio.sleep(backoff.next_delay())
        self._pending.extend(backlog)
        if backlog:
            self.last_event_id = backlog[-1].id
        try:
            async for e in self.client.stream_events(
                after_id=self.last_event_id, on_status=self._stream_status
            ):
                self._pending.append(e)
                self.last_event_id = e.id
        except HubError as exc:
            self.stream_state = "refused"
            self.report(exc)

    async def _backlog(self) -> tuple[Event, ...]:
        """The newest stored events (a hub without /v1/fleet/events/latest: page them)."""
        try:
            return await self.client.latest_events(limit=500)
        except HubError as exc:
            if exc.status != 404:
                raise
        kept: deque[Event] = deque(maxlen=500)
        async for e in self.client.iter_events(page_size=1000):
            kept.append(e)
        return tuple(kept)

    def _stream_status(self, up: bool, error: HubError | None) -> None:
        self.stream_state = "live" if up else "reconnecting"
        if isinstance(self.screen, View):
            self.screen.hub_status_changed()
        if error is not None:
            self.report(error)
        elif up:
            self.hub_reachable()

    def flush_events(self) -> None:
        """Hand the events collected since the last flush to the visible view."""
        if not self._pending:
            return
        batch = tuple(self._pending)
        self._pending.clear()
        self.recent_events.extend(batch)
        if isinstance(self.screen, View):
            self.screen.post_message(EventsArrived(batch))

    # ------------------------------------------------------------------ hub state

    def hub_reachable(self) -> None:
        """A call succeeded: clear the banner if the hub was lost."""
        self.last_contact = self.clock()
        if self.hub_lost is not None:
            self.hub_lost = None
            self._broadcast(HubStateChanged(None))
            self.notify("hub reachable again")

    @staticmethod
    def _auth_text(exc: HubError) -> str:
        if exc.status == 401:
            return (
                f"the hub refused the token ({exc.message}): set EDGEFLEET_TOKEN, "
                "--token-file or token in the config file"
            )
        return f"{exc.message}: ask an admin for a token with that scope"

    def report(self, exc: HubError) -> None:
        """A failed call: a lost hub shows the banner; anything else one notification
        with the hub's one-line message (the same one at most every 10 s)."""
        if exc.unreachable:
            if self.hub_lost != exc.message:
                self.hub_lost = exc.message
                self._broadcast(HubStateChanged(exc.message))
            return
        text = self._auth_text(exc) if exc.auth else f"hub: {exc.message} ({exc.status})"
        now = time.monotonic()
        if now - self._notified.get(text, -1e9) < 10:
            return
        self._notified[text] = now
        self.notify(escape(text), severity="error", timeout=8)

    def _broadcast(self, message: HubStateChanged) -> None:
        for screen in self.screen_stack:
            if isinstance(screen, View):
                screen.post_message(HubStateChanged(message.error))

    # ------------------------------------------------------------------ navigation

    def action_view(self, name: str) -> None:
        """Open a top-level view: back to it if it is on the stack, else back to Pulse
        and push it there (so the breadcrumbs read Pulse > Fleet > pump-01)."""
        cls = VIEW_CLASSES[name]
        stack = self.screen_stack
        keep = next((i for i, s in enumerate(stack) if type(s) is cls), None)
        if keep is None:
            keep = next((i for i, s in enumerate(stack) if isinstance(s, PulseView)), 0)
        while len(self.screen_stack) > keep + 1:
            self.pop_screen()
        if type(self.screen) is not cls:
            self.push_screen(cls())

    def open_device(self, device_id: str) -> None:
        """Push the Device view."""
        self.push_screen(DeviceView(device_id))

    def open_rollout(self, rollout_id: str) -> None:
        """Push the Rollout detail view."""
        self.push_screen(RolloutView(rollout_id))

    def open_drift(self, model: str, version: int) -> None:
        """Push the Drift view of one model version."""
        self.push_screen(DriftView(model, version))

    def action_command_mode(self) -> None:
        self.push_screen(CommandPrompt(), callback=self._run_command)

    def _run_command(self, command: Command | None) -> None:
        if command is None:
            return
        if command.view == "quit":
            self.exit()
        elif command.view == "device":
            self.open_device(command.arg)
        elif command.view == "rollout":
            self.open_rollout(command.arg)
        elif command.view == "drift":
            name, _, version = command.arg.rpartition(":v")
            if not name or not version.isdigit():
                self.notify("drift: give a version as model:vN, e.g. pump:v2", severity="warning")
            else:
                self.open_drift(name, int(version))
        else:
            self.action_view(command.view)

    def action_help(self) -> None:
        screen = self.screen
        reason = screen.deploy_refusal() if isinstance(screen, View) else ""
        rows: list[tuple[str, str, str]] = []
        seen: set[str] = set()
        for active in screen.active_bindings.values():
            b = active.binding
            if b.key not in _own_keys(active.node):
                continue  # Textual's defaults and widgets' own keys (table cursor, editing)
            if not b.description or b.description in seen:
                continue
            seen.add(b.description)
            display = b.key_display or self.get_key_display(b)
            rows.append((display, b.description, "" if active.enabled else reason or "disabled"))
        rows.append(("↑ ↓ pgup pgdn", "Move in a table", ""))
        rows.append(("^p", "Command palette", ""))
        rows.append(("^t", "Dark / light theme", ""))
        title = screen.crumb if isinstance(screen, View) else "Console"
        self.push_screen(HelpScreen(title, rows))

    def action_toggle_theme(self) -> None:
        self.theme = THEMES[1] if self.theme == THEMES[0] else THEMES[0]
