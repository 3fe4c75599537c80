"""Audit (admin tokens): the hash-chained log, newest first, and whether it verifies."""

from __future__ import annotations

from collections import deque

from textual import on, work
from textual.app import ComposeResult
from textual.widgets import DataTable, Static

from edgefleet_client import AuditEntry
from tui.format import mask_ids, masked
from tui.messages import AuditLoaded
from tui.screens.base import View
from tui.screens.device import clock_time
from tui.table_diff import Cell, sort_table, sync_table
from tui.widgets import LiveTable

COLUMNS = ("id", "time", "actor", "action", "target")


class AuditView(View):
    """The audit log (needs the admin scope)."""

    crumb = "Audit"

    def compose_body(self) -> ComposeResult:
        yield Static("loading…", id="audit-status", classes="status")
        table = LiveTable(id="audit", cursor_type="row", zebra_stripes=True)
        for column in COLUMNS:
            table.add_column(column, key=column)
        yield table

    def reload(self) -> None:
        self.load()

    @work(exclusive=True, group="audit", exit_on_error=False)
    async def load(self) -> None:
        me = self.console.identity
        status = self.query_one("#audit-status", Static)
        if me is not None and not me.allows("admin"):
            status.update(
                f"token {me.name!r} cannot read the audit log: it needs the 'admin' scope"
            )
            return
        client = self.console.client
        entries: deque[AuditEntry] = deque(maxlen=500)
        verified, problem, after = True, None, 0
        while True:
            page = await self.fetch(client.audit(after_id=after, limit=1000))
            if page is None:
                return
            entries.extend(page.entries)
            verified, problem = page.verified, page.problem
            if len(page.entries) < 1000:
                break
            after = page.entries[-1].id
        self.post_message(AuditLoaded(tuple(entries), verified, problem))

    @on(AuditLoaded)
    def _loaded(self, message: AuditLoaded) -> None:
        verified, problem, entries = message.verified, message.problem, message.entries
        status = self.query_one("#audit-status", Static)
        redact = self.console.redact
        rows = {
            str(e.id): [
                Cell(str(e.id), sort=e.id),
                Cell(masked(clock_time(e.ts)) if redact else clock_time(e.ts), sort=e.ts),
                Cell(mask_ids(e.actor) if redact else e.actor),
                Cell(e.action),
                Cell(mask_ids(e.target) if redact else e.target),
            ]
            for e in entries
        }
        table = self.query_one("#audit", DataTable)
        if sync_table(table, rows, COLUMNS).added:
            sort_table(table, "id", reverse=True)
        chain = (
            "[green]the hash chain verifies[/green]" if verified else f"[red b]{problem}[/red b]"
        )
        status.update(f"{len(entries)} newest entries · {chain}")
