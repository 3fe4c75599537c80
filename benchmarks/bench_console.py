"""Console against a hub holding 10,000 devices: first paint of the Fleet view (the
hub's first computation of every device's drift verdict included), the UI thread's
time to apply one batch of 100 changed devices, /v1/fleet/summary, a page of the
device list filtered by ``faulty`` and by ``drift``, every verdict recomputed, and the
console's peak RSS.

Targets (issue 13): first paint <= 1 s, one 100-device batch <= 50 ms. The hub runs in
this process, so its request handling shares the GIL with the console (pessimistic).
The RSS is measured on a console of its own (a child process, headless at 160x48) that
visits every view — Fleet paged forward, a device with its plots, a version's drift —
and reports its peak (``VmHWM``) and the peak it had before the app started (Python,
Textual, httpx and NumPy imported), so the console's own share shows.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from edge_agent.contract.messages import Health, ModelVersion, State
from edgefleet_client import AsyncHubClient, HubClient
from hub.broker import free_port
from hub.service import HubService, HubSettings
from tui.app import ConsoleApp
from tui.screens.fleet import FleetView

DEVICES = 10_000


def _seed(service: HubService) -> None:
    assert service.store is not None
    now = time.time()
    for i in range(DEVICES):
        state = State(
            f"dev-{i:05d}", True, ts=now, active=ModelVersion("pump", 1 + i % 2),
            health=Health(10.0, 50 << 20, 4 << 30, 100.0), buffer_depth=i % 5,
        )  # fmt: skip
        service.store.record_state(state, now=now)


async def _measure(url: str, token: str) -> tuple[float, list[float]]:
    app = ConsoleApp(AsyncHubClient(url, token), url, refresh_s=3600, health_s=3600, stream=False)
    async with app.run_test(size=(160, 48)) as pilot:
        while not app.identity or not app.screen.query_one("#pulse-versions").row_count:  # type: ignore[attr-defined]
            await pilot.pause(0.01)  # Pulse loaded: its summary no longer competes (same process)
        start = time.perf_counter()
        await pilot.press("2")
        while not (
            isinstance(app.screen, FleetView)
            and app.screen.query_one("#fleet").row_count == FleetView.PAGE_SIZE  # type: ignore[attr-defined]
        ):
            await pilot.pause(0.005)
        first_paint = time.perf_counter() - start
        view = app.screen
        assert isinstance(view, FleetView) and view.page is not None
        page = view.page
        batches = []
        for round_ in range(10):  # 100 of the 200 rows change (buffer depth, cpu)
            changed = tuple(
                replace(d, buffer_depth=d.buffer_depth + round_ + 1,
                        health=replace(d.health, cpu_percent=float(round_)))
                if i % 2 == 0 else d
                for i, d in enumerate(page.devices)
            )  # fmt: skip
            t = time.perf_counter()
            view.show_page(replace(page, devices=changed))
            batches.append(time.perf_counter() - t)
            await pilot.pause()
    return first_paint, batches


def _peak_rss_mb() -> float:
    """This process's peak resident set (``VmHWM``), in MiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


async def _visit_every_view(url: str, token: str) -> int:
    """Drive a console through its views; returns the device pages it loaded."""
    app = ConsoleApp(AsyncHubClient(url, token), url, refresh_s=3600, health_s=3600)
    pages = 0

    async def until(check: object, what: str) -> None:
        deadline = time.monotonic() + 60
        while not check():  # type: ignore[operator]
            if time.monotonic() > deadline:
                raise RuntimeError(f"console RSS run: timed out waiting for {what}")
            await pilot.pause(0.02)

    async with app.run_test(size=(160, 48)) as pilot:
        await until(lambda: app.identity is not None, "the token's identity")
        await pilot.press("2")
        await until(lambda: isinstance(app.screen, FleetView), "the Fleet view")
        table = app.screen.query_one("#fleet")
        for _ in range(5):  # page forward through the fleet
            first = app.screen.page  # type: ignore[attr-defined]
            await until(lambda: app.screen.page is not None, "a page")  # type: ignore[attr-defined]
            await pilot.press("pagedown", "pagedown", "right_square_bracket")
            await until(lambda f=first: app.screen.page is not f, "the next page")  # type: ignore[attr-defined,misc]
            pages += 1
        await until(lambda: table.row_count > 0, "rows")  # type: ignore[attr-defined]
        await pilot.press("colon", *"device dev-00000", "enter")
        await until(
            lambda: "f0" in str(app.screen.query_one("#device-plot-caption").render()),
            "the device's plots",
        )
        await pilot.press("colon", *"drift pump:v1", "enter")
        await until(
            lambda: "PSI/hour" in str(app.screen.query_one("#drift-plot-caption").render()),
            "the drift plots",
        )
        for key in ("1", "3", "4", "5", "7"):
            await pilot.press(key)
            await pilot.pause(0.5)
    return pages


