"""The history routes on a real hub (HTTP over loopback, real SQLite store, windows
counted by the agent's real accumulator on the demo model): a device's health over
time, a feature's reference vs live bins, and PSI per hour with the one rule's verdict."""

from __future__ import annotations

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
from hub.drift import psi
from hub.modelkit.dataset import FEATURES, Drift, make_dataset
from hub.service import HubService, HubSettings

pytestmark = pytest.mark.timeout(120)

T0 = 1_700_000_000.0 - 1_700_000_000.0 % 3600  # an hour boundary
END = T0 + 3 * 3600  # three hours of windows
DRIFTED = "bearing_temp_c"
WINDOW_S = 300.0  # 12 windows an hour


def window(
    service: HubService,
    model: LoadedModel,
    x: np.ndarray,
    start: float,
    latency_s: float,
    errors: int = 0,
    slow_rows: int = 0,
) -> MetricsWindow:
    acc = WindowAccumulator(service.registry.reference("pump", 1), "pump", 1, clock=lambda: start)
    for i, row in enumerate(x):  # one timed invocation per row: the histogram counts each
        seconds = 0.05 if i < slow_rows else latency_s
        acc.record(row, model.predict(row[None, :].astype(np.float32))[0], seconds)
    if errors:
        acc.record_error("invoke_error", errors)
    w = acc.close(now=start + WINDOW_S)
    assert w is not None
    return w


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, demo_dir: Path) -> Iterator[tuple[str, str]]:
    """Three hours of 5-minute windows from two devices: ``pump-0`` steady (1 ms, but 2
    of every 30 invocations take 50 ms; no errors); ``pump-1`` at 1 ms, then slow (50
    ms) with 10 failed invocations per window in the third hour only, and its
    ``bearing_temp_c`` drifted in the third hour only."""
    data = tmp_path_factory.mktemp("history") / "hub"
    settings = HubSettings(data_dir=data, api_port=0, embedded_broker_port=free_port())
    with HubService(settings) as service:
        with np.load(demo_dir / "reference.npz") as npz:
            ref = ReferenceData(np.asarray(npz["x"], dtype=np.float64), FEATURES)
        model_bytes = (demo_dir / "model-int8.tflite").read_bytes()
        service.registry.push_model(model_bytes, name="pump", reference=ref)
        loaded = LoadedModel(model_bytes)
        messages = []
        per = 30  # predictions per window
        for d in range(2):
            clean = make_dataset(36 * per, seed=20 + d).x.astype(np.float64)
            drifted = make_dataset(
                36 * per, seed=30 + d, drift=Drift(offset=3.0, features=(DRIFTED,))
            )
            for q in range(36):
                late = d == 1 and q >= 24
                source = drifted.x.astype(np.float64) if late else clean
                x = source[q * per : (q + 1) * per]
                w = window(
                    service,
                    loaded,
                    x,
                    T0 + WINDOW_S * q,
                    0.05 if late else 0.001,
                    errors=10 if late else 0,
                    slow_rows=2 if d == 0 else 0,
                )
                messages.append(MetricsMessage(f"pump-{d}", q + 1, q + 1, (w,)))
        service.store.store_metrics(messages)
        for d in range(2):
            service.store.set_tags(f"pump-{d}", [f"site-{d}"], now=T0)
        token, _ = service.tokens.create("ops", ["read"])
        assert service.api is not None
        yield service.api.url, token


def get(hub: tuple[str, str], path: str, **params: Any) -> httpx.Response:
    url, token = hub
    return httpx.get(f"{url}{path}", params=params, headers={"Authorization": f"Bearer {token}"})


