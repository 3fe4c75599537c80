"""Events: the live tail of the hub's event stream, with follow/pause and a filter."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Input, Static

from edgefleet_client import Event
from tui.filters import EVENT_KEYS, FilterError, Term, match_event, parse
from tui.format import ref
from tui.messages import EventsArrived
from tui.screens.base import View
from tui.screens.device import KIND_STYLE, clock_time
from tui.table_diff import Cell, sort_table, sync_table
from tui.widgets import FilterInput, LiveTable

COLUMNS = ("id", "time", "device", "kind", "model", "detail")
MAX_ROWS = 500


def tail_cells(e: Event) -> list[Cell]:
    """One event's row in the tail."""
    return [
        Cell(str(e.id), sort=e.id),
        Cell(clock_time(e.ts), sort=e.ts),
        Cell(e.device_id),
        Cell(e.kind, style=KIND_STYLE.get(e.kind, "")),
        Cell(ref(e.model)),
        Cell(e.detail),
    ]


class EventsView(View):
    """The live tail (the app keeps the stream; this view shows and filters it)."""

    crumb = "Events"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "follow", "Follow/pause"),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("enter", "open", "Open device", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.following = True
        self.terms: tuple[Term, ...] = ()
        self.missed = 0

    def compose_body(self) -> ComposeResult:
        yield Static("", id="events-status", classes="status")
        yield FilterInput(
            placeholder="text  device:pump-01  kind:failed  model:pump:v2  !term", id="filter"
        )
        table = LiveTable(id="events", cursor_type="row", zebra_stripes=True)
        for column in COLUMNS:
            table.add_column(column, key=column)
        yield table

    def reload(self) -> None:
        if self.following:
            self.render_tail()

    def render_tail(self) -> None:
        """Show the newest events that pass the filter (keyed diff; cursor to the end)."""
        shown = [e for e in self.console.recent_events if match_event(e, self.terms)][-MAX_ROWS:]
        table = self.query_one("#events", DataTable)
        with self.app.batch_update():
            stats = sync_table(table, {str(e.id): tail_cells(e) for e in shown}, COLUMNS)
            if stats.added:
                sort_table(table, "id", reverse=False)  # oldest first, the tail at the bottom
            if stats.added and self.following and table.row_count:
                table.move_cursor(row=table.row_count - 1)
        self.missed = 0
        self._status()

    def _status(self) -> None:
        mode = "[green]following[/green]" if self.following else "[yellow]paused[/yellow]"
        new = f" · {self.missed} new" if self.missed else ""
        filt = f" · filter: {self.query_one('#filter', FilterInput).value}" if self.terms else ""
        stream = self.console.stream_state
        self.query_one("#events-status", Static).update(
            f"{mode}{new}{filt} · stream {stream} · space follow/pause · / filter"
        )

    def hub_status_changed(self) -> None:
        self._status()  # the stream's state is on the status line

    def on_events_arrived(self, message: EventsArrived) -> None:
        if self.following:
            self.render_tail()
        else:
            self.missed += sum(1 for e in message.events if match_event(e, self.terms))
            self._status()

    def action_follow(self) -> None:
        self.following = not self.following
        if self.following:
            self.render_tail()
        else:
            self._status()

    def action_filter(self) -> None:
        box = self.query_one("#filter", FilterInput)
        box.display = True
        box.focus()

    @on(Input.Submitted, "#filter")
    def _apply_filter(self, event: Input.Submitted) -> None:
        try:
            self.terms = parse(event.value, EVENT_KEYS)
        except FilterError as exc:
            self.notify(str(exc), severity="warning", markup=False)
            return
        self.query_one("#filter", FilterInput).display = bool(event.value)
        self.query_one("#events", DataTable).focus()
        self.render_tail()

    @on(DataTable.RowSelected, "#events")
    def _selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def action_open(self) -> None:
        table = self.query_one("#events", DataTable)
        if table.row_count:
            row = table.get_row_at(table.cursor_row)
            self.console.open_device(row[2].text)
