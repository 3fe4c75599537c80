"""Drift of one model version over the fleet: per-feature PSI / JS / Hellinger with the
verdict; for the feature under the table's cursor, its PSI per hour with the threshold
drawn and its reference vs live histogram (textual-plot)."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import DataTable, Static
from textual_plot import PlotWidget

from edgefleet_client import DriftBins, DriftHistory, DriftResult
from tui.format import VERDICT_STYLE, number
from tui.messages import DriftLoaded, DriftPlotsLoaded
from tui.plots import compact, show_bins, show_psi_history
from tui.screens.base import View
from tui.table_diff import Cell, sync_table
from tui.widgets import LiveTable

COLUMNS = ("feature", "n", "psi", "js", "hellinger", "verdict")


def _report_line(d: DriftResult) -> str:
    r: dict[str, Any] = dict(d.report or {})
    share = r.get("drifted_share")
    latency = r.get("latency_ms") or {}
    acc, ref_acc = r.get("accuracy_estimate"), r.get("reference_accuracy_estimate")
    parts = [f"{d.n} predictions"]
    if share is not None:
        # the share is over the decided features: say how many were not decided
        features = [f for f in r.get("features") or [] if isinstance(f, dict)]
        undecided = sum(1 for f in features if f.get("verdict") == "insufficient")
        decided = len(features) - undecided
        line = f"{share * 100:.0f}% of {decided} decided features drifted"
        parts.append(line + (f" ({undecided} insufficient)" if undecided else ""))
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
        self.feature: str | None = None  # the feature the plots show (the cursor's row)
        self.history: DriftHistory | None = None
        self.bins: DriftBins | None = None

    #: How far back the PSI history goes.
    HISTORY_HOURS = 24.0

    def compose_body(self) -> ComposeResult:
        yield Static("loading…", id="drift-summary", classes="status")
        table = LiveTable(id="drift", cursor_type="row")
        for column in COLUMNS:
            table.add_column(column, key=column)
        yield table
        with Horizontal(id="drift-plots"):
            yield compact(PlotWidget(id="drift-psi-history"))
            yield compact(PlotWidget(id="drift-bins"))
        yield Static("", id="drift-plot-caption", classes="status")

    def reload(self) -> None:
        self.load()

    @work(exclusive=True, group="drift", exit_on_error=False)
    async def load(self) -> None:
        client = self.console.client
        result = await self.fetch(client.drift(self.model, self.version))
        if result is not None and result != self.result:
            self.post_message(DriftLoaded(result))
        if result is None or result.report is None:
            return
        history = await self.fetch(
            client.drift_history(
                self.model, self.version, hours=self.HISTORY_HOURS, until=self.console.clock()
            )
        )
        bins = await self.fetch(client.drift_bins(self.model, self.version, feature=self.feature))
        self.post_message(DriftPlotsLoaded(history, bins))

    @on(DriftLoaded)
    def _loaded(self, message: DriftLoaded) -> None:
        self.show(message.result)

    @on(DriftPlotsLoaded)
    def _plots_loaded(self, message: DriftPlotsLoaded) -> None:
        self.history, self.bins = message.history, message.bins
        if self.feature is None and self.bins is not None:
            self.feature = self.bins.feature
        self.show_plots()

    @on(DataTable.RowHighlighted, "#drift")
    def _feature_chosen(self, event: DataTable.RowHighlighted) -> None:
        name = event.row_key.value
        if name is not None and name != self.feature:
            self.feature = name
            self.show_plots()  # the PSI history has every feature: redraw now
            self.reload()  # the bins are per feature

    def show_plots(self) -> None:
        """Draw the chosen feature's PSI per hour and its reference vs live bins."""
        psi_plot = self.query_one("#drift-psi-history", PlotWidget)
        bins_plot = self.query_one("#drift-bins", PlotWidget)
        feature = self.feature
        captions = []
        if self.history is None or feature is None:
            psi_plot.display = False
        else:
            captions.append(show_psi_history(psi_plot, self.history, feature))
        if self.bins is None or self.bins.feature != feature:
            bins_plot.display = False
        else:
            captions.append(show_bins(bins_plot, self.bins))
        self.query_one("#drift-plot-caption", Static).update(escape(" · ".join(captions)))

    def show(self, d: DriftResult) -> None:
        """The summary line, the features table and the PSI bars."""
        self.result = d
        summary = self.query_one("#drift-summary", Static)
        if d.report is None:
            summary.update(f"{self.model}:v{self.version}: no metric windows stored yet")
            for plot in self.query(PlotWidget):
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
