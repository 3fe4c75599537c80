"""SVG snapshots of the main views at 80x24 and 160x48 against the seeded hub (fixed
clock, fixed ids and times; the hub's address shown as a fixed label).

After an intended change of a view: ``pytest tests/tui/test_snapshots.py
--snapshot-update`` and review the SVGs (``__snapshots__/``) before committing."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from rich.cells import cell_len
from textual.pilot import Pilot
from textual.widgets import DataTable

from hub.rollouts import RolloutSpec, Selector, Stage
from tests.support.fleet import DEVICES, Fleet, record_alerts, record_windows, running_fleet
from tests.tui.conftest import console, until

pytestmark = pytest.mark.timeout(120)

SIZES = {"80x24": (80, 24), "160x48": (160, 48)}


@pytest.fixture(scope="module")
def snap_fleet(tmp_path_factory, demo_dir, reference_x) -> Iterator[Fleet]:
    """The seeded fleet plus one running rollout whose first stage touched site-a, the
    alerts of :func:`record_alerts` (one firing, one resolved), and six hours of
    pump-02's windows (:func:`record_windows`: f0 drifts in the last two)."""
    model = (demo_dir / "model-int8.tflite").read_bytes()
    # One name in every session (the Audit view shows the data directory's last part).
    data = tmp_path_factory.mktemp("snapshot-hub", numbered=False)
    with running_fleet(data, model, reference_x) as f:
        record_windows(f.service, model, reference_x)
        spec = RolloutSpec(
            "canary-2", "pump", 2, 1, Selector(tags=("site-a",)),
            (Stage(share=0.5, bake_s=3600), Stage(share=1.0, bake_s=3600)),
        )  # fmt: skip
        runner = f.service.runner
        runner.create(spec, actor="test")
        record_alerts(f.service)
        end = time.monotonic() + 30
        while not runner.rollouts.get("canary-2").rollout.touched:
            assert time.monotonic() < end, "the rollout's first stage touched no device"
            time.sleep(0.05)  # the runner's thread has no event to await
        yield f


def widths_settled(table: DataTable) -> bool:
    """DataTable measures new rows when idle: every column as wide as its cells."""
    for i, column in enumerate(table.ordered_columns):
        cells = [table.get_row_at(r)[i] for r in range(table.row_count)]
        if any(column.content_width < cell_len(c.text) for c in cells):
            return False
    return True


async def rows_loaded(pilot: Pilot[object], selector: str, count: int) -> None:
    app = pilot.app
    await until(pilot, lambda: app.stream_state == "live", "the event stream")
    await until(pilot, lambda: app.identity is not None, "the token's identity")
    await until(
        pilot,
        lambda: (
            len(app.screen.query(selector)) == 1
            and app.screen.query_one(selector, DataTable).row_count == count
        ),
        f"{count} rows in {selector}",
    )
    table = app.screen.query_one(selector, DataTable)
    await until(pilot, lambda: widths_settled(table), f"{selector}'s column widths")
    await pilot.pause(0.2)


def caption_says(pilot: Pilot[object], selector: str, text: str) -> Callable[[], bool]:
    screen = pilot.app.screen
    return lambda: (
        len(screen.query(selector)) == 1 and text in str(screen.query_one(selector).render())
    )


VIEWS = {
    # name: (keys to press, table to wait for, its rows, token, (caption, its text))
    "pulse": ((), "#pulse-events", 8, "read", None),
    "fleet": (("2",), "#fleet", len(DEVICES), "read", None),
    "device": (
        ("colon", *"device pump-02", "enter"), "#device-events", 2, "read",
        ("#device-plot-caption", "f0: reference ─ vs live"),
    ),
    "rollouts": (("3",), "#rollouts", 1, "read", None),
    "events": (("4",), "#events", 11, "read", None),
    "alerts": (("7",), "#alerts", 3, "read", None),
    # Models and Audit show what the hub's clock and fresh keys decide (push and audit
    # times, digests, token ids): the console's ``redact`` setting masks them.
    "models": (("5",), "#models", 2, "read", None),
    "audit": (("6",), "#audit", -1, "admin", None),  # -1: as many as the log holds
    "drift": (
        ("colon", *"drift pump:v1", "enter"), "#drift", 10, "read",
        ("#drift-plot-caption", "f0: reference ─ vs live"),
    ),
}  # fmt: skip


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("view", VIEWS)
def test_view_snapshot(snap_compare, snap_fleet, view, size):
    keys, selector, count, scope, caption = VIEWS[view]
    if count < 0:
        assert snap_fleet.service.audit is not None
        count = len(snap_fleet.service.audit.entries(0, 1000))
        assert count >= 1, "the seeded hub audited nothing"

    async def run_before(pilot: Pilot[object]) -> None:
        await until(pilot, lambda: pilot.app.identity is not None, "the token's identity")
        await pilot.press(*keys)
        await rows_loaded(pilot, selector, count)
        if caption is not None:
            await until(pilot, caption_says(pilot, *caption), f"{caption[0]}: {caption[1]}")
            await pilot.pause(0.2)

    app = console(snap_fleet, scope, refresh_s=3600.0, health_s=3600.0, redact=True)
    assert snap_compare(app, terminal_size=SIZES[size], run_before=run_before)


def test_light_theme_snapshot(snap_compare, snap_fleet):
    async def run_before(pilot: Pilot[object]) -> None:
        await until(pilot, lambda: pilot.app.identity is not None, "the token's identity")
        await pilot.press("2")
        await rows_loaded(pilot, "#fleet", len(DEVICES))

    app = console(snap_fleet, "read", refresh_s=3600.0, health_s=3600.0, light=True)
    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_drift_view_snapshot_without_windows(snap_compare, snap_fleet, size):
    """The Drift view of a version no device has reported windows for (the view with
    windows: tests/tui/test_drift_live.py, on a real agent)."""

    async def run_before(pilot: Pilot[object]) -> None:
        app = pilot.app
        await until(pilot, lambda: app.identity is not None, "the token's identity")
        await until(pilot, lambda: app.stream_state == "live", "the event stream")
        await pilot.press("colon", *"drift pump:v2", "enter")
        await until(
            pilot,
            lambda: (
                len(app.screen.query("#drift-summary")) == 1
                and "no metric windows" in str(app.screen.query_one("#drift-summary").render())
            ),
            "the drift summary",
        )
        await pilot.pause(0.2)

    app = console(snap_fleet, "read", refresh_s=3600.0, health_s=3600.0)
    assert snap_compare(app, terminal_size=SIZES[size], run_before=run_before)
