"""The console driven by Pilot against a real hub on loopback: the operator's paths."""

from __future__ import annotations

import pytest
from textual.command import CommandList
from textual.widgets import Button, DataTable, Input, Select, Static

from edge_agent.contract.messages import Event as WireEvent
from edge_agent.contract.messages import EventKind, ModelVersion
from hub.rollouts import RolloutSpec, Selector, Stage
from tests.support.fleet import DEVICES, record_alerts, record_windows
from tests.support.tcp_proxy import TcpProxy
from tests.tui.conftest import console, until
from tui.screens.alerts import AlertsView
from tui.screens.device import DeviceView
from tui.screens.events import EventsView
from tui.screens.fleet import FleetView
from tui.screens.modals import DeployDialog, HelpScreen, TypedConfirm
from tui.screens.pulse import PulseView
from tui.screens.rollout_form import RolloutForm
from tui.screens.rollouts import RolloutsView, RolloutView
from tui.widgets import HubBanner

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


def row_ids(table: DataTable) -> list[str]:
    return [str(table.coordinate_to_cell_key((i, 0)).row_key.value) for i in range(table.row_count)]


def palette_options(app) -> int:
    lists = app.screen.query(CommandList)
    return lists.first().option_count if lists else 0


def text(widget: Static) -> str:
    return str(widget.render())


async def test_fleet_filters_sorts_and_opens_a_device(fleet):
    app = console(fleet, "read", stream=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, PulseView), "the Pulse view")
        await pilot.press("2")
        await until(pilot, lambda: isinstance(app.screen, FleetView), "the Fleet view")
        table = app.screen.query_one("#fleet", DataTable)
        await until(pilot, lambda: table.row_count == len(DEVICES), "every device listed")
        assert row_ids(table) == [d[0] for d in DEVICES]

        await pilot.press("slash", *"tag:site-a !state:offline", "enter")
        await until(pilot, lambda: row_ids(table) == ["pump-01", "pump-02"], "the filtered page")
        await pilot.press("slash", "ctrl+a", "ctrl+k", *"version:2", "enter")
        await until(
            pilot, lambda: row_ids(table) == ["pump-02", "pump-04", "valve-01"], "version:2"
        )
        await pilot.press("slash", "ctrl+a", "ctrl+k", "enter")
        await until(pilot, lambda: table.row_count == len(DEVICES), "the filter cleared")

        for _ in range(9):  # id, tags, state, seen, active, previous, shadow, drift, buffer
            await pilot.press("s")
        assert app.screen.sort_column == "buffer"
        assert row_ids(table)[-2:] == ["pump-02", "pump-03"]  # 3 and 12 windows
        await pilot.press("S")
        assert row_ids(table)[0] == "pump-03"

        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, DeviceView), "the Device view")
        assert app.screen.device_id == "pump-03"
        state = app.screen.query_one("#device-state", Static)
        await until(pilot, lambda: "offline" in text(state), "the device's state")
        events = app.screen.query_one("#device-events", DataTable)
        await until(pilot, lambda: events.row_count == 3, "the device's events")
        assert "smoke test failed" in str(events.get_row_at(0)[3].text)
        await pilot.press("escape")
        assert isinstance(app.screen, FleetView)


async def test_a_device_never_seen_is_not_offline(fleet):
    """pump-05 was enrolled and tagged but never connected: its own state, not offline."""
    app = console(fleet, "read", stream=False)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("2")
        await until(pilot, lambda: isinstance(app.screen, FleetView), "the Fleet view")
        table = app.screen.query_one("#fleet", DataTable)
        await until(pilot, lambda: table.row_count == len(DEVICES), "every device listed")
        assert table.get_row("pump-05")[2].text == "never"
        await pilot.press("slash", *"state:offline", "enter")
        await until(pilot, lambda: row_ids(table) == ["pump-03"], "the offline devices")
        await pilot.press("slash", "ctrl+a", "ctrl+k", *"state:never", "enter")
        await until(pilot, lambda: row_ids(table) == ["pump-05"], "the devices never seen")
        await pilot.press("1")
        devices = app.screen.query_one("#pulse-devices", Static)
        await until(pilot, lambda: "1 offline" in text(devices), "Pulse's counts")
        assert "1 never seen" in text(devices)


