"""Rollouts: the list with state and progress (``n`` starts one through a form), and
one rollout's stages, gates (value against threshold, verdict) and history; promote,
pause, resume, and — behind a typed confirmation — abort and roll back."""

from __future__ import annotations

from typing import ClassVar

from rich.markup import escape
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Static

from edgefleet_client import Rollout, StageDevices
from edgefleet_client.client import RolloutCommand
from tui.format import bar, number
from tui.messages import RolloutLoaded, RolloutsLoaded
from tui.screens.base import View
from tui.screens.device import clock_time
from tui.screens.modals import TypedConfirm
from tui.screens.rollout_form import RolloutForm
from tui.table_diff import Cell, sync_table
from tui.widgets import LiveTable

STATE_STYLE = {
    "running": "green",
    "waiting_approval": "yellow b",
    "paused": "yellow",
    "completed": "blue",
    "aborted": "red",
    "rolled_back": "red",
    "draft": "dim",
}
VERDICT_STYLE = {"pass": "green", "fail": "red b", "waiting": "yellow"}
LIST_COLUMNS = ("id", "model", "state", "stage", "progress", "touched", "promotion")
STAGE_COLUMNS = (
    "stage", "size", "devices", "on target", "downloading", "pending", "failed", "offline",
    "mode", "bake", "gates (limits)",
)  # fmt: skip


def stage_device_cells(sd: StageDevices | None) -> list[Cell]:
    """A stage's devices by state: a bar of those on the target version, then counts
    (``-`` before the rollout reaches the stage)."""
    if sd is None:
        return [Cell("")] * 6
    if not sd.reached:
        return [Cell(str(sd.devices), sort=sd.devices), Cell("not started", style="dim"),
                *[Cell("-", sort=None)] * 4]  # fmt: skip
    done = sd.on_target / sd.devices if sd.devices else 0.0
    failed = sd.count("failed", "rolled_back")
    offline = sd.offline
    never = f" +{sd.never_seen} never" if sd.never_seen else ""
    return [
        Cell(str(sd.devices), sort=sd.devices),
        Cell(f"{bar(done, 8)} {sd.on_target}", sort=done, style="green" if done >= 1 else ""),
        Cell(str(sd.count("downloading")), sort=sd.count("downloading")),
        Cell(str(sd.count("pending")), sort=sd.count("pending")),
        Cell(str(failed), sort=failed, style="red b" if failed else ""),
        Cell(f"{offline}{never}", sort=offline, style="yellow" if offline else ""),
    ]


def rollout_cells(r: Rollout) -> list[Cell]:
    """One rollout's row in the list."""
    return [
        Cell(r.id),
        Cell(f"{r.model}:v{r.target_version}"),
        Cell(r.state, style=STATE_STYLE.get(r.state, "")),
        Cell(f"{min(r.stage + 1, len(r.stages))}/{len(r.stages)}", sort=r.stage),
        Cell(bar(r.progress), sort=r.progress),
        Cell(str(len(r.touched)), sort=len(r.touched)),
        Cell(r.promotion),
    ]


class RolloutsView(View):
    """Every rollout, newest last."""

    crumb = "Rollouts"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open", "Open", show=False),
        Binding("n", "new", "New rollout"),
    ]
    DEPLOY_ACTIONS = frozenset({"new"})

    def compose_body(self) -> ComposeResult:
        yield Static("", id="rollouts-reason", classes="reason")
        yield Static("loading…", id="rollouts-status", classes="status")
        table = LiveTable(id="rollouts", cursor_type="row", zebra_stripes=True)
        for column in LIST_COLUMNS:
            table.add_column(column, key=column)
        yield table

    def reload(self) -> None:
        self.load()

    @work(exclusive=True, group="rollouts", exit_on_error=False)
    async def load(self) -> None:
        rollouts = await self.fetch(self.console.client.rollouts())
        if rollouts is not None:
            self.post_message(RolloutsLoaded(rollouts))

    @on(RolloutsLoaded)
    def _loaded(self, message: RolloutsLoaded) -> None:
        rollouts = message.rollouts
        table = self.query_one("#rollouts", DataTable)
        sync_table(table, {r.id: rollout_cells(r) for r in rollouts}, LIST_COLUMNS)
        active = sum(1 for r in rollouts if r.active)
        self.query_one("#rollouts-status", Static).update(
            f"{len(rollouts)} rollouts · {active} active · Enter opens one · n starts one"
        )

    @on(DataTable.RowSelected, "#rollouts")
    def _selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.console.open_rollout(str(event.row_key.value))

    def action_open(self) -> None:
        table = self.query_one("#rollouts", DataTable)
        if table.row_count:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
            if key is not None:
                self.console.open_rollout(str(key))

    def action_new(self) -> None:
        self.new_rollout()

    @work(exclusive=True, group="rollouts-action", exit_on_error=False)
    async def new_rollout(self) -> None:
        """The start form over the registered versions; the started rollout opens."""
        versions = await self.registered_versions()
        if versions is None:
            return
        if not versions:
            self.notify("no model version is registered yet: push one first", severity="warning")
            return
        form = RolloutForm(versions, self.console.client.start_rollout)
        started = await self.app.push_screen_wait(form)
        if started is not None:
            self.notify(f"rollout {started.id} started: {started.state}")
            self.reload()
            self.console.open_rollout(started.id)


