"""The console's plots (textual-plot): a device's health over time, a feature's reference
vs live histogram, and a feature's PSI per hour with the threshold drawn.

Each ``show_*`` draws one hub answer on a :class:`PlotWidget` and returns a one-line
caption (what is drawn, in words a test can read); the data shaping is in pure
functions (``history_series``, ``bin_series``, ``psi_series``) tested without an app.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import ceil, floor

from textual_plot import AxisFormatter, HiResMode, PlotWidget

from edgefleet_client import DeviceHistory, DriftBins, DriftHistory
from tui.format import number


def compact(plot: PlotWidget) -> PlotWidget:
    """Tighter margins than textual-plot's defaults (the x label is left out: the
    caption under the plots says what the axes are), so a plot still draws at 80x24."""
    plot.set_reactive(PlotWidget.margin_top, 1)
    plot.set_reactive(PlotWidget.margin_bottom, 1)
    plot.set_reactive(PlotWidget.margin_left, 7)
    return plot


@dataclass(frozen=True)
class Metric:
    """One health series of a device's history."""

    key: str
    label: str
    colour: str


#: The device history's series, cycled by a key in the Device view.
METRICS = (
    Metric("n", "predictions", "cyan"),
    Metric("p95", "p95 ms", "yellow"),
    Metric("errors", "errors %", "red"),
)
#: textual-plot centres the y label on the left margin and leaves the ends of a longer
#: previous label on screen: every label is centred to the widest (at most 11 wide, so
#: none is cut at the compact margin).
_WIDEST = max(len(m.label) for m in METRICS)


def history_series(h: DeviceHistory, metric: Metric) -> tuple[list[float], list[float]]:
    """``(x, y)``: x in hours before the history's end (negative), y the metric of each
    point that has it (a point without timed predictions has no p95)."""
    xs: list[float] = []
    ys: list[float] = []
    for p in h.points:
        value: float | None
        if metric.key == "n":
            value = float(p.n)
        elif metric.key == "p95":
            value = p.p95_ms
        else:
            value = None if p.error_rate is None else 100.0 * p.error_rate
        if value is not None:
            xs.append((p.start - h.until) / 3600.0)
            ys.append(value)
    return xs, ys


def show_history(plot: PlotWidget, h: DeviceHistory, metric: Metric) -> str:
    """Draw ``metric`` of a device's history; the caption says what and its last value."""
    xs, ys = history_series(h, metric)
    plot.clear()
    hours = (h.until - h.since) / 3600.0
    if not xs:
        plot.display = False
        return f"no {metric.label} in the last {hours:g} h"
    plot.display = True
    if len(xs) == 1:
        plot.scatter(xs, ys, marker="●", marker_style=metric.colour)
    else:
        plot.plot(xs, ys, line_style=metric.colour, hires_mode=HiResMode.BRAILLE)
    # From the first point on (a device that started an hour ago fills the width), and
    # never a degenerate axis when every value is 0 (no errors).
    plot.set_xlimits(max(-hours, xs[0] - h.bucket_s / 3600.0), 0.0)
    plot.set_ylimits(0.0, max(ys) * 1.15 or 1.0)
    plot.set_ylabel(metric.label.center(_WIDEST))
    per = "window" if all(p.windows == 1 for p in h.points) else f"{number(h.bucket_s / 60)} min"
    return (
        f"{metric.label}/{per} (x: hours ago), {hours:g} h: {len(xs)} points, "
        f"latest {number(ys[-1])}"
    )


