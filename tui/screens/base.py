"""What every view shares: the frame (breadcrumbs, banner, footer), the live refresh
that pauses while the view is hidden or a modal is open, and hub calls whose failures
become one-line notifications instead of tracebacks."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import ClassVar, TypeVar, cast

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer, Static

from edgefleet_client import HubError
from tui.host import ConsoleHost
from tui.messages import EventsArrived, HubStateChanged
from tui.widgets import Breadcrumbs, HubBanner

T = TypeVar("T")
SEP = " \u203a "  # a breadcrumb separator


class View(Screen[None]):
    """A console view. Subclasses give ``crumb``, ``compose_body`` and ``reload``."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", show=True),
    ]
    crumb = "View"
    last_error = ""  # the hub's message for the last failed call ('' after a success)
    AUTO_FOCUS = "DataTable"
    #: Actions that need the deploy scope (disabled, with the reason, for read tokens).
    DEPLOY_ACTIONS: ClassVar[frozenset[str]] = frozenset()

    @property
    def console(self) -> ConsoleHost:
        """The app this view runs in, as views may use it (:class:`tui.host.ConsoleHost`)."""
        return cast(ConsoleHost, self.app)

    def compose(self) -> ComposeResult:
        yield Breadcrumbs(id="crumbs")
        yield HubBanner(id="banner")
        yield from self.compose_body()
        yield Footer()

    def compose_body(self) -> ComposeResult:
        yield from ()

    def on_mount(self) -> None:
        self.query_one(HubBanner).show_state(self.console.hub_lost)
        self._update_crumbs()
        self._update_reason()
        self.set_interval(self.console.refresh_s, self._tick)
        self.reload()

    def on_screen_resume(self) -> None:
        self.query_one(HubBanner).show_state(self.console.hub_lost)
        self._update_crumbs()
        self.reload()

    def _update_crumbs(self) -> None:
        names = [s.crumb for s in self.app.screen_stack if isinstance(s, View)]
        me = self.console.identity
        who = f"{escape(me.name)} ({', '.join(me.scopes)})" if me else "…"
        self.query_one(Breadcrumbs).update(
            f"[b]EdgeFleet[/b]{SEP}{SEP.join(names)}   [dim]{self.console.hub_url} · {who}[/dim]"
        )

    def _tick(self) -> None:
        if self.is_active:  # hidden views and views under a modal do not refresh
            self.reload()

    def reload(self) -> None:
        """Fetch what the view shows (in a worker)."""

    def on_hub_state_changed(self, message: HubStateChanged) -> None:
        self.query_one(HubBanner).show_state(message.error)
        self.hub_status_changed()

    def on_events_arrived(self, message: EventsArrived) -> None:
        """New events from the stream (views that show events override)."""

    async def fetch(self, call: Awaitable[T]) -> T | None:
        """Await a hub call; a failure is reported (banner or notification) and gives
        None, so a worker never dies with a traceback."""
        try:
            result = await call
        except HubError as exc:
            self.last_error = exc.message
            self.console.report(exc)
            return None
        self.last_error = ""
        self.console.hub_reachable()
        return result

    async def registered_versions(self) -> list[tuple[str, int]] | None:
        """Every registered ``(model, version)``; None when the hub could not say
        (reported like any failed call)."""
        client = self.console.client
        models = await self.fetch(client.models())
        if models is None:
            return None
        versions: list[tuple[str, int]] = []
        for m in models:
            found = await self.fetch(client.versions(m.name))
            versions += [(v.name, v.version) for v in found or ()]
        return versions

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "back":
            return len(self.app.screen_stack) > 2  # the landing view has nowhere to go back to
        if action in self.DEPLOY_ACTIONS and not self.console.can_deploy:
            return None  # shown disabled in the footer; the view says why
        return True

    def deploy_refusal(self) -> str:
        """Why actions are disabled ('' when they are not)."""
        return self.console.read_only_reason()

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 2:  # the default screen and the landing view stay
            self.app.pop_screen()

    def hub_status_changed(self) -> None:
        """The hub answered or was lost (views that show the hub's state override)."""

    def identity_known(self) -> None:
        """The hub confirmed (or refused) the token: update who and what is allowed."""
        self._update_crumbs()
        self._update_reason()
        self.refresh_bindings()

    def _update_reason(self) -> None:
        reason = self.deploy_refusal() if self.DEPLOY_ACTIONS else ""
        for box in self.query(".reason").results(Static):
            box.display = bool(reason)
            box.update(escape(reason))
