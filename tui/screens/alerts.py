"""Alerts: the alerter's recorded transitions (a rule firing or resolving, with the
metric's value then), newest first; ``f`` keeps only the firings still in force."""

from __future__ import annotations

from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Static

from edgefleet_client import Alert, AlertPage
from tui.format import ago, number
from tui.messages import AlertsLoaded
from tui.screens.base import View
from tui.screens.device import clock_time
from tui.table_diff import Cell, sort_table, sync_table
from tui.widgets import LiveTable

COLUMNS = ("id", "time", "rule", "state", "value", "delivery")
STATE_STYLE = {"firing": "red b", "resolved": "green"}
#: How many of the newest transitions the view shows.
SHOWN = 200


def alert_cells(a: Alert) -> list[Cell]:
    """One transition's row (a firing still in force is marked ``firing now``)."""
    state = "firing now" if a.open else a.state
    return [
        Cell(str(a.id), sort=a.id),
        Cell(clock_time(a.ts), sort=a.ts),
        Cell(a.rule),
        Cell(state, style=STATE_STYLE.get(a.state, "") if a.open or a.state != "firing" else ""),
        Cell(number(a.value), sort=a.value),
        Cell(a.delivery, style="red" if a.delivery.startswith("failed") else "dim"),
    ]


def firing_lines(page: AlertPage, now: float, limit: int = 4) -> str:
    """Pulse's alert panel: the newest rules firing now (the panel's title counts them)."""
    if not page.firing:
        return "[green]no alert firing[/green]"
    lines = []
    for a in page.alerts[:limit]:
        lines.append(f"[red]●[/red] [b]{a.rule}[/b] = {number(a.value)} · since {ago(a.ts, now)}")
    hidden = page.firing - min(limit, len(page.alerts))
    if hidden > 0:
        lines.append(f"  [dim]and {hidden} more (:alerts)[/dim]")
    return "\n".join(lines)


class AlertsView(View):
    """Recorded alert transitions."""

    crumb = "Alerts"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("f", "toggle_open", "Firing only")]

    def __init__(self) -> None:
        super().__init__()
        self.open_only = False

    def compose_body(self) -> ComposeResult:
        yield Static("loading…", id="alerts-status", classes="status")
        table = LiveTable(id="alerts", cursor_type="row", zebra_stripes=True)
        for column in COLUMNS:
            table.add_column(column, key=column)
        yield table

    def reload(self) -> None:
        self.load()

    @work(exclusive=True, group="alerts", exit_on_error=False)
    async def load(self) -> None:
        page = await self.fetch(self.console.client.alerts(open_only=self.open_only, limit=SHOWN))
        if page is not None:
            self.post_message(AlertsLoaded(page))

    @on(AlertsLoaded)
    def _loaded(self, message: AlertsLoaded) -> None:
        page = message.page
        table = self.query_one("#alerts", DataTable)
        if sync_table(table, {str(a.id): alert_cells(a) for a in page.alerts}, COLUMNS).added:
            sort_table(table, "id", reverse=True)  # newest first
        which = "firing now" if self.open_only else "newest transitions"
        more = f" (the newest {SHOWN})" if page.next is not None else ""
        self.query_one("#alerts-status", Static).update(
            f"{page.firing} {'rule' if page.firing == 1 else 'rules'} firing · "
            f"{len(page.alerts)} {which}{more} · f: "
            f"{'all transitions' if self.open_only else 'firing only'}"
        )

    def action_toggle_open(self) -> None:
        """Show only the firings still in force, or every transition."""
        self.open_only = not self.open_only
        self.reload()
