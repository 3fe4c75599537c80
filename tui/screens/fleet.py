"""Fleet: a page of devices from the hub, filtered, sorted, updated by keyed diffs.

A large fleet is paged on the hub (``]``/``[``), never loaded whole: ``tag:``, an
online/offline ``state:`` and ``drift:`` go to the API, the other terms filter the page
shown. Each device's worst drift verdict is the hub's (its active version over the
previous and the current clock hour). ``f`` shows only faulty devices (the hub decides:
not connected, last deployment failed, or drift/major). ``Space`` marks devices
(across pages); ``D`` deploys one version to every marked device after a typed
confirmation."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Input, Static

from edgefleet_client import Device, DevicePage
from tui.filters import (
    FLEET_KEYS,
    FilterError,
    Term,
    device_state,
    match_device,
    parse,
    server_params,
)
from tui.format import VERDICT_RANK, VERDICT_STYLE, ago, ref, size
from tui.messages import FleetPageLoaded
from tui.screens.base import View
from tui.screens.modals import DeployDialog, TypedConfirm
from tui.table_diff import Cell, sort_table, sync_table
from tui.widgets import FilterInput, LiveTable

COLUMNS = (
    "id",
    "tags",
    "state",
    "seen",
    "active",
    "previous",
    "shadow",
    "drift",
    "buffer",
    "cpu",
    "rss",
    "disk",
)
STATE_STYLE = {"online": "green", "offline": "red", "never": "dim"}


def device_cells(d: Device, now: float, marked: bool = False) -> list[Cell]:
    """One device's row (a marked device's id carries a check mark)."""
    state = device_state(d)
    h = d.health
    return [
        Cell(f"✓ {d.id}", sort=d.id, style="b yellow") if marked else Cell(d.id),
        Cell(",".join(d.tags)),
        Cell(state, style=STATE_STYLE[state]),
        Cell(ago(d.last_seen, now), sort=-(d.last_seen or 0.0)),
        Cell(ref(d.active), sort=(d.active.name, d.active.version) if d.active else None),
        Cell(ref(d.previous)),
        Cell(ref(d.shadow)),
        Cell(
            d.drift or "-",
            sort=VERDICT_RANK.get(d.drift or "", -1),
            style=VERDICT_STYLE.get(d.drift or "", "dim"),
        ),
        Cell(
            str(d.buffer_depth), sort=d.buffer_depth, style="yellow" if d.buffer_depth > 10 else ""
        ),
        Cell("-" if h.cpu_percent is None else f"{h.cpu_percent:.0f}%", sort=h.cpu_percent),
        Cell(size(h.rss_bytes), sort=h.rss_bytes),
        Cell(size(h.disk_free_bytes), sort=h.disk_free_bytes),
    ]


class FleetView(View):
    """Devices, one page at a time."""

    crumb = "Fleet"
    PAGE_SIZE = 200
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("enter", "open", "Open", show=False),
        Binding("s", "sort", "Sort"),
        Binding("f", "faulty", "Faulty only"),
        Binding("S", "reverse", "Reverse", show=False),
        Binding("right_square_bracket", "next_page", "Next page", key_display="]"),
        Binding("left_square_bracket", "prev_page", "Prev page", key_display="["),
        Binding("space", "mark", "Mark", key_display="space"),
        Binding("c", "clear_marks", "Clear marks", show=False),
        Binding("D", "deploy_marked", "Deploy to marked", key_display="D"),
    ]
    DEPLOY_ACTIONS = frozenset({"deploy_marked"})

    def __init__(self) -> None:
        super().__init__()
        self.terms: tuple[Term, ...] = ()
        self.page_starts: list[str | None] = [None]
        self.page: DevicePage | None = None
        self.sort_column: str | None = None
        self.sort_reverse = False
        self.shown: list[Device] = []
        self.marked: set[str] = set()
        self.faulty_only = False

    def compose_body(self) -> ComposeResult:
        yield Static("", id="fleet-reason", classes="reason")
        yield Static("loading…", id="fleet-status", classes="status")
        yield FilterInput(
            placeholder="text  tag:site-a  version:2  state:offline  drift:major  !term",
            id="filter",
        )
        table = LiveTable(id="fleet", cursor_type="row", zebra_stripes=True)
        for column in COLUMNS:
            table.add_column(column, key=column)
        yield table

    def reload(self) -> None:
        self.load_page()

    @work(exclusive=True, group="fleet", exit_on_error=False)
    async def load_page(self) -> None:
        params: dict[str, Any] = server_params(self.terms)
        if self.faulty_only:
            params["faulty"] = True
        page = await self.fetch(
            self.console.client.devices(after=self.page_starts[-1], limit=self.PAGE_SIZE, **params)
        )
        if page is not None:
            self.post_message(FleetPageLoaded(page))

    @on(FleetPageLoaded)
    def _page_loaded(self, message: FleetPageLoaded) -> None:
        self.show_page(message.page)

    def show_page(self, page: DevicePage) -> None:
        """Apply a fetched page to the table (keyed diff, then the chosen sort)."""
        self.page = page
        now = self.console.clock()
        self.shown = [d for d in page.devices if match_device(d, self.terms)]
        table = self.query_one("#fleet", DataTable)
        with self.app.batch_update():
            rows = {d.id: device_cells(d, now, d.id in self.marked) for d in self.shown}
            stats = sync_table(table, rows, COLUMNS)
            if self.sort_column and (stats.added or stats.changed_cells):
                sort_table(table, self.sort_column, self.sort_reverse)
        first = (len(self.page_starts) - 1) * self.PAGE_SIZE
        more = " · ] next page" if page.next else ""
        filt = (
            f" · filter: {' '.join(self._term_text(t) for t in self.terms)}" if self.terms else ""
        )
        sort = (
            f" · sorted by {self.sort_column}{' ↓' if self.sort_reverse else ''}"
            if self.sort_column
            else ""
        )
        marks = f" · {len(self.marked)} marked (D deploys, c clears)" if self.marked else ""
        faulty = " · faulty only (f: all)" if self.faulty_only else ""
        self.query_one("#fleet-status", Static).update(
            f"page {len(self.page_starts)}: {len(self.shown)} of {len(page.devices)} devices "
            f"(from #{first + 1}){faulty}{filt}{sort}{more}{marks}"
        )

    @staticmethod
    def _term_text(t: Term) -> str:
        return ("!" if t.negated else "") + (f"{t.key}:" if t.key else "") + t.value

    def action_filter(self) -> None:
        box = self.query_one("#filter", FilterInput)
        box.display = True
        box.focus()

    @on(Input.Submitted, "#filter")
    def _apply_filter(self, event: Input.Submitted) -> None:
        try:
            self.terms = parse(event.value, FLEET_KEYS)
        except FilterError as exc:
            self.notify(str(exc), severity="warning", markup=False)
            return
        box = self.query_one("#filter", FilterInput)
        box.display = bool(event.value)
        self.page_starts = [None]
        self.query_one("#fleet", DataTable).focus()
        self.reload()

    def action_faulty(self) -> None:
        """Show only faulty devices (offline or never seen, last deployment failed,
        drift or major), or everyone again; from the first page."""
        self.faulty_only = not self.faulty_only
        self.page_starts = [None]
        self.reload()

    def action_sort(self) -> None:
        """Sort by the next column (id, tags, state, seen, ...)."""
        i = -1 if self.sort_column is None else COLUMNS.index(self.sort_column)
        self.sort_column, self.sort_reverse = None, False
        self.sort_by(COLUMNS[(i + 1) % len(COLUMNS)])

    def action_reverse(self) -> None:
        """Reverse the current sort."""
        self.sort_by(self.sort_column or COLUMNS[0])

    def sort_by(self, column: str) -> None:
        """Sort by ``column``; the same column again reverses."""
        if column == self.sort_column:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_column, self.sort_reverse = column, False
        sort_table(self.query_one("#fleet", DataTable), column, self.sort_reverse)
        if self.page is not None:
            self.show_page(self.page)

    @on(DataTable.HeaderSelected, "#fleet")
    def _header(self, event: DataTable.HeaderSelected) -> None:
        self.sort_by(str(event.column_key.value))

    @on(DataTable.RowSelected, "#fleet")
    def _selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.console.open_device(str(event.row_key.value))

    def action_open(self) -> None:
        table = self.query_one("#fleet", DataTable)
        if table.row_count:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
            if key is not None:
                self.console.open_device(str(key))

    def action_next_page(self) -> None:
        if self.page is not None and self.page.next is not None:
            self.page_starts.append(self.page.next)
            self.reload()

    def action_prev_page(self) -> None:
        if len(self.page_starts) > 1:
            self.page_starts.pop()
            self.reload()

    def action_mark(self) -> None:
        """Mark or unmark the device under the cursor, and move to the next row."""
        table = self.query_one("#fleet", DataTable)
        if not table.row_count:
            return
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        if key is None:
            return
        self.marked ^= {str(key)}
        if self.page is not None:
            self.show_page(self.page)
        table.action_cursor_down()

    def action_clear_marks(self) -> None:
        """Unmark every device."""
        self.marked.clear()
        if self.page is not None:
            self.show_page(self.page)

    def action_deploy_marked(self) -> None:
        if not self.marked:
            self.notify("mark devices first (space), then D deploys to them", severity="warning")
            return
        self.deploy_marked()

    @work(exclusive=True, group="fleet-action", exit_on_error=False)
    async def deploy_marked(self) -> None:
        """One version to every marked device: pick it, type the device count to
        confirm, then one signed directive per device; say which failed and why."""
        targets = sorted(self.marked)
        versions = await self.registered_versions()
        if versions is None:
            return
        label = f"{len(targets)} marked devices"
        choice = await self.app.push_screen_wait(DeployDialog(label, versions, None))
        if choice is None:
            return
        more = f" and {len(targets) - 4} more" if len(targets) > 4 else ""
        shown = ", ".join(targets[:4]) + more
        prompt = f"Deploy {choice.name}:v{choice.version} ({choice.mode}) to {shown}?"
        if not await self.app.push_screen_wait(TypedConfirm(prompt, str(len(targets)))):
            self.notify("deploy cancelled")
            return
        mode: Literal["active", "shadow"] = "shadow" if choice.mode == "shadow" else "active"
        failed: list[str] = []
        for device_id in targets:
            result = await self.fetch(
                self.console.client.deploy(
                    device_id, choice.name, choice.version, mode=mode, downgrade=choice.downgrade
                )
            )
            if result is None:
                failed.append(f"{device_id} ({self.last_error})")
        sent = len(targets) - len(failed)
        what = f"{choice.name}:v{choice.version} ({mode}) sent to {sent} of {len(targets)} devices"
        if failed:
            self.notify(f"{what}; refused: {'; '.join(failed)}", severity="error", markup=False)
        else:
            self.notify(what)
            self.marked.clear()
        self.reload()
