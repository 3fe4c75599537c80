"""Device: state, versions, health, its health history (predictions, p95 latency, error
rate per window: ``m`` cycles) and the reference vs live histogram of one feature of its
active version on this device (``f`` cycles) as plots, the drift of that version here and
its recent events; deploy a version (active or shadow) or roll back to the previous one."""

from __future__ import annotations

import time
from typing import ClassVar, Literal

from rich.markup import escape
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import DataTable, Static
from textual_plot import PlotWidget

from edgefleet_client import DeviceDetail, DeviceHistory, DriftBins, DriftResult, Event
from tui.filters import device_state
from tui.format import ago, number, ref, size
from tui.messages import DeviceLoaded, DevicePlotsLoaded
from tui.plots import METRICS, compact, show_bins, show_history
from tui.screens.base import View
from tui.screens.modals import DeployChoice, DeployDialog, TypedConfirm
from tui.table_diff import Cell, sort_table, sync_table
from tui.widgets import LiveTable

EVENT_COLUMNS = ("time", "kind", "model", "detail")
KIND_STYLE = {"failed": "red", "refused": "red", "rolled_back": "yellow", "activated": "green",
              "probation_passed": "green", "shadow_started": "cyan"}  # fmt: skip


def clock_time(ts: float) -> str:
    """``HH:MM:SS`` in UTC (the console shows hub times in UTC)."""
    return time.strftime("%H:%M:%S", time.gmtime(ts))


def event_cells(e: Event) -> list[Cell]:
    """One event's row in a device's event list."""
    return [
        Cell(clock_time(e.ts), sort=(e.ts, e.id)),
        Cell(e.kind, style=KIND_STYLE.get(e.kind, "")),
        Cell(ref(e.model)),
        Cell(e.detail),
    ]


DRIFTED = ("drift", "major")


def drift_line(d: DeviceDetail, drift: DriftResult | None) -> str:
    """One line: the device's active version's drift here, worst features first."""
    if d.active is None:
        return "[dim]no active model: nothing to drift[/dim]"
    head = f"drift of {d.active.label} here: "
    if drift is None:
        return f"[dim]{head}unavailable[/dim]"
    if drift.report is None:
        return f"[dim]{head}no metric windows yet[/dim]"
    worst = sorted(
        (f for f in drift.features if f.verdict in DRIFTED), key=lambda f: -(f.psi or 0.0)
    )
    if worst:
        named = ", ".join(
            f"[red b]{f.name}[/red b] {f.verdict} (PSI {number(f.psi)})" for f in worst[:3]
        )
        more = f" and {len(worst) - 3} more" if len(worst) > 3 else ""
        found = f"{len(worst)} of {len(drift.features)} features drifted: {named}{more}"
    else:
        found = f"[green]no feature drifted[/green] ({len(drift.features)} features)"
    latency = (drift.report or {}).get("latency_ms") or {}
    p95 = latency.get("p95") if isinstance(latency, dict) else None
    tail = f" · p95 {number(p95)} ms" if p95 is not None else ""
    return f"{head}{drift.n} predictions · {found}{tail}"