class RolloutView(View):
    """One rollout."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("o", "command('promote')", "Promote"),
        Binding("p", "command('pause')", "Pause"),
        Binding("u", "command('resume')", "Resume"),
        Binding("x", "command('abort')", "Abort"),
        Binding("b", "command('rollback')", "Roll back"),
    ]
    DEPLOY_ACTIONS = frozenset({"command"})
    DESTRUCTIVE: ClassVar[frozenset[str]] = frozenset({"abort", "rollback"})

    def __init__(self, rollout_id: str) -> None:
        super().__init__()
        self.rollout_id = rollout_id
        self.crumb = rollout_id
        self.rollout: Rollout | None = None

    def compose_body(self) -> ComposeResult:
        yield Static("", id="rollout-reason", classes="reason")
        yield Static("loading…", id="rollout-summary", classes="panel")
        stages = LiveTable(id="stages", cursor_type="none")
        for column in STAGE_COLUMNS:
            stages.add_column(column, key=column)
        yield stages
        gates = LiveTable(id="gates", cursor_type="none")
        for column in ("gate", "value", "limit", "verdict"):
            gates.add_column(column, key=column)
        yield gates
        history = LiveTable(id="history", cursor_type="none")
        for column in ("at", "change", "stage", "reason"):
            history.add_column(column, key=column)
        yield history

    def reload(self) -> None:
        self.load()

    @work(exclusive=True, group="rollout", exit_on_error=False)
    async def load(self) -> None:
        rollout = await self.fetch(self.console.client.rollout(self.rollout_id, devices=True))
        if rollout is not None:
            self.post_message(RolloutLoaded(rollout))
        elif self.rollout is None and self.last_error:
            self.query_one("#rollout-summary", Static).update(escape(self.last_error))

    @on(RolloutLoaded)
    def _loaded(self, message: RolloutLoaded) -> None:
        self.show(message.rollout)

    def show(self, r: Rollout) -> None:
        """Render the rollout (stages, gates and history by keyed diffs)."""
        self.rollout = r
        style = STATE_STYLE.get(r.state, "")
        selector = " ".join([*(f"tag:{t}" for t in r.selector_tags), *r.selector_devices]) or "all"
        self.query_one("#rollout-summary", Static).update(
            f"[b]{r.id}[/b]  {r.model}: v{r.previous_version or '-'} → [b]v{r.target_version}[/b]"
            f"  [{style}]{r.state}[/{style}]  stage {min(r.stage + 1, len(r.stages))}/"
            f"{len(r.stages)}  {bar(r.progress, 16)}\n"
            f"selector {selector} · promotion {r.promotion} · on failure {r.on_failure} · "
            f"{len(r.touched)} devices touched"
        )
        stages = self.query_one("#stages", DataTable)
        rows: dict[str, list[Cell]] = {}
        by_stage = {sd.stage: sd for sd in r.stage_devices}
        for i, s in enumerate(r.stages):
            limits = ", ".join(f"{k}={v:g}" for k, v in s.gates.items() if v is not None)
            done = i < r.stage or r.state == "completed"
            now = i == r.stage and not done
            mark = "✓" if done else ("▶" if now else " ")
            rows[str(i)] = [
                Cell(f"{mark} {i + 1}", style="b" if now else ("dim" if done else "")),
                Cell(s.label),
                *stage_device_cells(by_stage.get(i)),
                Cell(s.mode),
                Cell(f"{s.bake_s:g}s"),
                Cell(limits),
            ]
        sync_table(stages, rows, STAGE_COLUMNS)
        gates = {
            g.name: [
                Cell(g.name),
                Cell(number(g.value)),
                Cell(number(g.limit)),
                Cell(g.verdict, style=VERDICT_STYLE.get(g.verdict, "")),
            ]
            for g in r.gates
        }
        sync_table(
            self.query_one("#gates", DataTable), gates, ("gate", "value", "limit", "verdict")
        )
        history = {
            str(i): [
                Cell(clock_time(t.at), sort=t.at),
                Cell(f"{t.from_state} → {t.to_state}"),
                Cell(str(t.stage + 1)),
                Cell(t.reason),
            ]
            for i, t in enumerate(r.history)
        }
        sync_table(
            self.query_one("#history", DataTable), history, ("at", "change", "stage", "reason")
        )

    def action_command(self, command: str) -> None:
        self.run_command(command)

    @work(exclusive=True, group="rollout-action", exit_on_error=False)
    async def run_command(self, command: str) -> None:
        """Send ``command``; abort and rollback first ask for the typed rollout id."""
        if command in self.DESTRUCTIVE:
            prompt = f"{command.capitalize()} rollout {self.rollout_id}?"
            if not await self.app.push_screen_wait(TypedConfirm(prompt, self.rollout_id)):
                self.notify(f"{command} cancelled")
                return
        verb: RolloutCommand = command  # type: ignore[assignment]
        result = await self.fetch(self.console.client.rollout_command(self.rollout_id, verb))
        if result is not None:
            self.notify(f"rollout {result.id}: {command} → {result.state}")
            self.post_message(RolloutLoaded(result))
