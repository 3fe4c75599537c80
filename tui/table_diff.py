"""Keyed diffs for live tables: change only the cells that changed, add and remove
only the rows that came or went (as dolphie does), so a refresh never rebuilds a
table and the cursor stays where the operator left it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.widgets import DataTable

_BY_TEXT: Any = "\x00by-text"  # the default sort value: the cell's text


@dataclass(frozen=True)
class Cell:
    """A table cell: what it shows and what it sorts by (its text unless ``sort`` is
    given; ``sort=None`` means no value, sorted last)."""

    text: str
    sort: Any = _BY_TEXT
    style: str = ""

    def __rich__(self) -> Text:
        return Text(self.text, style=self.style, no_wrap=True, overflow="ellipsis")

    def sort_key(self) -> tuple[int, Any]:
        """Sortable: values first, None last."""
        value = self.text if self.sort is _BY_TEXT else self.sort
        return (0, value) if value is not None else (1, "")


@dataclass(frozen=True)
class DiffStats:
    """What one sync changed."""

    added: int = 0
    removed: int = 0
    changed_cells: int = 0


def sync_table(
    table: DataTable[Any], rows: Mapping[str, Sequence[Cell]], columns: Sequence[str]
) -> DiffStats:
    """Make ``table`` show ``rows`` (by row key, cells in ``columns`` order).

    Rows whose key left are removed, new keys are appended, and in the others only
    the cells that differ are updated; a row cursor stays on its row.
    """
    present = {str(k.value) for k in table.rows}
    removed = present - rows.keys()
    cursor_key: str | None = None
    if table.row_count and table.cursor_type == "row":
        cursor_key = str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
    for key in removed:
        table.remove_row(key)
    added = changed = 0
    for key, cells in rows.items():
        if key not in present:
            table.add_row(*cells, key=key)
            added += 1
            continue
        old = table.get_row(key)
        for column, before, after in zip(columns, old, cells, strict=True):
            if before != after:
                table.update_cell(key, column, after)
                changed += 1
    if cursor_key is not None and cursor_key in rows and removed:
        table.move_cursor(row=table.get_row_index(cursor_key), animate=False)
    return DiffStats(added, len(removed), changed)


def sort_table(table: DataTable[Any], column: str, reverse: bool) -> None:
    """Sort by one column's :class:`Cell` sort values."""
    table.sort(column, key=lambda cell: cell.sort_key(), reverse=reverse)