async def test_drift_column_filter_and_faulty_toggle_come_from_the_hub(
    own_fleet, demo_dir, reference_x
):
    """pump-02's windows (f0 drifts in the last two hours) give it the hub's verdict;
    the others' are insufficient (no windows) or none at all (pump-05 runs no model)."""
    model = (demo_dir / "model-int8.tflite").read_bytes()
    record_windows(own_fleet.service, model, reference_x, device="pump-02")
    app = console(own_fleet, "read", stream=False)
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.press("2")
        await until(pilot, lambda: isinstance(app.screen, FleetView), "the Fleet view")
        table = app.screen.query_one("#fleet", DataTable)
        await until(pilot, lambda: table.row_count == len(DEVICES), "every device listed")
        column = list(table.columns).index("drift")
        verdict = table.get_row("pump-02")[column]
        assert verdict.text in ("drift", "major") and "red" in str(verdict.style)
        assert table.get_row("pump-01")[column].text == "insufficient"
        assert table.get_row("pump-05")[column].text == "-"

        await pilot.press("slash", *f"drift:{verdict.text}", "enter")
        await until(pilot, lambda: row_ids(table) == ["pump-02"], "the drifted device")
        await pilot.press("slash", "ctrl+a", "ctrl+k", *"tag:site-a !drift:insufficient", "enter")
        await until(pilot, lambda: row_ids(table) == ["pump-02"], "site-a, not insufficient")
        await pilot.press("slash", "ctrl+a", "ctrl+k", "enter")
        await until(pilot, lambda: table.row_count == len(DEVICES), "the filter cleared")

        await pilot.press("f")  # offline (pump-03, failed too), never seen, drifted
        faulty = ["pump-02", "pump-03", "pump-05"]
        await until(pilot, lambda: row_ids(table) == faulty, "the faulty devices")
        status = app.screen.query_one("#fleet-status", Static)
        assert "faulty only" in text(status)
        await pilot.press("slash", *"tag:site-b", "enter")
        await until(pilot, lambda: row_ids(table) == ["pump-05"], "faulty in site-b")
        await pilot.press("slash", "ctrl+a", "ctrl+k", "enter", "f")
        await until(pilot, lambda: table.row_count == len(DEVICES), "everyone again")
        assert "faulty only" not in text(status)

        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "the help screen")
        assert ("f", "Faulty only", "") in app.screen.rows


async def test_a_bad_filter_is_a_notification_not_a_crash(fleet):
    app = console(fleet, "read", stream=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("2")
        await until(pilot, lambda: isinstance(app.screen, FleetView), "the Fleet view")
        await pilot.press("slash", *"colour:red", "enter")
        await until(
            pilot,
            lambda: any("unknown filter 'colour'" in n.message for n in app._notifications),
            "the filter error",
        )


async def test_deploy_from_the_device_view_reaches_the_hub(own_fleet):
    app = console(own_fleet, "deploy", stream=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.can_deploy, "the token's identity")
        await pilot.press("colon", *"device pump-01", "enter")
        await until(pilot, lambda: isinstance(app.screen, DeviceView), "the Device view")
        await until(pilot, lambda: app.screen.detail is not None, "the device loaded")
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, DeployDialog), "the deploy dialog")
        dialog = app.screen
        dialog.query_one(Select).value = ("pump", 2)
        await pilot.click("#mode-shadow")
        await pilot.click("#deploy")
        await until(pilot, lambda: isinstance(app.screen, DeviceView), "the dialog closed")
        audit = own_fleet.service.audit
        await until(
            pilot,
            lambda: any(e.action == "directive.publish" for e in audit.entries(limit=100)),
            "the directive published",
        )
        entry = next(e for e in audit.entries(limit=100) if e.action == "directive.publish")
        assert entry.target == "pump-01"
        assert (entry.details["version"], entry.details["mode"]) == (2, "shadow")
        assert any("sent to pump-01" in n.message for n in app._notifications)


