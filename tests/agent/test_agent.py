"""The agent daemon end to end: real broker, real HTTP bundle server, real bundles and runtime.

Tests wait for events the agent publishes (through the hub double), never on sleeps.
"""

from __future__ import annotations

import socket

import httpx
import numpy as np
import pytest

from edge_agent.contract.directive import Probation
from edge_agent.contract.topics import Channel
from edge_agent.daemon.agent import Agent
from edge_agent.errors import PredictionError
from tests.support.bundles import model_ref

# runtime: also run against tflite-runtime in the second environment (make pytest-tflite)
pytestmark = [pytest.mark.timeout(180), pytest.mark.runtime]


def serve(server, bundles, name: str, version: int, url_name: str | None = None):
    path = bundles[name]
    url = server.add(f"/b/{url_name or name}.efb", path.read_bytes())
    return model_ref(path, url, version=version)


def activate(hub, agent_config, ref, **kw):
    d = hub.publish_directive(hub.directive(agent_config.device_id, ref, **kw))
    return d


@pytest.fixture
def agent(agent_config):
    a = Agent(agent_config).start()
    yield a
    a.stop()


def test_agent_activates_signed_bundle_and_passes_probation(
    agent, agent_config, hub, server, bundles, reference_x
):
    dev = agent_config.device_id
    d = activate(hub, agent_config, serve(server, bundles, "v1", 1))
    hub.wait_for(hub.event(dev, "activated", d.seq), what="activated")
    result = agent.predict(reference_x[:5])
    assert result.outputs.shape == (5, 3)
    assert result.model.version == 1
    np.testing.assert_allclose(result.outputs.sum(axis=1), 1.0, atol=1e-5)
    hub.wait_for(hub.event(dev, "probation_passed", d.seq), what="probation passed")
    kinds = hub.kinds(dev)
    assert kinds.index("received") < kinds.index("verified") < kinds.index("activated")
    hub.wait_for(lambda: any(s.active and s.active.version == 1 for s in hub.devices[dev].states))


def test_smoke_test_failure_refuses_bundle_and_keeps_last_good_model(
    agent, agent_config, hub, server, bundles, reference_x
):
    dev = agent_config.device_id
    d1 = activate(hub, agent_config, serve(server, bundles, "v1", 1))
    hub.wait_for(hub.event(dev, "activated", d1.seq))
    d2 = activate(hub, agent_config, serve(server, bundles, "v2-bad", 2))
    failed = hub.wait_for(hub.event(dev, "failed", d2.seq), what="failed event")
    assert "smoke test" in failed.detail
    assert agent.predict(reference_x[0]).model.version == 1


