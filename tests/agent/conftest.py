"""Fixtures for agent tests: a real embedded broker, a real HTTP bundle server, real bundles."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.daemon.config import AgentConfig, BrokerConfig
from hub.broker import EmbeddedBroker
from hub.modelkit import DenseLayer, DenseNet, write_float
from tests.support.bundle_server import BundleServer
from tests.support.bundles import build, spoil_samples
from tests.support.hub_double import HubDouble


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as b:
        yield b


@pytest.fixture(scope="session")
def reference_x(demo_dir: Path) -> np.ndarray:
    with np.load(demo_dir / "reference.npz") as data:
        return np.asarray(data["x"], dtype=np.float64)


@pytest.fixture(scope="session")
def bundles(tmp_path_factory, demo_dir, reference_x, signing_keys) -> dict[str, Path]:
    """v1 (float model), v2 (int8 model), a v2 that fails its smoke test, and a v3 that
    returns NaN for inputs far outside the reference range."""
    out = tmp_path_factory.mktemp("bundles")
    keys = signing_keys[:2]
    v1 = build((demo_dir / "model-float.tflite").read_bytes(), 1, keys, out / "v1.efb", reference_x)
    v2 = build((demo_dir / "model-int8.tflite").read_bytes(), 2, keys, out / "v2.efb", reference_x)
    bad = spoil_samples(v2, out / "v2-bad-smoke.efb", keys)
    f = reference_x.shape[1]
    w = np.zeros((f, 3), np.float32)
    w[0, 0], w[0, 1] = 1e30, -1e30  # huge feature-0 values overflow to inf - inf = NaN
    w[:, 2] = 1e-3
    nan_model = write_float(DenseNet((DenseLayer(w, np.zeros(3, np.float32), "none"),)))
    v3 = build(nan_model, 3, keys, out / "v3-nan.efb", reference_x)
    return {"v1": v1, "v2": v2, "v2-bad": bad, "v3-nan": v3}


@pytest.fixture
def server() -> Iterator[BundleServer]:
    with BundleServer() as s:
        yield s


class PatientHubDouble(HubDouble):
    """The hub double, waiting up to 60 s by default (the machine may be busy)."""

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
        return super().wait_for(predicate, timeout, what)


@pytest.fixture
def hub(broker, signing_keys) -> Iterator[HubDouble]:
    h = PatientHubDouble(broker.host, broker.port, signing_keys[:2])
    yield h
    h.close()


@pytest.fixture
def trust_file(tmp_path, trust_2of3) -> Path:
    path = tmp_path / "trust.json"
    path.write_text(json.dumps(trust_2of3.to_json()))
    return path


_counter = iter(range(10**6))


@pytest.fixture
def agent_config(tmp_path, trust_file, broker) -> AgentConfig:
    return AgentConfig(
        device_id=f"dev-{next(_counter)}",
        data_dir=tmp_path / "agent-data",
        trust_file=trust_file,
        broker=BrokerConfig(host=broker.host, port=broker.port),
        window_s=3600,
        local_api_port=0,
        state_interval_s=3600,
    )