class DeviceView(View):
    """One device."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("d", "deploy", "Deploy"),
        Binding("b", "rollback", "Roll back"),
        Binding("m", "next_metric", "Metric"),
        Binding("f", "next_feature", "Feature"),
        Binding("p", "toggle_bottom", "Plots/events"),
    ]
    DEPLOY_ACTIONS = frozenset({"deploy", "rollback"})
    #: How far back the health history goes.
    HISTORY_HOURS = 6.0
    #: From this terminal height on, the plots and the events show together; below
    #: it one of them does (``p`` switches), so a plot keeps room to draw at 80x24.
    TALL = 40

    def __init__(self, device_id: str) -> None:
        super().__init__()
        self.device_id = device_id
        self.crumb = device_id
        self.detail: DeviceDetail | None = None
        self.metric = 0  # index in METRICS
        self.feature: str | None = None  # None: the version's first feature
        self.history: DeviceHistory | None = None
        self.bins: DriftBins | None = None
        self.bottom = "plots"  # what a short terminal shows under the drift line

    def compose_body(self) -> ComposeResult:
        yield Static("", id="device-reason", classes="reason")
        with Horizontal(id="device-top"):
            yield Static("loading…", id="device-state", classes="panel")
            yield Static("", id="device-versions", classes="panel")
        yield Static("", id="device-drift", classes="status")
        with Horizontal(id="device-plots"):
            yield compact(PlotWidget(id="device-history"))
            yield compact(PlotWidget(id="device-bins"))
        yield Static("", id="device-plot-caption", classes="status")
        table = LiveTable(id="device-events", cursor_type="row")
        for column in EVENT_COLUMNS:
            table.add_column(column, key=column)
        yield table

    def reload(self) -> None:
        self.load()

    @work(exclusive=True, group="device", exit_on_error=False)
    async def load(self) -> None:
        client = self.console.client
        detail = await self.fetch(client.device(self.device_id))
        if detail is None:
            if self.detail is None and self.last_error:
                self.query_one("#device-state", Static).update(escape(self.last_error))
            return
        recent = await self.fetch(client.latest_events(limit=30, device=self.device_id))
        drift = None
        if detail.active is not None:
            a = detail.active
            drift = await self.fetch(client.drift(a.name, a.version, device=self.device_id))
        self.post_message(DeviceLoaded(detail, recent or (), drift))
        history = await self.fetch(
            client.device_history(
                self.device_id, hours=self.HISTORY_HOURS, until=self.console.clock()
            )
        )
        bins = None
        if detail.active is not None:
            a = detail.active
            shown = self.bins
            if shown is not None and (shown.model, shown.version) != (a.name, a.version):
                self.feature = None  # another version now: its first feature
            bins = await self.fetch(
                client.drift_bins(a.name, a.version, feature=self.feature, device=self.device_id)
            )
        self.post_message(DevicePlotsLoaded(history, bins))

    @on(DeviceLoaded)
    def _loaded(self, message: DeviceLoaded) -> None:
        self.show(message.detail, list(message.events))
        self.query_one("#device-drift", Static).update(drift_line(message.detail, message.drift))

    @on(DevicePlotsLoaded)
    def _plots_loaded(self, message: DevicePlotsLoaded) -> None:
        self.history, self.bins = message.history, message.bins
        self.show_plots()

    def show_plots(self) -> None:
        """Draw the health history's chosen metric and the chosen feature's bins."""
        captions = []
        history = self.query_one("#device-history", PlotWidget)
        if self.history is None:
            history.display = False
            captions.append("health history unavailable")
        else:
            captions.append(show_history(history, self.history, METRICS[self.metric]))
        bins = self.query_one("#device-bins", PlotWidget)
        if self.bins is None:
            bins.display = False
        else:
            captions.append(show_bins(bins, self.bins))
        self.query_one("#device-plot-caption", Static).update(escape(" · ".join(captions)))

    def on_resize(self) -> None:
        self.arrange_bottom()

    def arrange_bottom(self) -> None:
        """Plots and events together on a tall terminal; on a short one the chosen one."""
        tall = self.app.size.height >= self.TALL
        plots = tall or self.bottom == "plots"
        self.query_one("#device-plots").display = plots
        self.query_one("#device-plot-caption").display = plots
        self.query_one("#device-events").display = tall or self.bottom == "events"

    def action_toggle_bottom(self) -> None:
        self.bottom = "events" if self.bottom == "plots" else "plots"
        self.arrange_bottom()
        if self.app.size.height >= self.TALL:
            self.notify("the plots and the events both show at this height")

    def action_next_metric(self) -> None:
        self.metric = (self.metric + 1) % len(METRICS)
        self.show_plots()

    def action_next_feature(self) -> None:
        if self.bins is None:
            self.notify("no active model here: no feature to show", severity="warning")
            return
        names = self.bins.features
        self.feature = names[(names.index(self.bins.feature) + 1) % len(names)]
        self.reload()

    def show(self, d: DeviceDetail, events: list[Event]) -> None:
        """Render the device and its recent events (newest first)."""
        self.detail = d
        now = self.console.clock()
        h = d.health
        state = device_state(d)
        colour = {"online": "green", "offline": "red", "never": "dim"}[state]
        self.query_one("#device-state", Static).update(
            f"[b]{d.id}[/b]  [{colour}]{state}[/{colour}]\n"
            f"tags      {', '.join(d.tags) or '-'}\n"
            f"last seen {ago(d.last_seen, now)} ago\n"
            f"cpu {'-' if h.cpu_percent is None else f'{h.cpu_percent:.0f}%'}  "
            f"rss {size(h.rss_bytes)}  disk free {size(h.disk_free_bytes)}\n"
            f"buffer    {d.buffer_depth} windows · metrics seq {d.metrics_seq}"
        )
        self.query_one("#device-versions", Static).update(
            f"active    [b]{ref(d.active)}[/b]\n"
            f"previous  {ref(d.previous)}\n"
            f"shadow    {ref(d.shadow)}\n"
            f"revoked   {'yes' if d.revoked_at else 'no'}"
        )
        rows = {str(e.id): event_cells(e) for e in reversed(events)}
        table = self.query_one("#device-events", DataTable)
        if sync_table(table, rows, EVENT_COLUMNS).added:
            sort_table(table, "time", reverse=True)  # newest first

    def action_deploy(self) -> None:
        self.open_deploy()

    @work(exclusive=True, group="device-action", exit_on_error=False)
    async def open_deploy(self) -> None:
        versions = await self.registered_versions()
        if versions is None:
            return
        current = self.detail.active.version if self.detail and self.detail.active else None
        choice = await self.app.push_screen_wait(DeployDialog(self.device_id, versions, current))
        if choice is not None:
            await self.deploy(choice)

    async def deploy(self, choice: DeployChoice) -> None:
        """Ask the hub to sign and publish the directive; say what happened."""
        mode: Literal["active", "shadow"] = "shadow" if choice.mode == "shadow" else "active"
        result = await self.fetch(
            self.console.client.deploy(
                self.device_id, choice.name, choice.version, mode=mode, downgrade=choice.downgrade
            )
        )
        if result is not None:
            self.notify(
                f"{result.model}:v{result.version} ({result.mode}) sent to {result.device_id} "
                f"(directive #{result.seq})"
            )
            self.reload()

    def action_rollback(self) -> None:
        self.rollback()

    @work(exclusive=True, group="device-action", exit_on_error=False)
    async def rollback(self) -> None:
        d = self.detail
        if d is None or d.previous is None:
            self.notify(
                f"{self.device_id} has no previous version to roll back to", severity="warning"
            )
            return
        prompt = f"Roll {self.device_id} back from {ref(d.active)} to {ref(d.previous)}?"
        if await self.app.push_screen_wait(TypedConfirm(prompt, self.device_id)):
            await self.deploy(DeployChoice(d.previous.name, d.previous.version, "active", True))
