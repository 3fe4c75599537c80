"""Pulse, the landing view: devices online/offline, versions with counts, active
rollouts with a progress bar each, the alerts firing, the newest events and the hub's
health."""

from __future__ import annotations

from rich.markup import escape
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Grid, Vertical
from textual.widgets import DataTable, Label, ProgressBar, Static

from edgefleet_client import AlertPage, FleetSummary, HubError, Rollout
from tui.format import ago
from tui.messages import AlertsLoaded, EventsArrived, RolloutsLoaded, SummaryLoaded
from tui.screens.alerts import firing_lines
from tui.screens.base import View
from tui.screens.events import tail_cells
from tui.screens.rollouts import STATE_STYLE
from tui.table_diff import Cell, sort_table, sync_table
from tui.widgets import LiveTable

VERSION_COLUMNS = ("version", "active", "shadow")
EVENT_COLUMNS = ("id", "time", "device", "kind", "model", "detail")


class RolloutBar(Vertical):
    """One active rollout: its label and a progress bar over its stages."""

    def __init__(self, r: Rollout) -> None:
        super().__init__(id=f"ro-{r.id}", classes="rollout-bar")
        self.rollout = r

    def compose(self) -> ComposeResult:
        yield Label(self._label(self.rollout))
        yield ProgressBar(total=max(1, len(self.rollout.stages)), show_eta=False)

    @staticmethod
    def _label(r: Rollout) -> str:
        style = STATE_STYLE.get(r.state, "")
        return (
            f"[b]{r.id}[/b] {r.model}:v{r.target_version} [{style}]{r.state}[/{style}] "
            f"stage {min(r.stage + 1, len(r.stages))}/{len(r.stages)}"
        )

    def on_mount(self) -> None:
        self.set(self.rollout)

    def set(self, r: Rollout) -> None:
        """Show ``r``'s state and progress."""
        self.rollout = r
        self.query_one(Label).update(self._label(r))
        self.query_one(ProgressBar).update(
            total=max(1, len(r.stages)), progress=r.progress * len(r.stages)
        )


class PulseView(View):
    """The fleet at a glance."""

    crumb = "Pulse"

    def compose_body(self) -> ComposeResult:
        with Grid(id="pulse"):
            yield Static("loading…", id="pulse-devices", classes="panel")
            with Vertical(id="pulse-rollouts", classes="panel"):
                yield Static("none", id="no-rollouts")
            versions = LiveTable(id="pulse-versions", cursor_type="none")
            for column in VERSION_COLUMNS:
                versions.add_column(column, key=column)
            yield versions
            yield Static("", id="pulse-hub", classes="panel")
            yield Static("loading…", id="pulse-alerts", classes="panel")
            events = LiveTable(id="pulse-events", cursor_type="none")
            for column in EVENT_COLUMNS:
                events.add_column(column, key=column)
            yield events

    def on_mount(self) -> None:
        titles = {"#pulse-devices": "Devices", "#pulse-rollouts": "Active rollouts",
                  "#pulse-versions": "Versions in the fleet", "#pulse-hub": "Hub",
                  "#pulse-alerts": "Alerts",
                  "#pulse-events": "Recent events"}  # fmt: skip
        for selector, title in titles.items():
            self.query_one(selector).border_title = title
        super().on_mount()

    def reload(self) -> None:
        self.load()
        self.show_events()
        self.show_hub()

    @work(exclusive=True, group="pulse", exit_on_error=False)
    async def load(self) -> None:
        client = self.console.client
        summary = await self.fetch(client.fleet_summary())
        if summary is not None:
            self.post_message(SummaryLoaded(summary))
        rollouts = await self.fetch(client.rollouts(active=True))
        if rollouts is not None:
            self.post_message(RolloutsLoaded(rollouts))
        try:
            alerts = await client.alerts(open_only=True, limit=4)
        except HubError as exc:
            if exc.status == 404:  # a hub from before /v1/alerts
                box = self.query_one("#pulse-alerts", Static)
                box.update("[dim]this hub serves no alerts[/dim]")
            else:
                self.console.report(exc)
            return
        self.post_message(AlertsLoaded(alerts))

    @on(AlertsLoaded)
    def _alerts(self, message: AlertsLoaded) -> None:
        self.show_alerts(message.page)

    def show_alerts(self, page: AlertPage) -> None:
        """How many rules fire now and the newest of them; the panel turns red."""
        box = self.query_one("#pulse-alerts", Static)
        box.update(firing_lines(page, self.console.clock()))
        box.border_title = f"Alerts: {page.firing} firing" if page.firing else "Alerts"
        box.set_class(page.firing > 0, "firing")

    @on(SummaryLoaded)
    def _summary(self, message: SummaryLoaded) -> None:
        self.show_summary(message.summary)

    @on(RolloutsLoaded)
    async def _rollouts(self, message: RolloutsLoaded) -> None:
        await self.show_rollouts(message.rollouts)

    def show_summary(self, s: FleetSummary) -> None:
        """Device counts and the versions table."""
        self.query_one("#pulse-devices", Static).update(
            f"[b]{s.total}[/b] devices   [green]● {s.online} online[/green]   "
            f"[red]○ {s.offline} offline[/red]\n"
            f"[dim]{s.never_seen} never seen · {s.without_model} without a model[/dim]\n"
            f"{s.buffered_windows} windows buffered"
        )
        rows = {
            v.label: [
                Cell(v.label),
                Cell(str(v.active), sort=v.active),
                Cell(str(v.shadow), sort=v.shadow),
            ]
            for v in s.versions
        }
        sync_table(self.query_one("#pulse-versions", DataTable), rows, VERSION_COLUMNS)

    async def show_rollouts(self, rollouts: tuple[Rollout, ...]) -> None:
        """One bar per active rollout: update those that stayed, add and remove the rest."""
        box = self.query_one("#pulse-rollouts", Vertical)
        present = {bar.rollout.id: bar for bar in box.query(RolloutBar)}
        wanted = {r.id: r for r in rollouts}
        for rid, bar in present.items():
            if rid not in wanted:
                await bar.remove()
        for rid, r in wanted.items():
            if rid in present:
                present[rid].set(r)
            else:
                await box.mount(RolloutBar(r))
        self.query_one("#no-rollouts", Static).display = not wanted

    def show_events(self) -> None:
        """The newest events from the app's stream."""
        recent = list(self.console.recent_events)[-8:]
        rows = {str(e.id): tail_cells(e) for e in reversed(recent)}
        table = self.query_one("#pulse-events", DataTable)
        if sync_table(table, rows, EVENT_COLUMNS).added:
            sort_table(table, "id", reverse=True)  # newest first

    def show_hub(self) -> None:
        """Where the console is connected, as whom, and the stream's state."""
        c = self.console
        me = c.identity
        lost = (
            f"[red]lost: {escape(c.hub_lost)}[/red]" if c.hub_lost else "[green]reachable[/green]"
        )
        checked = ago(c.last_contact, c.clock()) if c.last_contact else "-"
        self.query_one("#pulse-hub", Static).update(
            f"{c.hub_url} · hub v{c.hub_version or '?'}\n"
            f"{lost} · last answer {checked} ago\n"
            f"{escape(me.name) if me else '?'} ({', '.join(me.scopes) if me else ''}) · "
            f"stream {c.stream_state}"
        )

    def on_events_arrived(self, message: EventsArrived) -> None:
        self.show_events()

    def hub_status_changed(self) -> None:
        self.show_hub()
