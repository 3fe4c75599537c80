"""The Drift view on real windows: a real agent runs the version the hub deployed,
predicts on inputs whose first sensor drifted, and its window reaches the hub."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from textual.widgets import DataTable, Static
from textual_plot import PlotWidget

from edge_agent.daemon.agent import Agent
from edge_agent.daemon.config import BrokerConfig
from edgefleet_client import HubClient
from tests.tui.conftest import console, until

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


async def test_drift_view_shows_the_drifted_feature(own_fleet, agent_config, reference_x):
    service = own_fleet.service
    config = replace(
        agent_config,
        trust_file=service.settings.data_dir / "keys" / "trust.json",
        broker=BrokerConfig(host=service.broker.host, port=service.broker.port),
    )
    with Agent(config) as agent:
        with HubClient(own_fleet.url, own_fleet.tokens["deploy"]) as hub:
            hub.deploy(config.device_id, "pump", 2)
        ok = service.ingest.wait_until(
            lambda _: any(
                r.event.kind.value == "activated"
                for r in service.store.events(device=config.device_id, limit=100)
            ),
            30,
        )
        assert ok, "the agent never activated pump v2"
        shifted = reference_x[:300].copy()
        shifted[:, 0] += 3 * reference_x[:, 0].std()  # sensor 0 drifts
        agent.predict(shifted)
        agent.close_window()
        assert agent.wait_for_drain(30), "the hub never stored and acked the window"

    app = console(own_fleet, "read", stream=False, clock=time.time)  # the window is recent

    def caption(selector: str) -> str:
        return str(app.screen.query_one(selector, Static).render())

    async with app.run_test(size=(120, 48)) as pilot:
        await pilot.press("colon", *"drift pump:v2", "enter")
        await until(pilot, lambda: app.screen.crumb == "pump:v2 drift", "the Drift view")
        table = app.screen.query_one("#drift", DataTable)
        await until(pilot, lambda: table.row_count == 10, "ten features")
        f0 = [c.text for c in table.get_row("f0")]
        assert f0[1] == "300" and f0[5] == "major"
        others = {table.get_row(f"f{i}")[5].text for i in range(1, 10)}
        assert "major" not in others
        assert "300 predictions" in str(app.screen.query_one("#drift-summary", Static).render())
        # The plots follow the feature under the cursor: f0, its hour over the threshold.
        await until(pilot, lambda: "f0: PSI/hour" in caption("#drift-plot-caption"), "f0")
        text = caption("#drift-plot-caption")
        assert "1 of 1 h >= 0.1" in text, text
        assert "f0: reference ─ vs live █ (300)" in text, text
        assert all(p.display for p in app.screen.query(PlotWidget))
        await pilot.press("down")  # f1 did not drift: its hour stays under the line
        await until(
            pilot,
            lambda: "f1: reference ─" in caption("#drift-plot-caption"),
            "f1's plots",
        )
        assert "f1: PSI/hour, 0 of 1 h >= 0.1" in caption("#drift-plot-caption")

        await pilot.press("colon", *f"device {config.device_id}", "enter")
        await until(pilot, lambda: app.screen.crumb == config.device_id, "the Device view")
        line = app.screen.query_one("#device-drift", Static)
        await until(pilot, lambda: "300 predictions" in str(line.render()), "its drift")
        assert "1 of 10 features drifted: f0 major" in str(line.render())
        await until(pilot, lambda: "predictions/" in caption("#device-plot-caption"), "its history")
        text = caption("#device-plot-caption")
        assert "predictions/window (x: hours ago), 6 h: 1 points, latest 300" in text, text
        assert "f0: reference ─ vs live █ (300)" in text, text
        await pilot.press("m")
        assert "p95 ms/" in caption("#device-plot-caption")
        await pilot.press("m")
        assert "errors %/" in caption("#device-plot-caption")
        await pilot.press("f")
        await until(
            pilot, lambda: "f1: reference" in caption("#device-plot-caption"), "the next feature"
        )
        await pilot.press("escape", "colon", *"device pump-04", "enter")  # v2, no windows
        await until(pilot, lambda: app.screen.crumb == "pump-04", "a device without windows")
        line = app.screen.query_one("#device-drift", Static)
        await until(pilot, lambda: "no metric windows yet" in str(line.render()), "no windows")
        assert "drift of pump:v2 here" in str(line.render())  # its own, not the fleet's
        await until(
            pilot, lambda: "no predictions in" in caption("#device-plot-caption"), "no history"
        )
        assert "f0: reference ─ vs no live values" in caption("#device-plot-caption")