async def test_rollout_actions_and_abort_needs_the_typed_id(own_fleet):
    runner = own_fleet.service.runner
    spec = RolloutSpec(
        "r-7", "pump", 2, 1, Selector(tags=("site-a",)), (Stage(share=1.0, bake_s=3600),)
    )
    runner.create(spec, actor="test")
    app = console(own_fleet, "deploy", stream=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.can_deploy, "the token's identity")
        await pilot.press("3")
        table = app.screen.query_one("#rollouts", DataTable)
        await until(pilot, lambda: table.row_count == 1, "the rollout listed")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, RolloutView), "the rollout view")
        view = app.screen
        await until(pilot, lambda: view.rollout is not None, "the rollout loaded")

        await pilot.press("p")
        await until(pilot, lambda: runner.rollouts.get("r-7").rollout.state == "paused", "pause")
        await pilot.press("p")  # the hub refuses: its one-line message is shown
        await until(
            pilot,
            lambda: any("cannot pause while paused" in n.message for n in app._notifications),
            "the hub's refusal",
        )

        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, TypedConfirm), "the confirmation")
        confirm = app.screen
        await pilot.press(*"r-", "enter")
        assert app.screen is confirm and confirm.query_one("#confirm", Button).disabled
        assert runner.rollouts.get("r-7").rollout.state == "paused"
        await pilot.press("7", "enter")
        await until(pilot, lambda: runner.rollouts.get("r-7").rollout.state == "aborted", "abort")
        assert app.screen is view

        await pilot.press("b")
        await until(pilot, lambda: isinstance(app.screen, TypedConfirm), "the confirmation")
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is view, "the confirmation cancelled")
        assert runner.rollouts.get("r-7").rollout.state == "aborted"


@pytest.mark.timeout(180)
async def test_an_event_arrives_live_and_pause_holds_it(own_fleet):
    store = own_fleet.service.store
    app = console(own_fleet, "read")
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("4")
        await until(pilot, lambda: isinstance(app.screen, EventsView), "the Events view")
        table = app.screen.query_one("#events", DataTable)
        await until(pilot, lambda: table.row_count == 11, "the stored events")
        await until(pilot, lambda: app.stream_state == "live", "the stream connected")
        new = store.record_event(
            WireEvent("pump-04", 5.0, EventKind.ROLLED_BACK, "latency", ModelVersion("pump", 2))
        )
        # The stream polls the store; on a loaded machine the store's lock can be held
        # by the roll-ups for seconds: a generous wait, still an awaited condition.
        await until(
            pilot, lambda: str(new) in row_ids(table), "the new event in the tail", timeout=90
        )
        await pilot.press("space")
        held = store.record_event(WireEvent("pump-01", 6.0, EventKind.FAILED, "x", None))
        status = app.screen.query_one("#events-status", Static)
        await until(pilot, lambda: "1 new" in text(status), "the paused view counting it")
        assert str(held) not in row_ids(table)
        await pilot.press("space")
        await until(pilot, lambda: str(held) in row_ids(table), "the held event shown")
        await pilot.press("slash", *"kind:failed", "enter")
        await until(pilot, lambda: row_ids(table) == ["11", str(held)], "the kind filter")
        await pilot.press("1")
        recent = app.screen.query_one("#pulse-events", DataTable)
        await until(pilot, lambda: row_ids(recent)[:2] == [str(held), str(new)], "newest first")


async def test_a_read_only_token_sees_actions_disabled_with_the_reason(fleet):
    app = console(fleet, "read", stream=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.identity is not None, "the token's identity")
        await pilot.press("colon", *"device pump-01", "enter")
        await until(pilot, lambda: isinstance(app.screen, DeviceView), "the Device view")
        view = app.screen
        reason = view.query_one("#device-reason", Static)
        await until(pilot, lambda: "need the 'deploy' scope" in text(reason), "the reason")
        assert reason.display
        await pilot.press("d")
        await pilot.pause()
        assert app.screen is view, "a read-only token opened the deploy dialog"
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "the help screen")
        rows = {row[1]: row[2] for row in app.screen.rows}
        assert "'deploy' scope" in rows["Deploy"] and rows["Fleet"] == ""


