"""Models: every registered version with its size, quantization, digest and where it
runs (devices active / in shadow); Enter opens the version's fleet drift."""

from __future__ import annotations

import time
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Static

from edgefleet_client import ModelVersionInfo
from tui.format import masked, size
from tui.messages import ModelsLoaded
from tui.screens.base import View
from tui.table_diff import Cell, sync_table
from tui.widgets import LiveTable

COLUMNS = ("version", "status", "size", "quant", "created", "sha256", "active", "shadow")


def version_cells(
    v: ModelVersionInfo, active: int, shadow: int, redact: bool = False
) -> list[Cell]:
    """One version's row (``redact``: its creation time and digest masked)."""
    created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(v.created))
    digest = v.sha256[:12]
    if redact:
        created, digest = masked(created), masked(digest)
    return [
        Cell(f"{v.name}:v{v.version}", sort=(v.name, v.version)),
        Cell(v.status, style="red" if v.status in ("revoked", "withdrawn") else ""),
        Cell(size(v.size), sort=v.size),
        Cell(v.quantization or "-"),
        Cell(created, sort=v.created),
        Cell(digest),
        Cell(str(active), sort=active, style="b" if active else "dim"),
        Cell(str(shadow), sort=shadow, style="cyan" if shadow else "dim"),
    ]


class ModelsView(View):
    """Registered model versions."""

    crumb = "Models"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "open", "Drift", show=False)]

    def compose_body(self) -> ComposeResult:
        yield Static("loading…", id="models-status", classes="status")
        table = LiveTable(id="models", cursor_type="row", zebra_stripes=True)
        for column in COLUMNS:
            table.add_column(column, key=column)
        yield table

    def reload(self) -> None:
        self.load()

    @work(exclusive=True, group="models", exit_on_error=False)
    async def load(self) -> None:
        client = self.console.client
        models = await self.fetch(client.models())
        summary = await self.fetch(client.fleet_summary())
        if models is None:
            return
        counts = {
            (c.model, c.version): (c.active, c.shadow)
            for c in (summary.versions if summary else ())
        }
        found: list[tuple[ModelVersionInfo, int, int]] = []
        for m in models:
            for v in await self.fetch(client.versions(m.name)) or ():
                found.append((v, *counts.get((v.name, v.version), (0, 0))))
        self.post_message(ModelsLoaded(tuple(found), len(models)))

    @on(ModelsLoaded)
    def _loaded(self, message: ModelsLoaded) -> None:
        redact = self.console.redact
        rows = {
            f"{v.name}:{v.version}": version_cells(v, a, s, redact) for v, a, s in message.versions
        }
        sync_table(self.query_one("#models", DataTable), rows, COLUMNS)
        self.query_one("#models-status", Static).update(
            f"{message.models} models · {len(rows)} versions · Enter shows a version's fleet drift"
        )

    @on(DataTable.RowSelected, "#models")
    def _selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def action_open(self) -> None:
        table = self.query_one("#models", DataTable)
        if table.row_count:
            key = str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
            name, _, version = key.rpartition(":")
            self.console.open_drift(name, int(version))
