"""The drift API and CLI on a real hub (HTTP over loopback, real SQLite store): every
verdict with its evidence, exact ``since``, and bad rule settings refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from edge_agent.contract.messages import MetricsMessage
from edge_agent.contract.window import MetricsWindow
from edge_agent.inference.accumulator import WindowAccumulator
from edge_agent.inference.model import LoadedModel
from hub.broker import free_port
from hub.bundler import ReferenceData
from hub.modelkit.dataset import FEATURES, Drift, make_dataset
from hub.service import HubService, HubSettings

T0 = 1_700_000_000.0 - 1_700_000_000.0 % 3600  # an hour boundary
DRIFTED = "bearing_temp_c"


def window(service: HubService, model: LoadedModel, x: np.ndarray, start: float) -> MetricsWindow:
    acc = WindowAccumulator(service.registry.reference("pump", 1), "pump", 1, clock=lambda: start)
    acc.record(x, model.predict(x.astype(np.float32)), 0.001)
    w = acc.close(now=start + 60.0)
    assert w is not None
    return w


@pytest.fixture
def hub(tmp_path: Path, demo_dir: Path) -> Iterator[tuple[HubService, str, str]]:
    """A hub with the demo model and 40 minutes of 60 s windows from 4 devices (one has
    a drifting sensor)."""
    settings = HubSettings(data_dir=tmp_path / "hub", api_port=0, embedded_broker_port=free_port())
    with HubService(settings) as service:
        with np.load(demo_dir / "reference.npz") as data:
            ref = ReferenceData(np.asarray(data["x"], dtype=np.float64), FEATURES)
        model = (demo_dir / "model-int8.tflite").read_bytes()
        service.registry.push_model(model, name="pump", reference=ref)
        loaded = LoadedModel(model)
        rng = np.random.default_rng(0)
        messages = []
        for d in range(4):
            drift = Drift(offset=2.0, features=(DRIFTED,)) if d == 3 else None
            x = make_dataset(40 * 60, seed=10 + d, drift=drift).x.astype(np.float64)
            for q in range(40):
                w = window(service, loaded, x[q * 60 : (q + 1) * 60], T0 + 60.0 * q)
                messages.append(MetricsMessage(f"pump-{d}", q + 1, q + 1, (w,)))
        rng.shuffle(messages)  # type: ignore[arg-type]
        service.store.store_metrics(messages)
        token, _ = service.tokens.create("ops", ["read"])
        yield service, service.api.url, token


def get(url: str, token: str, **params: Any) -> httpx.Response:
    return httpx.get(
        f"{url}/v1/models/pump/versions/1/drift",
        params=params,
        headers={"Authorization": f"Bearer {token}"},
    )


def test_every_verdict_comes_with_its_evidence(hub: tuple[HubService, str, str]) -> None:
    _, url, token = hub
    fleet = get(url, token).json()
    assert fleet["n"] == 4 * 40 * 60 and fleet["decision"]["verdict"] in ("drift", "major")
    assert DRIFTED in fleet["decision"]["drifted"]
    report = fleet["report"]
    assert report["rule"]["alpha"] == 0.01
    for f in [*report["features"], report["prediction"], report["confidence"]]:
        for key in ("n", "m", "statistic", "df", "p_value", "p_adjusted", "threshold",
                    "n_needed", "psi", "js", "hellinger", "verdict", "reason"):  # fmt: skip
            assert key in f, key
        assert f["verdict"] in ("insufficient", "none", "minor", "drift", "major")
    bearing = next(f for f in report["features"] if f["name"] == DRIFTED)
    assert bearing["drifted"] and bearing["p_adjusted"] <= 0.01 and bearing["df"] >= 1
    clean = get(url, token, device="pump-0").json()
    assert clean["n"] == 2400
    assert clean["decision"]["verdict"] in ("none", "minor")  # 2,400 >= the evidence needed
    few = get(url, token, device="pump-0", since=T0 + 60 * 35 + 1).json()
    assert few["n"] == 5 * 60 and few["decision"]["verdict"] == "insufficient"
    assert few["decision"]["detail"].startswith("waiting for evidence: 300 of ")


def test_since_is_exact_by_default_and_aligned_only_on_request(
    hub: tuple[HubService, str, str],
) -> None:
    _, url, token = hub
    since = T0 + 60 * 30 + 30  # half a minute into window 30: windows 30..39 end after it
    exact = get(url, token, since=since).json()
    assert (exact["since"], exact["n"]) == (since, 4 * 10 * 60)
    aligned = get(url, token, since=since, exact="false").json()
    assert (aligned["since"], aligned["n"]) == (T0, 4 * 40 * 60)


@pytest.mark.parametrize(
    "params", [{"alpha": 1.5}, {"alpha": 0}, {"psi": 0, "js": 0}, {"js": 1.0}, {"min_count": 0}]
)
def test_a_rule_that_cannot_decide_is_refused(
    hub: tuple[HubService, str, str], params: dict[str, float]
) -> None:
    _, url, token = hub
    r = get(url, token, **params)
    assert r.status_code in (400, 422), r.text  # query validation, or the rule's own check
    assert "\n" not in r.text


def test_model_drift_command_prints_the_verdicts(hub: tuple[HubService, str, str]) -> None:
    _, url, token = hub
    env = {**os.environ, "EDGEFLEET_TOKEN": token, "EDGEFLEET_HUB": url}
    run = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "model", "drift", "pump", "--version", "1"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith(f"drift    pump v1: {4 * 40 * 60} predictions; ")
    assert any(line.split()[1] == DRIFTED and line.split()[0] in ("drift", "major")
               for line in lines[2:])  # fmt: skip
    as_json = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "model", "drift", "pump", "--version", "1",
         "--device", "pump-0", "--json"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert as_json.returncode == 0 and json.loads(as_json.stdout)["n"] == 2400
