"""Keyed table diffs: only the rows that came or went and the cells that changed."""

from __future__ import annotations

import pytest
from textual.app import App, ComposeResult
from textual.widgets import DataTable

from tui.table_diff import Cell, sort_table, sync_table
from tui.widgets import LiveTable

pytestmark = pytest.mark.anyio

COLUMNS = ("id", "n")


class TableApp(App[None]):
    def compose(self) -> ComposeResult:
        table = LiveTable(cursor_type="row")
        for c in COLUMNS:
            table.add_column(c, key=c)
        yield table


def rows(**n: int | None) -> dict[str, list[Cell]]:
    return {k: [Cell(k), Cell("-" if v is None else str(v), sort=v)] for k, v in n.items()}


async def test_sync_changes_only_what_changed_and_keeps_the_cursor():
    app = TableApp()
    async with app.run_test() as pilot:
        table = app.query_one(DataTable)
        first = sync_table(table, rows(a=1, b=2, c=3), COLUMNS)
        assert (first.added, first.removed, first.changed_cells) == (3, 0, 0)
        table.move_cursor(row=1)  # on b
        again = sync_table(table, rows(a=1, b=2, c=3), COLUMNS)
        assert (again.added, again.removed, again.changed_cells) == (0, 0, 0)
        moved = sync_table(table, rows(b=20, c=3, d=4), COLUMNS)
        assert (moved.added, moved.removed, moved.changed_cells) == (1, 1, 1)
        await pilot.pause()
        assert [r.value for r in table.rows] == ["b", "c", "d"]
        assert table.get_row("b")[1].text == "20"
        assert table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value == "b"


async def test_sort_by_value_with_missing_values_last():
    app = TableApp()
    async with app.run_test():
        table = app.query_one(DataTable)
        sync_table(table, rows(a=10, b=None, c=9, d=100), COLUMNS)
        sort_table(table, "n", reverse=False)
        order = [table.coordinate_to_cell_key((i, 0)).row_key.value for i in range(4)]
        assert order == ["c", "a", "d", "b"]  # numbers as numbers (not "10" < "9"), None last