def test_device_history_has_predictions_latency_and_errors_per_bucket(hub):
    r = get(hub, "/v1/devices/pump-1/history", hours=3, until=END, points=3)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert (doc["since"], doc["until"], doc["bucket_s"]) == (T0, END, 3600.0)
    points = doc["points"]
    assert [p["start"] for p in points] == [T0, T0 + 3600, T0 + 7200]
    assert [p["windows"] for p in points] == [12, 12, 12]
    assert [p["n"] for p in points] == [360, 360, 360]
    assert [p["errors"] for p in points] == [0, 0, 120]
    assert points[0]["error_rate"] == 0.0
    assert points[2]["error_rate"] == pytest.approx(120 / (360 + 120))
    # 1 ms lands in the [1, 1.78) bin, 50 ms in [31.6, 56.2): p95 stays in its bin.
    assert 1.0 <= points[0]["p95_ms"] < 1.78
    assert 31.6 <= points[2]["p95_ms"] < 56.2
    steady = get(hub, "/v1/devices/pump-0/history", hours=3, until=END, points=3).json()
    assert [p["errors"] for p in steady["points"]] == [0, 0, 0]
    # 6.7 % of its invocations take 50 ms: the 95th percentile is one of them (a median
    # or a mean would stay near 1 ms and 4 ms).
    assert all(31.6 <= p["p95_ms"] < 56.2 for p in steady["points"])


def test_device_history_per_window_and_only_inside_the_span(hub):
    doc = get(hub, "/v1/devices/pump-0/history", hours=1, until=END, points=2000).json()
    points = doc["points"]
    assert len(points) == 12  # the last hour's windows, one point each
    assert all(p["windows"] == 1 and p["n"] == 30 for p in points)
    assert points[0]["start"] == T0 + 7200
    empty = get(hub, "/v1/devices/pump-0/history", hours=1, until=T0).json()
    assert empty["points"] == []


def test_drift_bins_are_the_reference_and_the_merged_live_counts(hub):
    r = get(hub, "/v1/models/pump/versions/1/drift/bins", feature=DRIFTED)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["feature"] == DRIFTED and DRIFTED in doc["features"]
    k = len(doc["edges"]) + 1  # underflow, interior bins, overflow
    assert len(doc["reference"]) == len(doc["reference_counts"]) == len(doc["live"]) == k
    assert sum(doc["reference"]) == pytest.approx(1.0)
    assert doc["n"] == 2 * 36 * 30 and sum(doc["live"]) + doc["live_nan"] == doc["n"]
    one = get(hub, "/v1/models/pump/versions/1/drift/bins", feature=DRIFTED, device="pump-0")
    assert one.json()["n"] == 36 * 30
    cohort = get(hub, "/v1/models/pump/versions/1/drift/bins", feature=DRIFTED, tag="site-1")
    assert cohort.json()["n"] == 36 * 30
    late = get(
        hub, "/v1/models/pump/versions/1/drift/bins", feature=DRIFTED, device="pump-1",
        since=T0 + 7201,
    ).json()  # fmt: skip
    assert late["n"] == 12 * 30  # windows ending at or after since: the third hour's
    # The drifted hour's live bins are far from the reference; the steady device's not.
    steady = one.json()
    assert psi(late["reference_counts"], late["live"]) > 0.25
    assert psi(steady["reference_counts"], steady["live"]) < 0.1
    first = get(hub, "/v1/models/pump/versions/1/drift/bins").json()
    assert first["feature"] == first["features"][0]  # default: the first feature