async def test_a_lost_hub_shows_a_banner_and_reconnects(fleet):
    proxy = TcpProxy("127.0.0.1", int(fleet.url.rsplit(":", 1)[1]))
    try:
        app = console(fleet, "read", url=proxy.url, stream=False)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.identity is not None, "the first contact")
            banner = app.screen.query_one(HubBanner)
            assert not banner.display
            proxy.refusing = True
            proxy.drop()
            await until(pilot, lambda: banner.display, "the lost-hub banner")
            assert "unreachable" in text(banner) and "reconnecting" in text(banner)
            proxy.refusing = False
            await until(pilot, lambda: not banner.display, "the banner gone after reconnecting")
            assert app.hub_lost is None
    finally:
        proxy.close()


async def test_models_drift_and_audit_views(fleet):
    app = console(fleet, "admin", stream=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("5")
        table = app.screen.query_one("#models", DataTable)
        await until(pilot, lambda: table.row_count == 2, "the model versions")
        v2 = [c.text for c in table.get_row("pump:2")]
        assert v2[0] == "pump:v2" and (v2[6], v2[7]) == ("2", "1")  # active on 2, shadow on 1
        await pilot.press("down", "enter")
        await until(pilot, lambda: app.screen.crumb == "pump:v2 drift", "the drift view")
        summary = app.screen.query_one("#drift-summary", Static)
        await until(pilot, lambda: "no metric windows stored yet" in text(summary), "no windows")
        await pilot.press("6")
        audit = app.screen.query_one("#audit", DataTable)
        await until(pilot, lambda: audit.row_count >= 1, "the audit log")
        assert "hash chain verifies" in text(app.screen.query_one("#audit-status", Static))
        actions = [audit.get_row_at(i)[3].text for i in range(audit.row_count)]
        assert actions[-1] == "hub.start"  # newest first: the first entry is last


async def test_the_audit_view_says_which_scope_a_token_lacks(fleet):
    app = console(fleet, "read", stream=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.identity is not None, "the token's identity")
        await pilot.press("colon", *"audit", "enter")
        status = app.screen.query_one("#audit-status", Static)
        await until(pilot, lambda: "needs the 'admin' scope" in text(status), "the refusal")
        assert app.screen.query_one("#audit", DataTable).row_count == 0


async def test_an_unknown_device_or_rollout_says_so_in_the_view(fleet):
    app = console(fleet, "read", stream=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("colon", *"device nope", "enter")
        await until(pilot, lambda: isinstance(app.screen, DeviceView), "the Device view")
        state = app.screen.query_one("#device-state", Static)
        await until(pilot, lambda: text(state) == "no device 'nope'", "the hub's message")
        await pilot.press("escape", "colon", *"rollout r-none", "enter")
        await until(pilot, lambda: isinstance(app.screen, RolloutView), "the Rollout view")
        summary = app.screen.query_one("#rollout-summary", Static)
        await until(pilot, lambda: "not found" in text(summary), "the hub's message")


async def test_views_open_from_the_command_palette_and_the_theme_toggles(fleet):
    app = console(fleet, "read", stream=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, PulseView), "the Pulse view")
        await pilot.press("ctrl+p")
        await pilot.press(*"open rollouts")
        await until(pilot, lambda: palette_options(app) > 0, "the palette's match")
        await pilot.press("enter")
        await until(pilot, lambda: app.screen.crumb == "Rollouts", "the Rollouts view")
        assert app.theme == "textual-dark"
        await pilot.press("ctrl+t")
        assert app.theme == "textual-light"
        await pilot.press("colon", *"nonsense", "enter")
        await until(
            pilot,
            lambda: any("unknown command 'nonsense'" in n.message for n in app._notifications),
            "the command error",
        )


async def test_the_fleet_follows_device_changes_in_place(own_fleet):
    """A device that reports new state changes its row's cells; the cursor stays on the
    device the operator is on; a device that comes or goes adds or removes its row."""
    from edge_agent.contract.messages import State

    store = own_fleet.service.store
    app = console(own_fleet, "read", stream=False, refresh_s=0.2)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("2")
        await until(pilot, lambda: isinstance(app.screen, FleetView), "the Fleet view")
        table = app.screen.query_one("#fleet", DataTable)
        await until(pilot, lambda: table.row_count == len(DEVICES), "every device")
        await pilot.press("down", "down", "down")  # on pump-04
        store.record_state(State("pump-04", True, buffer_depth=7, active=ModelVersion("pump", 2)))
        store.record_state(State("pump-01", False))
        await until(pilot, lambda: table.get_row("pump-04")[8].text == "7", "the buffer cell")
        await until(pilot, lambda: table.get_row("pump-01")[2].text == "offline", "the state")
        store.set_tags("pump-00", ["site-a"])
        await until(pilot, lambda: table.row_count == len(DEVICES) + 1, "the new device's row")
        assert row_ids(table)[-1] == "pump-00"  # appended, not a rebuilt table
        cursor = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        assert cursor == "pump-04"


async def test_the_tail_resumes_after_the_hub_comes_back(own_fleet):
    """The link to the hub drops: the Events view says the stream is reconnecting, and
    an event stored meanwhile arrives once the hub is reachable again."""
    store = own_fleet.service.store
    proxy = TcpProxy("127.0.0.1", int(own_fleet.url.rsplit(":", 1)[1]))
    try:
        app = console(own_fleet, "read", url=proxy.url)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("4")
            await until(pilot, lambda: isinstance(app.screen, EventsView), "the Events view")
            status = app.screen.query_one("#events-status", Static)
            table = app.screen.query_one("#events", DataTable)
            await until(pilot, lambda: "stream live" in text(status), "the stream live")
            proxy.refusing = True
            proxy.drop()
            await until(pilot, lambda: "stream reconnecting" in text(status), "reconnecting")
            missed = store.record_event(
                WireEvent("pump-02", 7.0, EventKind.ACTIVATED, "", ModelVersion("pump", 2))
            )
            proxy.refusing = False
            await until(pilot, lambda: "stream live" in text(status), "the stream back")
            await until(pilot, lambda: str(missed) in row_ids(table), "the missed event")
            assert row_ids(table).count(str(missed)) == 1
    finally:
        proxy.close()


async def test_pulse_shows_the_alerts_firing_and_the_alerts_view_lists_them(own_fleet):
    app = console(own_fleet, "read", stream=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, PulseView), "the Pulse view")
        panel = app.screen.query_one("#pulse-alerts", Static)
        await until(pilot, lambda: text(panel) == "no alert firing", "no alert yet")
        record_alerts(own_fleet.service)
        await until(pilot, lambda: panel.border_title == "Alerts: 1 firing", "the firing count")
        assert text(panel) == "● fleet-offline = 0.333 · since 2m"
        assert panel.has_class("firing")  # and "pump-03-offline" resolved: not on Pulse

        await pilot.press("colon", *"alerts", "enter")
        await until(pilot, lambda: isinstance(app.screen, AlertsView), "the Alerts view")
        table = app.screen.query_one("#alerts", DataTable)
        await until(pilot, lambda: table.row_count == 3, "every transition")
        rows = [[c.text for c in table.get_row_at(i)] for i in range(3)]
        assert [(r[2], r[3]) for r in rows] == [
            ("pump-03-offline", "resolved"),
            ("pump-03-offline", "firing"),
            ("fleet-offline", "firing now"),
        ]
        await pilot.press("f")
        await until(pilot, lambda: row_ids(table) == [rows[2][0]], "only the firing one")


