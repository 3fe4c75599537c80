"""Modal dialogs: typed confirmation, deploy, command prompt, help."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, DataTable, Input, Label, RadioButton, RadioSet, Select

from tui.commands import Command, CommandError, parse_command


class TypedConfirm(ModalScreen[bool]):
    """A destructive action: the operator types ``expected`` (the rollout or device
    id) to confirm; anything else keeps the button disabled."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, prompt: str, expected: str) -> None:
        super().__init__()
        self.prompt, self.expected = prompt, expected

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="danger"):
            yield Label(self.prompt, id="confirm-prompt")
            yield Label(f"Type [b]{self.expected}[/b] to confirm:")
            yield Input(placeholder=self.expected, id="confirm-input")
            with Horizontal(classes="buttons"):
                yield Button("Confirm", variant="error", id="confirm", disabled=True)
                yield Button("Cancel", id="cancel")

    @on(Input.Changed, "#confirm-input")
    def _typed(self, event: Input.Changed) -> None:
        self.query_one("#confirm", Button).disabled = event.value != self.expected

    @on(Input.Submitted, "#confirm-input")
    def _submitted(self, event: Input.Submitted) -> None:
        if event.value == self.expected:
            self.dismiss(True)
        else:
            self.notify(f"type {self.expected} exactly to confirm", severity="warning")

    @on(Button.Pressed, "#confirm")
    def _confirm(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(False)


@dataclass(frozen=True)
class DeployChoice:
    """What the deploy dialog asks the hub for."""

    name: str
    version: int
    mode: str
    downgrade: bool


class DeployDialog(ModalScreen[DeployChoice | None]):
    """Pick a registered version and a mode for one device."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(
        self, device_id: str, versions: list[tuple[str, int]], current: int | None
    ) -> None:
        super().__init__()
        self.device_id, self.versions, self.current = device_id, versions, current

    def compose(self) -> ComposeResult:
        options = [(f"{n}:v{v}", (n, v)) for n, v in self.versions]
        with Vertical(id="dialog"):
            yield Label(f"Deploy to [b]{self.device_id}[/b]")
            yield Select(options, id="deploy-version", prompt="model version", allow_blank=True)
            with RadioSet(id="deploy-mode"):
                yield RadioButton("active", value=True, id="mode-active")
                yield RadioButton("shadow", id="mode-shadow")
            yield Checkbox(
                "downgrade (a signed rollback below the installed version)", id="downgrade"
            )
            with Horizontal(classes="buttons"):
                yield Button("Deploy", variant="primary", id="deploy")
                yield Button("Cancel", id="cancel")

    @on(Select.Changed, "#deploy-version")
    def _picked(self, event: Select.Changed) -> None:
        if isinstance(event.value, tuple) and self.current is not None:
            self.query_one("#downgrade", Checkbox).value = event.value[1] < self.current

    @on(Button.Pressed, "#deploy")
    def _deploy(self) -> None:
        value = self.query_one("#deploy-version", Select).value
        if not isinstance(value, tuple):
            self.notify("pick a model version first", severity="warning")
            return
        mode = "shadow" if self.query_one("#mode-shadow", RadioButton).value else "active"
        downgrade = self.query_one("#downgrade", Checkbox).value
        self.dismiss(DeployChoice(str(value[0]), int(value[1]), mode, downgrade))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class CommandPrompt(ModalScreen[Command | None]):
    """``:`` command mode: a view name or alias, ``device <id>``, ``rollout <id>``."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def compose(self) -> ComposeResult:
        yield Input(
            placeholder=":fleet  :rollouts  :events  :alerts  :device <id>  :quit", id="command"
        )

    @on(Input.Submitted, "#command")
    def _run(self, event: Input.Submitted) -> None:
        try:
            self.dismiss(parse_command(event.value))
        except CommandError as exc:
            self.notify(str(exc), severity="warning", markup=False)

    def action_cancel(self) -> None:
        self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    """``?``: the bindings of the view below, and why disabled ones are disabled."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        Binding("question_mark", "close", "Close", key_display="?"),
    ]

    def __init__(self, title: str, rows: list[tuple[str, str, str]]) -> None:
        super().__init__()
        self.title_text, self.rows = title, rows

    def compose(self) -> ComposeResult:
        with Vertical(id="help") as box:
            box.border_title = f"{self.title_text}: keys (Esc closes)"
            table: DataTable[str] = DataTable(id="help-table", cursor_type="none")
            table.add_columns("key", "action", "note")
            for row in self.rows:
                table.add_row(*row)
            yield table

    def action_close(self) -> None:
        self.dismiss(None)
