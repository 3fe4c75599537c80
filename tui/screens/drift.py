"""Drift of one model version over the fleet: per-feature PSI / JS / Hellinger with the
verdict, and PSI per feature as bars against the threshold (textual-plot)."""

from __future__ import annotations

from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.widgets import DataTable, Static
from textual_hires_canvas import HiResMode
from textual_plot import PlotWidget

from edgefleet_client import DriftResult
from tui.format import number
from tui.messages import DriftLoaded
from tui.screens.base import View
from tui.table_diff import Cell, sync_table
from tui.widgets import LiveTable

COLUMNS = ("feature", "n", "psi", "js", "hellinger", "verdict")
VERDICT_STYLE = {"none": "green", "minor": "yellow", "moderate": "yellow b", "major": "red b"}
PSI_LIMIT = 0.25  # the usual "major shift" line, drawn for orientation


def _report_line(d: DriftResult) -> str:
    r: dict[str, Any] = dict(d.report or {})
    share = r.get("drifted_share")
    latency = r.get("latency_ms") or {}
    acc, ref_acc = r.get("accuracy_estimate"), r.get("reference_accuracy_estimate")
    parts = [f"{d.n} predictions"]
    if share is not None:
        parts.append(f"{share * 100:.0f}% of features drifted")
    if r.get("dataset_drift"):
        parts.append("[red b]dataset drift[/red b]")
    if acc is not None:
        parts.append(f"confidence {number(acc)} (reference {number(ref_acc)})")
    if isinstance(latency, dict) and latency.get("p95") is not None:
        parts.append(f"p95 {number(latency['p95'])} ms")
    return " · ".join(parts)


class DriftView(View):
    """One version's fleet drift."""

    def __init__(self, model: str, version: int) -> None:
        super().__init__()
        self.model, self.version = model, version
        self.crumb = f"{model}:v{version} drift"
        self.result: DriftResult | None = None

    def compose_body(self) -> ComposeResult:
        yield Static("loading…", id="drift-summary", classes="status")
        table = LiveTable(id="drift", cursor_type="row")
        for column in COLUMNS:
            table.add_column(column, key=column)
        yield table
        yield PlotWidget(id="drift-plot")

    def reload(self) -> None:
        self.load()

    @work(exclusive=True, group="drift", exit_on_error=False)
    async def load(self) -> None:
        result = await self.fetch(self.console.client.drift(self.model, self.version))
        if result is not None and result != self.result:
            self.post_message(DriftLoaded(result))

    @on(DriftLoaded)
    def _loaded(self, message: DriftLoaded) -> None:
        self.show(message.result)

    def show(self, d: DriftResult) -> None:
        """The summary line, the features table and the PSI bars."""
        self.result = d
        summary = self.query_one("#drift-summary", Static)
        plot = self.query_one("#drift-plot", PlotWidget)
        if d.report is None:
            summary.update(f"{self.model}:v{self.version}: no metric windows stored yet")
            plot.display = False
            return
        summary.update(_report_line(d))
        rows = {
            f.name: [
                Cell(f.name),
                Cell(str(f.n), sort=f.n),
                Cell(number(f.psi), sort=f.psi),
                Cell(number(f.js), sort=f.js),
                Cell(number(f.hellinger), sort=f.hellinger),
                Cell(f.verdict or "-", style=VERDICT_STYLE.get(f.verdict or "", "")),
            ]
            for f in d.features
        }
        sync_table(self.query_one("#drift", DataTable), rows, COLUMNS)
        scored = [f for f in d.features if f.psi is not None]
        plot.display = bool(scored)
        if scored:
            plot.clear()
            styles = ["red" if (f.psi or 0) >= PSI_LIMIT else "green" for f in scored]
            plot.bar([f.name for f in scored], [f.psi or 0.0 for f in scored], bar_style=styles)
            plot.plot(
                [0.5, len(scored) + 0.5],
                [PSI_LIMIT, PSI_LIMIT],
                line_style="red",
                hires_mode=HiResMode.BRAILLE,
            )
            plot.set_ylabel("PSI")