def test_tampered_download_refused_and_last_good_model_kept(
    agent, agent_config, hub, server, bundles, reference_x
):
    dev = agent_config.device_id
    d1 = activate(hub, agent_config, serve(server, bundles, "v1", 1))
    hub.wait_for(hub.event(dev, "activated", d1.seq))
    ref = serve(server, bundles, "v2", 2)
    data = bytearray(bundles["v2"].read_bytes())
    data[len(data) // 2] ^= 0xFF
    server.add("/b/v2.efb", bytes(data))  # the server now hands out tampered bytes
    d2 = activate(hub, agent_config, ref)
    # Refused (never installed), reported with the reason; the agent tries again later
    # (the bytes may have been corrupted in transit), so it is still downloading.
    refused = hub.wait_for(
        lambda: next(
            (e for e in hub.devices[dev].events
             if e.directive_seq == d2.seq and "retrying in" in e.detail),
            None,
        ),
        what="the tampered download reported",
    )  # fmt: skip
    assert "sha" in refused.detail.lower() or "digest" in refused.detail.lower()
    assert refused.kind.value == "downloading"
    assert agent.active_version.version == 1


def test_probation_failure_rolls_back_to_previous(
    agent, agent_config, hub, server, bundles, reference_x
):
    dev = agent_config.device_id
    d1 = activate(hub, agent_config, serve(server, bundles, "v1", 1))
    hub.wait_for(hub.event(dev, "activated", d1.seq))
    gates = Probation(window_s=3600, min_predictions=5, max_error_rate=0.2)
    d3 = activate(hub, agent_config, serve(server, bundles, "v3-nan", 3), probation=gates)
    hub.wait_for(hub.event(dev, "activated", d3.seq))
    crazy = reference_x[:1].copy()
    crazy[0, 0] = 1e20
    for _ in range(5):
        with pytest.raises(PredictionError, match="NaN"):
            agent.predict(crazy)
    rolled = hub.wait_for(hub.event(dev, "rolled_back", d3.seq), what="rollback")
    assert "error rate" in rolled.detail
    assert agent.predict(reference_x[0]).model.version == 1


def test_replayed_directive_refused_over_mqtt(agent, agent_config, hub, server, bundles):
    dev = agent_config.device_id
    d1 = activate(hub, agent_config, serve(server, bundles, "v1", 1))
    hub.wait_for(hub.event(dev, "activated", d1.seq))
    old_payload = hub.signed(d1)
    d2 = activate(hub, agent_config, serve(server, bundles, "v2", 2))
    hub.wait_for(hub.event(dev, "activated", d2.seq))
    hub.publish_raw(dev, Channel.DESIRED, old_payload)  # an attacker replays the old one
    refused = hub.wait_for(hub.event(dev, "refused", d1.seq))
    assert "replay" in refused.detail
    assert agent.active_version.version == 2


def test_malformed_payloads_are_refused_and_agent_keeps_serving(
    agent, agent_config, hub, server, bundles, reference_x
):
    dev = agent_config.device_id
    d1 = activate(hub, agent_config, serve(server, bundles, "v1", 1))
    hub.wait_for(hub.event(dev, "activated", d1.seq))
    hub.publish_raw(dev, Channel.DESIRED, b"\x00garbage{")
    hub.wait_for(hub.event(dev, "refused"), what="refused event")
    hub.publish_raw(dev, Channel.DESIRED, b"x" * (300 << 10))
    hub.wait_for(lambda: len([e for e in hub.devices[dev].events if e.kind == "refused"]) >= 2)
    hub.publish_raw(dev, Channel.ACK, b"not an ack")
    assert agent.predict(reference_x[0]).model.version == 1
    # a later valid directive is still followed
    d2 = activate(hub, agent_config, serve(server, bundles, "v2", 2))
    hub.wait_for(hub.event(dev, "activated", d2.seq))


def test_windows_are_sent_acked_and_removed_from_outbox(
    agent, agent_config, hub, server, bundles, reference_x
):
    dev = agent_config.device_id
    d1 = activate(hub, agent_config, serve(server, bundles, "v1", 1))
    hub.wait_for(hub.event(dev, "activated", d1.seq))
    for row in reference_x[:50]:
        agent.predict(row)
    assert agent.close_window(60)
    stored = hub.wait_for(lambda: hub.devices[dev].windows, what="a stored window")
    (window,) = next(iter(stored.values())).windows
    assert window.n == 50
    assert agent.wait_for_drain(60), "outbox emptied by the hub's ack"


def test_shadow_challenger_sees_same_inputs_callers_get_champion(
    agent, agent_config, hub, server, bundles, reference_x
):
    dev = agent_config.device_id
    d1 = activate(hub, agent_config, serve(server, bundles, "v1", 1))
    hub.wait_for(hub.event(dev, "activated", d1.seq))
    d2 = activate(hub, agent_config, serve(server, bundles, "v2", 2), mode="shadow")
    hub.wait_for(hub.event(dev, "shadow_started", d2.seq))
    for row in reference_x[:40]:
        assert agent.predict(row).model.version == 1
    assert agent.close_window(60)
    rows = hub.wait_for(lambda: list(hub.devices[dev].windows.values()))
    assert len(rows) == 1 and len(rows[0].windows) == 2  # closed together: one row
    windows = [w for w in rows[0].windows if w.role == "shadow"]
    assert windows[0].n == 40
    assert windows[0].compared == 40
    assert windows[0].agreed >= 30  # float vs int8 of the same network mostly agree


def test_restart_resumes_active_model_without_network(
    agent_config, hub, server, bundles, reference_x
):
    dev = agent_config.device_id
    with Agent(agent_config) as first:
        d1 = activate(hub, agent_config, serve(server, bundles, "v1", 1))
        hub.wait_for(hub.event(dev, "activated", d1.seq))
        assert first.active_version.version == 1
    server.stop()  # no downloads possible any more
    second = Agent(agent_config)
    second.start()
    try:
        assert second.active_version.version == 1
        assert second.predict(reference_x[0]).model.version == 1
    finally:
        second.stop()


def test_local_http_api_serves_predictions_and_clear_errors(
    agent, agent_config, hub, server, bundles, reference_x
):
    import httpx

    dev = agent_config.device_id
    base = f"http://127.0.0.1:{agent.local_api.port}"
    assert httpx.post(f"{base}/v1/predict", json={"inputs": [1.0]}).status_code == 503
    d1 = activate(hub, agent_config, serve(server, bundles, "v1", 1))
    hub.wait_for(hub.event(dev, "activated", d1.seq))
    ok = httpx.post(f"{base}/v1/predict", json={"inputs": reference_x[:2].tolist()})
    assert ok.status_code == 200
    body = ok.json()
    assert len(body["outputs"]) == 2 and body["model"]["version"] == 1
    bad = httpx.post(f"{base}/v1/predict", json={"inputs": [1.0, 2.0]})
    assert bad.status_code == 400
    assert "expected" in bad.json()["error"]
    junk = httpx.post(f"{base}/v1/predict", content=b"{not json")
    assert junk.status_code == 400
    assert httpx.get(f"{base}/v1/health").json()["device_id"] == dev


def post_tensor(base: str, data: bytes, shape: str | None, dtype: str | None = None):
    """POST raw tensor bytes to the local API, with the shape and dtype headers given."""
    headers = {"Content-Type": "application/octet-stream"}
    if shape is not None:
        headers["X-Tensor-Shape"] = shape
    if dtype is not None:
        headers["X-Tensor-Dtype"] = dtype
    return httpx.post(f"{base}/v1/predict", content=data, headers=headers)


def test_local_api_serves_raw_little_endian_tensor_bytes_like_json(
    agent, agent_config, hub, server, bundles, reference_x
):
    """A batch sent as raw float32 / float64 bytes gets the outputs the same batch gets as
    JSON, and ``Agent.predict`` takes the same bytes with a shape."""
    dev = agent_config.device_id
    base = f"http://127.0.0.1:{agent.local_api.port}"
    d1 = activate(hub, agent_config, serve(server, bundles, "v1", 1))
    hub.wait_for(hub.event(dev, "activated", d1.seq), 60, "v1 activated")
    batch = reference_x[:3].astype("<f4")
    as_json = httpx.post(f"{base}/v1/predict", json={"inputs": batch.tolist()}).json()
    raw = post_tensor(base, batch.tobytes(), "3,10")
    assert raw.status_code == 200, raw.text
    np.testing.assert_allclose(raw.json()["outputs"], as_json["outputs"], rtol=1e-6)
    assert raw.json()["classes"] == as_json["classes"]
    wide = post_tensor(base, batch.astype("<f8").tobytes(), "[3, 10]", "float64")
    assert wide.status_code == 200, wide.text
    np.testing.assert_allclose(wide.json()["outputs"], as_json["outputs"], rtol=1e-6)
    one = post_tensor(base, batch[0].tobytes(), "10")
    assert one.status_code == 200 and len(one.json()["outputs"]) == 1
    direct = agent.predict(batch.tobytes(), shape=(3, 10))
    np.testing.assert_allclose(direct.outputs, as_json["outputs"], rtol=1e-6)
    assert agent.predict(bytearray(batch[0].tobytes()), shape="10").outputs.shape == (1, 3)


@pytest.mark.parametrize(
    ("name", "body", "shape", "dtype", "says"),
    [
        ("wrong_shape_for_the_model", 4 * 12, "12", None, "expected [10]"),
        ("byte_length_not_the_shape", 4 * 10 - 1, "10", None, "needs 40"),
        ("byte_length_of_another_dtype", 8 * 10, "10", "float32", "needs 40"),
        ("unknown_dtype", 8 * 10, "10", "complex64", "is not one of float32"),
        ("missing_shape_header", 4 * 10, None, None, "need a shape"),
        ("malformed_shape_header", 4 * 10, "ten", None, "not a list of positive"),
        ("zero_dimension", 0, "0,10", None, "none 0"),
    ],
)
def test_local_api_refuses_bad_raw_tensor_in_one_line(
    agent, agent_config, hub, server, bundles, name, body, shape, dtype, says
):
    dev = agent_config.device_id
    base = f"http://127.0.0.1:{agent.local_api.port}"
    d1 = activate(hub, agent_config, serve(server, bundles, "v1", 1))
    hub.wait_for(hub.event(dev, "activated", d1.seq), 60, "v1 activated")
    bad = post_tensor(base, b"\0" * body, shape, dtype)
    assert bad.status_code == 400, (name, bad.text)
    error = bad.json()["error"]
    assert says in error and "\n" not in error, (name, error)
    with pytest.raises(PredictionError, match="need a shape"):
        agent.predict(b"\0" * 40)
    with pytest.raises(PredictionError, match="needs 40"):
        agent.predict(b"\0" * 41, shape=(10,))


def test_latency_p95_gate_failure_rolls_back_with_the_reason(
    agent, agent_config, hub, server, bundles, reference_x
):
    """A directive whose probation allows a p95 latency no real call can meet (1 ns): once
    enough predictions are seen, the agent rolls back to the previous model and says why."""
    dev = agent_config.device_id
    d1 = activate(hub, agent_config, serve(server, bundles, "v1", 1))
    hub.wait_for(hub.event(dev, "activated", d1.seq), 60, "v1 activated")
    gates = Probation(window_s=3600, min_predictions=5, max_latency_p95_ms=1e-6)
    d2 = activate(hub, agent_config, serve(server, bundles, "v2", 2), probation=gates)
    hub.wait_for(hub.event(dev, "activated", d2.seq), 60, "v2 activated")
    for row in reference_x[:5]:
        assert agent.predict(row).model.version == 2  # valid inputs: no error counted
    rolled = hub.wait_for(hub.event(dev, "rolled_back", d2.seq), 60, "rollback")
    assert rolled.detail.startswith("latency p95 ") and "over 0.00 ms" in rolled.detail
    assert rolled.model is not None and rolled.model.version == 2
    assert agent.predict(reference_x[0]).model.version == 1
    assert not hub.event(dev, "probation_passed", d2.seq)()


def test_local_api_listens_on_loopback_only_and_serves_the_model_schema(
    agent, agent_config, hub, server, bundles, trust_2of3
):
    from edge_agent.contract.bundle import verify_bundle

    port = agent.local_api.port
    base = f"http://127.0.0.1:{port}"
    no_model = httpx.get(f"{base}/v1/model")
    assert no_model.status_code == 503 and "no model" in no_model.json()["error"]
    # 127.0.0.2 is loopback too, but a socket bound to 127.0.0.1 alone does not answer it
    # (one bound to 0.0.0.0 would): nothing but 127.0.0.1 reaches the API.
    others = ["127.0.0.2", *non_loopback_addresses()]
    for host in others:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, port), timeout=30).close()
    dev = agent_config.device_id
    d1 = activate(hub, agent_config, serve(server, bundles, "v1", 1))
    hub.wait_for(hub.event(dev, "activated", d1.seq), 60, "v1 activated")
    info = httpx.get(f"{base}/v1/model")
    assert info.status_code == 200
    bundle = verify_bundle(bundles["v1"], trust_2of3)
    body = info.json()
    assert body["schema"] == bundle.input_schema().to_json()
    assert body["model"]["version"] == 1
    assert body["model"]["sha256"] == agent.active_version.sha256
    assert httpx.get(f"{base}/v1/nothing").status_code == 404


