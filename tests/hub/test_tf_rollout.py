"""Every model from TensorFlow's converter (tests/fixtures/tf) rolled out end to end, in
both runtimes: pushed to a real hub (which bundles and signs it), deployed over the
hub's own broker to a real agent, served through the agent's loopback API (tensor
inputs as raw little-endian bytes, tabular ones as JSON), its windows stored by the hub
and its drift report read through the hub's API.

One hub, and one agent per runtime, both deployed each fixture at once: an in-process
agent on this environment's runtime (ai-edge-litert), and ``edgefleet agent run`` in
the tflite-runtime environment (``.venv-tflite``, see :data:`TFLITE_PYTHON`) as a child
process.
tflite-runtime 2.14 cannot run the FULLY_CONNECTED version TF 2.20 writes for the
dynamic-range 2-D CNN: that agent's activation fails with one line naming the operator
and version, and it keeps serving the model before.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from edge_agent.contract.input_schema import OUTPUT_PREFIX
from edge_agent.daemon.agent import Agent
from edge_agent.daemon.config import BrokerConfig
from hub.broker import free_port
from hub.service import HubService, HubSettings
from tests.support.agent_process import Daemon, poll, write_toml
from tests.test_tf_models import TABULAR, TENSOR, TF, VARIANTS

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
#: The tflite-runtime environment's interpreter (``make`` creates ``.venv-tflite``; a
#: worktree names its checkout's with EDGEFLEET_TFLITE_PYTHON). Without it, only the
#: first agent runs, with a warning.
TFLITE_PYTHON = Path(
    os.environ.get("EDGEFLEET_TFLITE_PYTHON") or ROOT / ".venv-tflite" / "bin" / "python"
)
TFLITE_ENV = {"EDGEFLEET_TFLITE_RUNTIME": "tflite-runtime"}  # that runtime or fail
#: What tflite-runtime 2.14 cannot run (see the module's docstring), and how its
#: activation failure must say so.
LACKS = {
    ("cnn2d", "dynamic"): (
        r"tflite-runtime 2\.14\.\d+ lacks operator FULLY_CONNECTED version 12, which this "
        "model needs"
    )
}
TFLITE_RUNTIME_LACKS = set(LACKS)
N = 24  # predictions per fixture and agent
WAIT = 60.0  # generous: the machine is shared
FAST_PROBATION = {
    "window_s": 0.5,
    "min_predictions": 1,
    "max_error_rate": 0.5,
    "max_latency_p95_ms": None,
    "max_crashes": 2,
}
FIXTURES = [(name, variant) for name in (*TABULAR, *TENSOR) for variant in VARIANTS]


def kinds(service: HubService, device: str) -> list[tuple[str, str | None]]:
    return [
        (r.event.kind.value, r.event.model.name if r.event.model else None)
        for r in service.store.events(device=device, limit=1000)
    ]


def failure(service: HubService, device: str, model: str) -> str:
    """The detail of the device's ``failed`` event for ``model``."""
    for r in service.store.events(device=device, limit=1000):
        e = r.event
        if e.kind.value == "failed" and e.model is not None and e.model.name == model:
            return str(e.detail)
    raise AssertionError(f"no failed event for {model} on {device}")


def predict(base: str, x: np.ndarray, tensor: bool) -> dict[str, Any]:
    """POST a batch to an agent's local API: raw float32 bytes for a tensor input, else JSON."""
    if tensor:
        shape = ",".join(str(d) for d in x.shape)
        r = httpx.post(
            f"{base}/v1/predict",
            content=np.ascontiguousarray(x, dtype="<f4").tobytes(),
            headers={"Content-Type": "application/octet-stream", "X-Tensor-Shape": shape},
            timeout=WAIT,
        )
    else:
        r = httpx.post(f"{base}/v1/predict", json={"inputs": x.tolist()}, timeout=WAIT)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_every_tensorflow_fixture_rolls_out_serves_and_reports_drift_in_both_runtimes(
    tmp_path, agent_config
):
    settings = HubSettings(data_dir=tmp_path / "hub", api_port=0, embedded_broker_port=free_port())
    with HubService(settings) as service:
        token, _ = service.tokens.create("ci", ["deploy"])
        auth = {"Authorization": f"Bearer {token}"}
        api = service.api.url
        trust = settings.data_dir / "keys" / "trust.json"
        broker = BrokerConfig(host=service.broker.host, port=service.broker.port)
        config = replace(agent_config, trust_file=trust, broker=broker, window_s=1.0)
        daemon = None
        if TFLITE_PYTHON.exists():
            toml = write_toml(
                tmp_path / "tflite-agent.toml",
                device_id=f"{config.device_id}-tflite",
                data_dir=tmp_path / "tflite-agent",
                trust_file=trust,
                broker=(broker.host, broker.port),
                window_s=1,
            )
            daemon = Daemon(toml, python=str(TFLITE_PYTHON), env=TFLITE_ENV).start()
        else:
            warnings.warn(f"no {TFLITE_PYTHON}: the tflite-runtime agent is left out", stacklevel=1)
        try:
            with Agent(config) as agent:
                agents = {config.device_id: f"http://127.0.0.1:{agent.local_api.port}"}
                if daemon is not None:
                    agents[f"{config.device_id}-tflite"] = daemon.api()
                for name, variant in FIXTURES:
                    roll_out(service, api, auth, agents, name, variant)
            if daemon is not None:
                daemon.stop()  # exits 0 after all that
        finally:
            if daemon is not None:
                daemon.close()