class BinAxis(AxisFormatter):
    """Ticks on bin positions (0: underflow ... k: overflow), labelled with the bin's
    lower edge (``<e0`` for the underflow, ``>ek`` for the overflow)."""

    def __init__(self, edges: Sequence[float]) -> None:
        self.edges = list(edges)

    def get_ticks(self, min_: float, max_: float, max_ticks: int = 8) -> list[float]:
        lo, hi = max(0, ceil(min_)), min(len(self.edges), floor(max_))
        if hi < lo:
            return []
        step = max(1, ceil((hi - lo + 1) / max(1, max_ticks // 2)))
        return [float(i) for i in range(lo, hi + 1, step)]

    def get_labels_for_ticks(self, ticks: Sequence[float]) -> list[str]:
        labels = []
        for t in ticks:
            i = round(t)
            if i <= 0:
                labels.append(f"<{self.edges[0]:.3g}")
            elif i >= len(self.edges):
                labels.append(f">{self.edges[-1]:.3g}")
            else:
                labels.append(f"{self.edges[i - 1]:.3g}")
        return labels


def bin_series(b: DriftBins) -> tuple[list[float], list[float], list[float], list[float]]:
    """``(bar x, live share, step x, reference share)``: live proportions as bars on the
    bin positions, the reference as a step line over the same bins."""
    positions = [float(i) for i in range(len(b.live))]
    step_x: list[float] = []
    step_y: list[float] = []
    for i, share in enumerate(b.reference):
        step_x += [i - 0.5, i + 0.5]
        step_y += [share, share]
    return positions, list(b.live_share), step_x, step_y


def show_bins(plot: PlotWidget, b: DriftBins) -> str:
    """Draw a feature's live share per bin (bars) over its reference (a step line)."""
    xs, live, step_x, step_y = bin_series(b)
    plot.clear()
    plot.display = True
    if sum(b.live):
        plot.bar(xs, live, width=0.8, bar_style="cyan")
    plot.plot(step_x, step_y, line_style="yellow", hires_mode=HiResMode.BRAILLE)
    plot.set_x_formatter(BinAxis(b.edges))
    plot.set_xticks(None)
    plot.set_xlimits(-0.6, len(xs) - 0.4)
    plot.set_ylimits(0.0, None)
    plot.set_ylabel("share")
    live_text = f"live █ ({sum(b.live)})" if sum(b.live) else "no live values"
    return f"{b.feature}: reference ─ vs {live_text}"


#: The PSI axis ends here (a shift past it is off the chart; the caption says its value).
PSI_AXIS_MAX = 1.0


def psi_series(h: DriftHistory, feature: str) -> tuple[list[float], list[float]]:
    """``(x, y)``: hours before the history's end (the hour's start) and the PSI of
    ``feature`` in each hour that scored it."""
    xs: list[float] = []
    ys: list[float] = []
    for hour in h.hours:
        value = hour.psi_of(feature)
        if value is not None:
            xs.append((hour.start - h.until) / 3600.0)
            ys.append(value)
    return xs, ys


def show_psi_history(plot: PlotWidget, h: DriftHistory, feature: str) -> str:
    """Draw ``feature``'s PSI per hour with the threshold (and the major line)."""
    xs, ys = psi_series(h, feature)
    plot.clear()
    hours = (h.until - h.since) / 3600.0
    if not xs:
        plot.display = False
        return f"{feature}: no hour with predictions in the last {hours:g} h"
    plot.display = True
    ends = [-hours, 0.0]
    if h.psi_threshold is not None:
        plot.plot(ends, [h.psi_threshold] * 2, line_style="yellow", hires_mode=HiResMode.BRAILLE)
    plot.plot(ends, [h.psi_major] * 2, line_style="red", hires_mode=HiResMode.BRAILLE)
    # PSI is unbounded: past PSI_AXIS_MAX the lines would squash the thresholds flat, so
    # the axis stops there and a larger value is drawn on its ceiling.
    top = min(PSI_AXIS_MAX, max([*ys, h.psi_major]) * 1.15)
    drawn = [min(y, top * 0.97) for y in ys]  # just under the ceiling: still drawn
    if len(xs) == 1:
        plot.scatter(xs, drawn, marker="●", marker_style="cyan")
    else:
        plot.plot(xs, drawn, line_style="cyan", hires_mode=HiResMode.BRAILLE)
    plot.set_xlimits(max(-hours, xs[0] - 1.0), 0.0)  # from the first hour with data
    plot.set_ylimits(0.0, top)
    plot.set_ylabel("PSI")
    over = sum(1 for y in ys if h.psi_threshold is not None and y >= h.psi_threshold)
    capped = f" (axis to {PSI_AXIS_MAX:g})" if max(ys) > PSI_AXIS_MAX else ""
    return (
        f"{feature}: PSI/hour{capped}, {over} of {len(xs)} h >= {number(h.psi_threshold)}, "
        f"latest {number(ys[-1])}"
    )