def console_child(url: str, token: str) -> None:
    """The child process: peak RSS before the app and after visiting every view."""
    before = _peak_rss_mb()
    pages = asyncio.run(_visit_every_view(url, token))
    print(json.dumps({"before_mb": before, "peak_mb": _peak_rss_mb(), "pages": pages}))


def console_rss(url: str, token: str) -> dict[str, float]:
    """Run :func:`console_child` in its own process; its report.

    Raises:
        RuntimeError: the child failed.
    """
    code = "import sys; from benchmarks.bench_console import console_child as c; c(*sys.argv[1:])"
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, "-c", code, url, token],
        capture_output=True, text=True, timeout=600, cwd=root, env=env, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"console RSS child failed: {done.stderr.strip()[-2000:]}")
    report: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def _register_and_record(service: HubService, tmp: Path) -> None:
    """Register the demo model as pump v1 and v2 and store six hours of dev-00000's
    windows (pump v1, the real accumulator), so the plots and Drift have data."""
    import numpy as np

    from hub.bundler import ReferenceData
    from hub.modelkit.pump import build_demo
    from tests.support.fleet import record_windows

    assert service.registry is not None
    build_demo(tmp / "demo", hidden=(16,), seed=3)
    with np.load(tmp / "demo" / "reference.npz") as data:
        x = np.asarray(data["x"], dtype=np.float64)
    model = (tmp / "demo" / "model-int8.tflite").read_bytes()
    ref = ReferenceData(x, tuple(f"f{i}" for i in range(x.shape[1])))
    for _ in (1, 2):
        service.registry.push_model(model, name="pump", reference=ref)
    record_windows(service, model, x, device="dev-00000", now=time.time())


def run() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = HubSettings(
            data_dir=Path(tmp) / "hub", api_port=0, embedded_broker_port=free_port()
        )
        with HubService(settings) as service:
            assert service.tokens is not None and service.api is not None
            t = time.perf_counter()
            _seed(service)
            print(f"   seeded {DEVICES} devices in {time.perf_counter() - t:.1f} s")
            _register_and_record(service, Path(tmp))
            token, _ = service.tokens.create("bench", ["read"])
            url = service.api.url
            with HubClient(url, token) as hub:
                summary_s = []
                for _ in range(5):
                    t = time.perf_counter()
                    s = hub.fleet_summary()
                    summary_s.append(time.perf_counter() - t)
                assert s.total == DEVICES
            first_paint, batches = asyncio.run(_measure(url, token))  # verdicts cold
            faulty_s, drift_s = [], []
            with HubClient(url, token) as hub:
                for _ in range(5):
                    t = time.perf_counter()
                    hub.devices(limit=FleetView.PAGE_SIZE, faulty=True)
                    faulty_s.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    page = hub.devices(limit=FleetView.PAGE_SIZE, drift=["insufficient"])
                    drift_s.append(time.perf_counter() - t)
                assert len(page.devices) == FleetView.PAGE_SIZE
            assert service.context is not None
            t = time.perf_counter()
            service.context.device_verdicts().refresh()
            verdicts_s = time.perf_counter() - t
            rss = console_rss(url, token)
    print(f"   fleet view first paint (page of {FleetView.PAGE_SIZE}): {first_paint * 1000:.0f} ms"
          " (target <= 1000 ms)")  # fmt: skip
    print(
        f"   /v1/devices page of {FleetView.PAGE_SIZE} over {DEVICES} devices: faulty=true median "
        f"{statistics.median(faulty_s) * 1000:.0f} ms, drift=insufficient median "
        f"{statistics.median(drift_s) * 1000:.0f} ms; every device's drift verdict "
        f"recomputed: {verdicts_s * 1000:.0f} ms"
    )
    print(
        f"   apply 100 changed devices on the UI thread: median "
        f"{statistics.median(batches) * 1000:.1f} ms, max {max(batches) * 1000:.1f} ms "
        "(target <= 50 ms)"
    )
    print(
        f"   /v1/fleet/summary over {DEVICES} devices: median "
        f"{statistics.median(summary_s) * 1000:.0f} ms"
    )
    print(
        f"   console peak RSS (own process, every view, {rss['pages']:.0f} fleet pages): "
        f"{rss['peak_mb']:.0f} MiB ({rss['before_mb']:.0f} MiB with its imports, before the app)"
    )


if __name__ == "__main__":
    run()
