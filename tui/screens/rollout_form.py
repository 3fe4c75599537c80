"""The rollout start form: model version, previous version, tags, stages, bake time
and the basic gates, each field checked as it is typed (the message under it); then a
review of what will start, confirmed before anything is sent; the hub's refusal (an id
already used, devices already in another rollout) is shown in the form, which stays
open to fix it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import ClassVar

from rich.markup import escape
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, RadioButton, RadioSet, Select, Static

from edgefleet_client import HubError, Rollout, RolloutDraft
from tui.forms import RolloutFields, check_rollout, describe

#: Text fields: (field, label, placeholder).
TEXT_FIELDS = (
    ("id", "rollout id", "e.g. pump-v2"),
    ("previous", "previous", "version to roll back to (empty: none)"),
    ("tags", "tags", "devices with every tag (empty: all)"),
    ("stages", "stages %", "cumulative, e.g. 10,50,100"),
    ("bake", "bake s", "seconds each stage bakes"),
    ("success", "success ≥ %", "share of a stage that must pass"),
    ("failure", "failure ≤ %", "share of a stage that may fail"),
    ("max_psi", "drift PSI <", "empty: no drift gate"),
)


class RolloutForm(ModalScreen[Rollout | None]):
    """Start a rollout; dismissed with the started rollout, or None when cancelled."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(
        self,
        versions: list[tuple[str, int]],
        start: Callable[[RolloutDraft], Awaitable[Rollout]],
    ) -> None:
        """``versions``: the registered ``(model, version)`` pairs; ``start`` sends the
        draft (raising HubError when the hub refuses it)."""
        super().__init__()
        self.versions, self.start = versions, start
        self.draft: RolloutDraft | None = None
        self.touched: set[str] = set()
        self._auto_previous = ""  # what picking a version filled in (not the operator)

    def compose(self) -> ComposeResult:
        defaults = RolloutFields()
        with Vertical(id="dialog", classes="form"):
            yield Label("[b]Start a rollout[/b]", id="form-title")
            with VerticalScroll(id="form-fields"):
                with Horizontal(classes="field"):
                    yield Label("version", classes="field-label")
                    yield Select(
                        [(f"{n}:v{v}", (n, v)) for n, v in self.versions],
                        prompt="model version",
                        id="f-version",
                        compact=True,
                    )
                yield Static("", id="e-version", classes="field-error")
                for key, label, placeholder in TEXT_FIELDS:
                    with Horizontal(classes="field"):
                        yield Label(label, classes="field-label")
                        yield Input(
                            str(getattr(defaults, key)),
                            placeholder=placeholder,
                            id=f"f-{key}",
                            compact=True,
                        )
                    yield Static("", id=f"e-{key}", classes="field-error")
                with Horizontal(classes="field"):
                    yield Label("on failure", classes="field-label")
                    with RadioSet(id="f-on-failure", compact=True):
                        yield RadioButton("pause", value=True, id="fail-pause")
                        yield RadioButton("roll back", id="fail-rollback")
                yield Checkbox("manual promotion between stages", id="f-manual", compact=True)
            with Vertical(id="form-review"):
                yield Static("", id="review")
            yield Static("", id="form-error", classes="field-error")
            with Horizontal(classes="buttons"):
                yield Button("Review", variant="primary", id="review-button", compact=True)
                yield Button("Start rollout", variant="warning", id="start-button", compact=True)
                yield Button("Back", id="back-button", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    def on_mount(self) -> None:
        self._reviewing(False)
        for box in self.query(".field-error").results(Static):
            box.display = False
        self.query_one("#f-version", Select).focus()

    def fields(self) -> RolloutFields:
        """What the form holds now."""
        value = self.query_one("#f-version", Select).value
        version = (str(value[0]), int(value[1])) if isinstance(value, tuple) else None
        texts = {key: self.query_one(f"#f-{key}", Input).value for key, _, _ in TEXT_FIELDS}
        rollback = self.query_one("#fail-rollback", RadioButton).value
        return RolloutFields(
            version=version,
            on_failure="rollback" if rollback else "pause",
            manual=self.query_one("#f-manual", Checkbox).value,
            **texts,
        )

    def show_errors(self, errors: dict[str, str], every: bool) -> None:
        """The message under each bad field (only fields already edited, unless
        ``every``)."""
        for key in ("version", *(k for k, _, _ in TEXT_FIELDS)):
            box = self.query_one(f"#e-{key}", Static)
            message = errors.get(key, "") if every or key in self.touched else ""
            box.display = bool(message)
            box.update(escape(message))

    @on(Input.Changed)
    def _edited(self, event: Input.Changed) -> None:
        key = (event.input.id or "").removeprefix("f-")
        if key and not (key == "previous" and event.value == self._auto_previous):
            self.touched.add(key)
            self.show_errors(check_rollout(self.fields())[1], every=False)

    @on(Select.Changed, "#f-version")
    def _picked(self, event: Select.Changed) -> None:
        self.touched.add("version")
        if isinstance(event.value, tuple):
            name, version = event.value
            below = [v for n, v in self.versions if n == name and v < version]
            previous = self.query_one("#f-previous", Input)
            if below and "previous" not in self.touched:
                self._auto_previous = previous.value = str(max(below))
        self.show_errors(check_rollout(self.fields())[1], every=False)

    @on(Button.Pressed, "#review-button")
    @on(Input.Submitted)
    def action_review(self) -> None:
        """Check every field; when all are good, show what will start."""
        draft, errors = check_rollout(self.fields())
        self.show_errors(errors, every=True)
        if draft is None:
            first = next(k for k in ("version", *(k for k, _, _ in TEXT_FIELDS)) if k in errors)
            self.query_one(f"#f-{first}").focus()
            return
        self.draft = draft
        self.query_one("#review", Static).update(
            f"{escape(describe(draft))}\n\n[b]Start this rollout?[/b]"
        )
        self._reviewing(True)

    def _reviewing(self, on: bool) -> None:
        self.query_one("#form-fields").display = not on
        self.query_one("#form-review").display = on
        self.query_one("#review-button").display = not on
        self.query_one("#start-button").display = on
        self.query_one("#back-button").display = on
        if on:
            self.query_one("#start-button", Button).focus()

    @on(Button.Pressed, "#back-button")
    def _back(self) -> None:
        self._reviewing(False)

    @on(Button.Pressed, "#start-button")
    def _start(self) -> None:
        if self.draft is not None:
            self.send(self.draft)

    @work(exclusive=True, group="rollout-form", exit_on_error=False)
    async def send(self, draft: RolloutDraft) -> None:
        """POST the draft; the hub's refusal stays in the form."""
        self.query_one("#start-button", Button).disabled = True
        error = self.query_one("#form-error", Static)
        try:
            rollout = await self.start(draft)
        except HubError as exc:
            error.update(f"the hub refused it: {escape(exc.message)}")
            error.display = True
            self._reviewing(False)
            return
        finally:
            self.query_one("#start-button", Button).disabled = False
        self.dismiss(rollout)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