def shown_error(form: RolloutForm, field: str) -> str:
    box = form.query_one(f"#e-{field}", Static)
    return text(box) if box.display else ""


async def test_a_rollout_starts_through_the_form_after_checks_and_a_confirmation(own_fleet):
    runner = own_fleet.service.runner
    app = console(own_fleet, "deploy", stream=False)
    async with app.run_test(size=(100, 40)) as pilot:
        await until(pilot, lambda: app.can_deploy, "the token's identity")
        await pilot.press("3")
        await until(pilot, lambda: isinstance(app.screen, RolloutsView), "the Rollouts view")
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, RolloutForm), "the rollout form")
        form = app.screen

        await pilot.click("#review-button")  # nothing filled in: every problem named
        await until(pilot, lambda: shown_error(form, "id") != "", "the id's message")
        assert "pick the model version" in shown_error(form, "version")
        assert not form.query_one("#form-review").display

        form.query_one("#f-version", Select).value = ("pump", 2)
        previous = form.query_one("#f-previous", Input)
        await until(pilot, lambda: previous.value == "1", "the previous version filled in")
        await pilot.click("#f-id")
        await pilot.press(*"bad id!")
        await until(pilot, lambda: "letters, digits" in shown_error(form, "id"), "inline")
        await pilot.press(*["backspace"] * 7, *"canary-b")
        await until(pilot, lambda: shown_error(form, "id") == "", "the id accepted")
        form.query_one("#f-stages", Input).value = "50,20"
        await until(pilot, lambda: "cumulative" in shown_error(form, "stages"), "the stages")
        form.query_one("#f-stages", Input).value = "50,100"
        form.query_one("#f-tags", Input).value = "site-b"
        form.query_one("#f-bake", Input).value = "3600"
        form.query_one("#f-max_psi", Input).value = ""
        await until(pilot, lambda: shown_error(form, "stages") == "", "the stages accepted")

        await pilot.click("#review-button")
        review = form.query_one("#review", Static)
        await until(pilot, lambda: "Start this rollout?" in text(review), "the review")
        assert "pump v1 → v2" in text(review) and "tag:site-b" in text(review)
        assert "no drift gate" in text(review)
        assert runner.rollouts.list() == []  # nothing sent before the confirmation
        await pilot.click("#start-button")
        await until(pilot, lambda: isinstance(app.screen, RolloutView), "the new rollout's view")
        assert app.screen.rollout_id == "canary-b"
        spec = runner.rollouts.get("canary-b").rollout.spec
        assert spec.selector.tags == ("site-b",) and spec.previous_version == 1
        assert [(s.share, s.bake_s, s.gates.max_psi) for s in spec.stages] == [
            (0.5, 3600.0, None),
            (1.0, 3600.0, None),
        ]

        await pilot.press("escape", "n")  # the same id again: the hub's refusal, in the form
        await until(pilot, lambda: isinstance(app.screen, RolloutForm), "the form again")
        form = app.screen
        form.query_one("#f-version", Select).value = ("pump", 2)
        form.query_one("#f-id", Input).value = "canary-b"
        await pilot.click("#review-button")
        await until(pilot, lambda: form.query_one("#start-button").display, "the review")
        await pilot.click("#start-button")
        error = form.query_one("#form-error", Static)
        await until(pilot, lambda: "the hub refused it" in text(error), "the hub's message")
        assert "already" in text(error) and app.screen is form
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, RolloutsView), "the form cancelled")
        assert [s.rollout.spec.id for s in runner.rollouts.list()] == ["canary-b"]


