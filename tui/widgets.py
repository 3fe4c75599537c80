"""Small widgets every view shares: breadcrumbs, the lost-hub banner, the filter box."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from rich.markup import escape
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Input, Static
from textual.widgets.data_table import RowKey


class Breadcrumbs(Static):
    """``EdgeFleet > Fleet > pump-01`` on the left of the top line."""


class HubBanner(Static):
    """Shown only while the hub is unreachable; says why and that it is retrying."""

    def show_state(self, error: str | None) -> None:
        """Show ``error`` (hub lost) or hide (hub back)."""
        self.display = error is not None
        if error is not None:
            self.update(f"hub lost — {escape(error)} — reconnecting with back-off…")


class FilterInput(Input):
    """The ``/`` filter box: hidden until asked for; Esc hides it again (keeping the
    filter applied) and gives the keys back to the table."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "hide", "Close filter")]

    def on_mount(self) -> None:
        self.display = False

    def action_hide(self) -> None:
        self.display = bool(self.value)
        self.screen.focus_next(DataTable)


class LiveTable(DataTable[Any]):
    """A DataTable for live data.

    DataTable measures added rows when idle, but caches rendered cells by an update
    counter that measuring does not advance: a frame drawn between ``add_row`` and the
    next idle (e.g. a sort right after adding) keeps its too-narrow cells until some
    other change. After measuring, the caches are dropped (Textual 8.2 internals; the
    snapshot tests show it if that changes)."""

    def _update_dimensions(self, new_rows: Iterable[RowKey]) -> None:
        rows = list(new_rows)
        super()._update_dimensions(rows)
        if rows:
            self._clear_caches()
            self.refresh()