def roll_out(
    service: HubService,
    api: str,
    auth: dict[str, str],
    agents: dict[str, str],
    name: str,
    variant: str,
) -> None:
    """Push one fixture, deploy it to every agent whose runtime can run it, serve ``N``
    reference samples on each, and read back each device's windows as a drift report."""
    model = f"{name}-{variant}"
    with (TF / f"{name}.npz").open("rb") as npz:
        pushed = httpx.post(
            f"{api}/v1/models/{model}/push",
            headers=auth,
            files={
                "model": ("m.tflite", (TF / f"{model.replace('-', '_')}.tflite").read_bytes()),
                "reference": ("reference.npz", npz.read()),
            },
            timeout=WAIT,
        )
    assert pushed.status_code == 201, (model, pushed.text)
    lacking = {
        dev: base
        for dev, base in agents.items()
        if dev.endswith("-tflite") and (name, variant) in TFLITE_RUNTIME_LACKS
    }
    targets = {dev: base for dev, base in agents.items() if dev not in lacking}
    for dev in agents:
        r = httpx.post(
            f"{api}/v1/devices/{dev}/deploy",
            headers=auth,
            json={"name": model, "version": 1, "probation": FAST_PROBATION},
            timeout=WAIT,
        )
        assert r.status_code == 201, (model, r.text)
    for dev in targets:
        ok = service.ingest.wait_until(
            lambda _, d=dev: ("activated", model) in kinds(service, d), WAIT
        )
        assert ok, f"{model} never activated on {dev}: {kinds(service, dev)[-6:]}"
    with np.load(TF / f"{name}.npz") as data:
        x = data["x"][:N].astype(np.float32)
    tensor = name in TENSOR
    for dev, base in lacking.items():
        # refused at activation in one line naming the operator and version it lacks;
        # the model before it keeps serving
        ok = service.ingest.wait_until(
            lambda _, d=dev: ("failed", model) in kinds(service, d), WAIT
        )
        assert ok, f"{model} never failed on {dev}: {kinds(service, dev)[-6:]}"
        detail = failure(service, dev, model)
        assert re.search(LACKS[(name, variant)], detail), detail
        assert "\n" not in detail
        assert predict(base, x, tensor)["model"]["name"] != model
    for dev, base in targets.items():
        answer = predict(base, x, tensor)
        assert answer["model"]["name"] == model, (dev, answer["model"])
        outputs = np.asarray(answer["outputs"])
        assert outputs.shape[0] == N and np.isfinite(outputs).all(), (dev, model)
    for dev in targets:
        report = poll(
            lambda d=dev: drift_with_all_windows(api, auth, model, d),
            f"the hub's drift report of {model} on {dev} counting all {N} predictions",
            WAIT,
        )
        check_report(report, name, model, dev)


def drift_with_all_windows(
    api: str, auth: dict[str, str], model: str, dev: str
) -> dict[str, Any] | None:
    r = httpx.get(
        f"{api}/v1/models/{model}/versions/1/drift",
        params={"device": dev},
        headers=auth,
        timeout=WAIT,
    )
    assert r.status_code == 200, r.text
    body = dict(r.json())
    return body if body["n"] == N else None


def check_report(body: dict[str, Any], name: str, model: str, dev: str) -> None:
    """What each kind of model's report must hold."""
    report = body["report"]
    where = f"{model} on {dev}: {json.dumps(report)[:300]}"
    features = [f["name"] for f in report["features"]]
    assert all(f["n"] == N for f in report["features"]), where
    if name in TENSOR:
        channels = [c["name"] for c in report["channel_values"]]
        assert channels and features == [
            f"{c}.{s}" for c in channels for s in ("mean", "std", "energy")
        ], where
    else:
        inputs = [f for f in features if not f.startswith(OUTPUT_PREFIX)]
        assert len(inputs) >= 4 and not any("." in f for f in inputs), where
    outputs = [f for f in features if f.startswith(OUTPUT_PREFIX)]
    assert bool(outputs) == (name in ("reg", "multilabel")), where  # outputs monitored
    if name == "reg":
        assert report["output_kind"] == "regression" and report["output_shift"], where
        assert "prediction" not in report, where
    elif name == "multilabel":
        assert report["output_kind"] == "multilabel" and report["output_shift"], where
    else:  # classifiers: the prediction and confidence are tested, no output shift
        assert report["prediction"]["n"] == N and "output_shift" not in report, where