async def test_a_read_only_token_cannot_open_the_rollout_form(fleet):
    app = console(fleet, "read", stream=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.identity is not None, "the token's identity")
        await pilot.press("3")
        await until(pilot, lambda: isinstance(app.screen, RolloutsView), "the Rollouts view")
        reason = app.screen.query_one("#rollouts-reason", Static)
        await until(pilot, lambda: "need the 'deploy' scope" in text(reason), "the reason")
        await pilot.press("n")
        await pilot.pause()
        assert isinstance(app.screen, RolloutsView), "a read-only token opened the form"


async def test_the_rollout_view_breaks_each_stage_down_by_device_state(own_fleet):
    """Stage 1 of r-5 holds pump-01 (reports the target active) and pump-03 (offline,
    reported a failure); stage 2 (pump-02) is not reached yet. r-b's one stage holds
    site-b, where pump-05 was never seen: not counted as offline."""
    import time

    store, runner = own_fleet.service.store, own_fleet.service.runner
    spec = RolloutSpec(
        "r-5", "pump", 2, 1, Selector(tags=("site-a",)),
        (Stage(share=0.5, bake_s=3600), Stage(share=1.0, bake_s=3600)),
    )  # fmt: skip
    runner.create(spec, actor="test")
    now = time.time()
    store.record_event(WireEvent("pump-01", now, EventKind.ACTIVATED, "", ModelVersion("pump", 2)))
    store.record_event(WireEvent("pump-03", now, EventKind.FAILED, "hash", ModelVersion("pump", 2)))
    app = console(own_fleet, "read", stream=False)
    async with app.run_test(size=(160, 30)) as pilot:
        await pilot.press("colon", *"rollout r-5", "enter")
        await until(pilot, lambda: isinstance(app.screen, RolloutView), "the rollout view")
        table = app.screen.query_one("#stages", DataTable)

        def cells(row: str) -> list[str]:
            return [c.text for c in table.get_row(row)][2:8] if table.row_count == 2 else []

        await until(pilot, lambda: cells("0") and cells("0")[0] == "2", "the stages' devices")
        _, on_target, downloading, pending, failed, offline = cells("0")
        assert on_target.endswith(" 1") and "50%" in on_target
        assert (downloading, pending, failed, offline) == ("0", "0", "1", "1")
        assert cells("1") == ["1", "not started", "-", "-", "-", "-"]

        site_b = RolloutSpec("r-b", "pump", 2, 1, Selector(tags=("site-b",)), (Stage(share=1.0),))
        runner.create(site_b, actor="test")
        await pilot.press("escape", "colon", *"rollout r-b", "enter")
        await until(pilot, lambda: app.screen.crumb == "r-b", "the second rollout")
        table = app.screen.query_one("#stages", DataTable)
        await until(
            pilot, lambda: table.row_count == 1 and table.get_row("0")[2].text == "3", "r-b"
        )
        assert table.get_row("0")[7].text == "0 +1 never"


