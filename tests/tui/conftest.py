"""Console tests: the real app driven by Pilot against a real hub on loopback (the
seeded fleet of tests/support/fleet.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from textual.pilot import Pilot

from edgefleet_client import AsyncHubClient
from tests.agent.conftest import (  # noqa: F401  (fixtures, registered by import)
    agent_config,
    broker,
    reference_x,
    trust_file,
)
from tests.support.fleet import T0, Fleet, running_fleet
from tui.app import ConsoleApp

#: What the views show as the hub's address (the real port changes every run).
HUB_LABEL = "http://hub.test:8700"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, demo_dir, reference_x) -> Iterator[Fleet]:  # noqa: F811
    """One hub per module for tests that only read."""
    model = (demo_dir / "model-int8.tflite").read_bytes()
    with running_fleet(tmp_path_factory.mktemp("hub"), model, reference_x) as f:
        yield f


@pytest.fixture
def own_fleet(tmp_path, demo_dir, reference_x) -> Iterator[Fleet]:  # noqa: F811
    """A hub of its own, for a test that changes it."""
    model = (demo_dir / "model-int8.tflite").read_bytes()
    with running_fleet(tmp_path / "hub", model, reference_x) as f:
        yield f


def console(fleet: Fleet, scope: str = "admin", url: str | None = None, **kw: object) -> ConsoleApp:
    """The console on ``fleet`` with a ``scope`` token and a fixed clock."""
    client = AsyncHubClient(url or fleet.url, fleet.tokens[scope])
    options: dict[str, object] = {"clock": lambda: T0, "refresh_s": 0.5, "health_s": 0.5}
    options.update(kw)
    return ConsoleApp(client, HUB_LABEL, **options)  # type: ignore[arg-type]


async def until(
    pilot: Pilot[object], check: Callable[[], object], what: str, timeout: float = 30
) -> None:
    """Let the app run until ``check()`` is true; fail saying ``what`` was awaited."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await pilot.pause(0.05)