def non_loopback_addresses() -> list[str]:
    """This machine's IPv4 addresses outside 127/8 (none in a network-less sandbox)."""
    try:
        import psutil
    except ImportError:
        return []
    return [
        a.address
        for addrs in psutil.net_if_addrs().values()
        for a in addrs
        if a.family == socket.AF_INET and not a.address.startswith("127.")
    ]


def test_shadow_challenger_promoted_to_active_clears_the_shadow(
    agent, agent_config, hub, server, bundles, reference_x, trust_2of3
):
    """v2 runs in shadow beside v1, then a directive makes v2 active: the verified shadow slot
    is reused (no second download), the shadow is cleared in memory, in the pointer and in
    the reported state, and the shadow's counts up to the switch are kept."""
    from edge_agent.daemon.slots import SlotStore

    dev = agent_config.device_id
    d1 = activate(hub, agent_config, serve(server, bundles, "v1", 1))
    hub.wait_for(hub.event(dev, "activated", d1.seq), 60, "v1 activated")
    ref2 = serve(server, bundles, "v2", 2)
    d2 = activate(hub, agent_config, ref2, mode="shadow")
    hub.wait_for(hub.event(dev, "shadow_started", d2.seq), 60, "shadow started")
    assert SlotStore(agent_config.data_dir, trust_2of3).pointer().shadow is not None
    for row in reference_x[:12]:
        assert agent.predict(row).model.version == 1
    d3 = activate(hub, agent_config, ref2)  # the same bundle, now active
    hub.wait_for(hub.event(dev, "activated", d3.seq), 60, "v2 activated")
    state = hub.wait_for(
        lambda: next(
            (s for s in hub.devices[dev].states if s.active and s.active.version == 2), None
        ),
        60,
        "a state with v2 active",
    )
    assert state.shadow is None and state.previous.version == 1
    pointer = SlotStore(agent_config.data_dir, trust_2of3).pointer()
    assert pointer.shadow is None and pointer.active.version == 2
    assert pointer.previous.version == 1
    assert agent.predictor.shadow is None
    assert server.request_count("/b/v2.efb") == 1  # the shadow slot was reused
    for row in reference_x[:5]:
        assert agent.predict(row).model.version == 2
    assert agent.close_window(60)
    rows = hub.wait_for(
        lambda: len(hub.devices[dev].windows) >= 2 and list(hub.devices[dev].windows.values()),
        60,
        "the windows before and after the switch",
    )
    by_role = {(w.role, w.model_version): w.n for m in rows for w in m.windows}
    assert by_role == {("active", 1): 12, ("shadow", 2): 12, ("active", 2): 5}
