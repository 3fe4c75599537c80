"""The client tests run against a real hub on loopback holding the seeded fleet."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.agent.conftest import reference_x  # noqa: F401  (fixture, registered by import)
from tests.support.fleet import Fleet, running_fleet


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, demo_dir, reference_x) -> Iterator[Fleet]:  # noqa: F811
    """One hub per test module (tests that change it use their own)."""
    model = (demo_dir / "model-int8.tflite").read_bytes()
    with running_fleet(tmp_path_factory.mktemp("hub"), model, reference_x) as f:
        yield f