def test_drift_history_rises_in_the_drifted_hour_over_the_threshold(hub):
    r = get(hub, "/v1/models/pump/versions/1/drift/history", hours=3, until=END)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["psi_threshold"] == 0.1 and doc["psi_major"] == 0.25
    hours = doc["hours"]
    # Each hour holds the windows that end in it: the first hour's last window ends at
    # T0 + 3600 (in the second hour), so 11 + 12 + 12 and the last one in the next hour.
    assert [h["start"] for h in hours] == [T0, T0 + 3600, T0 + 7200]
    assert [h["n"] for h in hours] == [2 * 11 * 30, 2 * 12 * 30, 2 * 12 * 30]
    psis = [next(f for f in h["features"] if f["name"] == DRIFTED)["psi"] for h in hours]
    assert psis[0] < 0.1 and psis[1] < 0.1 < 0.25 < psis[2], psis
    drifted = next(f for f in hours[2]["features"] if f["name"] == DRIFTED)
    assert drifted["verdict"] in ("drift", "major") and hours[2]["verdict"] in ("drift", "major")
    assert hours[0]["verdict"] in ("none", "insufficient", "minor")
    steady = get(
        hub, "/v1/models/pump/versions/1/drift/history", hours=3, until=END, device="pump-0"
    ).json()
    last = next(f for f in steady["hours"][-1]["features"] if f["name"] == DRIFTED)
    assert last["psi"] < 0.1
    assert (
        get(hub, "/v1/models/pump/versions/1/drift/history", hours=1, until=T0).json()["hours"]
        == []
    )


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/v1/devices/nobody/history", {}, 404),
        ("/v1/devices/pump-0/history", {"hours": "0"}, 400),
        ("/v1/devices/pump-0/history", {"hours": "nan"}, 400),
        ("/v1/devices/pump-0/history", {"hours": "1e9"}, 400),
        ("/v1/devices/pump-0/history", {"points": "0"}, 400),
        ("/v1/devices/pump-0/history", {"until": "-1"}, 400),
        ("/v1/devices/pump-0/history", {"role": "boss"}, 400),
        ("/v1/models/pump/versions/9/drift/bins", {}, 404),
        ("/v1/models/pump/versions/1/drift/bins", {"feature": "nope"}, 400),
        ("/v1/models/pump/versions/1/drift/bins", {"device": "../x"}, 400),
        ("/v1/models/pump/versions/1/drift/bins", {"since": "inf"}, 400),
        ("/v1/models/nope/versions/1/drift/history", {}, 404),
        ("/v1/models/pump/versions/1/drift/history", {"hours": "-3"}, 400),
        ("/v1/models/pump/versions/1/drift/history", {"tag": ""}, 400),
    ],
)
def test_bad_history_parameters_get_one_line_errors(hub, path, params, status):
    r = get(hub, path, **params)
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and "\n" not in body["error"]


def test_history_routes_need_a_token_and_are_documented(hub):
    url, _ = hub
    for path in (
        "/v1/devices/pump-0/history",
        "/v1/models/pump/versions/1/drift/bins",
        "/v1/models/pump/versions/1/drift/history",
    ):
        assert httpx.get(f"{url}{path}").status_code == 401
    schema = httpx.get(f"{url}/openapi.json").json()
    for path, model in (
        ("/v1/devices/{device_id}/history", "DeviceHistory"),
        ("/v1/models/{name}/versions/{version}/drift/bins", "DriftBins"),
        ("/v1/models/{name}/versions/{version}/drift/history", "DriftHistory"),
    ):
        ok = schema["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
        assert ok["schema"]["$ref"].endswith(f"/{model}")


def test_the_typed_client_reads_the_history_routes(hub):
    from edgefleet_client import HubClient, HubError

    url, token = hub
    with HubClient(url, token) as client:
        h = client.device_history("pump-1", hours=3, until=END, points=3)
        assert [p.errors for p in h.points] == [0, 0, 120] and h.bucket_s == 3600.0
        bins = client.drift_bins("pump", 1, feature=DRIFTED, device="pump-1", since=T0 + 7201)
        assert bins.n == 360 and sum(bins.live_share) == pytest.approx(1.0)
        history = client.drift_history("pump", 1, hours=3, until=END)
        assert [h.start for h in history.hours] == [T0, T0 + 3600, T0 + 7200]
        assert (history.hours[-1].psi_of(DRIFTED) or 0.0) > 0.25
        with pytest.raises(HubError) as refused:
            client.drift_bins("pump", 1, feature="nope")
        assert refused.value.status == 400 and "no feature 'nope'" in refused.value.message