async def test_deploy_to_marked_devices_after_typing_their_count(own_fleet):
    audit = own_fleet.service.audit
    app = console(own_fleet, "deploy", stream=False)
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: app.can_deploy, "the token's identity")
        await pilot.press("2")
        await until(pilot, lambda: isinstance(app.screen, FleetView), "the Fleet view")
        view = app.screen
        table = view.query_one("#fleet", DataTable)
        await until(pilot, lambda: table.row_count == len(DEVICES), "every device listed")
        # space marks the device under the cursor and moves down: pump-01, 03, 04
        await pilot.press("space", "down", "space", "space")
        assert view.marked == {"pump-01", "pump-03", "pump-04"}
        await pilot.press("up", "up", "space")  # back on pump-03: unmarked
        assert view.marked == {"pump-01", "pump-04"}
        await until(pilot, lambda: table.get_row("pump-01")[0].text == "✓ pump-01", "the mark")
        assert "2 marked" in text(view.query_one("#fleet-status", Static))

        await pilot.press("D")
        await until(pilot, lambda: isinstance(app.screen, DeployDialog), "the deploy dialog")
        app.screen.query_one(Select).value = ("pump", 2)
        await pilot.click("#deploy")
        await until(pilot, lambda: isinstance(app.screen, TypedConfirm), "the confirmation")
        confirm = app.screen
        assert "pump-01, pump-04" in text(confirm.query_one("#confirm-prompt"))
        await pilot.press("3", "enter")  # the wrong count: nothing is sent
        assert app.screen is confirm
        await pilot.press("backspace", "2", "enter")
        await until(pilot, lambda: app.screen is view, "the confirmation closed")

        def published() -> list[str]:
            entries = audit.entries(limit=100)
            return sorted(e.target for e in entries if e.action == "directive.publish")

        await until(pilot, lambda: published() == ["pump-01", "pump-04"], "both directives")
        await until(pilot, lambda: not view.marked, "the marks cleared")
        assert any("sent to 2 of 2 devices" in n.message for n in app._notifications)


async def test_a_short_terminal_switches_between_plots_and_events(fleet):
    """At 80x24 a plot needs the room: the Device view shows its plots or its events,
    ``p`` switches; at 160x48 both show."""
    app = console(fleet, "read", stream=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("colon", *"device pump-03", "enter")
        await until(pilot, lambda: isinstance(app.screen, DeviceView), "the Device view")
        view = app.screen
        plots, events = view.query_one("#device-plots"), view.query_one("#device-events")
        caption = view.query_one("#device-plot-caption", Static)
        await until(pilot, lambda: "no predictions in the last 6 h" in text(caption), "plots")
        assert plots.display and not events.display
        await pilot.press("p")
        assert events.display and not plots.display and not caption.display
        await until(pilot, lambda: events.row_count == 3, "the device's events")
        await pilot.press("p")
        assert plots.display and not events.display
    app = console(fleet, "read", stream=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("colon", *"device pump-03", "enter")
        await until(pilot, lambda: isinstance(app.screen, DeviceView), "the Device view")
        view = app.screen
        await until(pilot, lambda: view.query_one("#device-events").display, "the events")
        assert view.query_one("#device-plots").display
