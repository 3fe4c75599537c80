"""Revocation that means it: a revoked device is hidden from listings, never selected by a
rollout, refused a deploy, and its retained directive is removed from the broker.

Real hub (embedded broker, API over loopback), real enrolment records in its store, a
bare MQTT client reading the broker's retained messages.
"""

from __future__ import annotations

import threading
import time
import uuid

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.contract.messages import State
from edge_agent.contract.topics import Channel, topic
from hub.broker import free_port
from hub.bundler import ReferenceData
from hub.enroll import enroll_device, revoke_device
from hub.rollouts import RolloutSpec, Stage
from hub.service import HubService, HubSettings
from tests.hub.test_rollouts_on_a_fleet import OPEN_GATES

pytestmark = pytest.mark.timeout(90)


def retained(host: str, port: int, device: str, timeout: float = 5.0) -> bytes | None:
    """The retained directive of ``device`` (None when the broker holds none).

    The broker sends a retained message right after the SUBACK; a QoS 1 probe published
    after the SUBACK is acknowledged after it on the same connection, so once the probe's
    PUBACK is in, whatever was retained has been handed to ``on_message``.
    """
    got: list[bytes] = []
    granted = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"reader-{uuid.uuid4().hex[:6]}")
    client.on_message = lambda _c, _u, msg: got.append(msg.payload)
    client.on_subscribe = lambda *_: granted.set()
    client.on_connect = lambda c, *_: c.subscribe(topic(device, Channel.DESIRED), qos=1)
    client.connect(host, port)
    client.loop_start()
    try:
        assert granted.wait(timeout), "no SUBACK"
        client.publish(f"edgefleet/v1/probe/{uuid.uuid4().hex}", b"", qos=1).wait_for_publish(5)
    finally:
        client.loop_stop()
        client.disconnect()
    return got[-1] if got and got[-1] else None


@pytest.fixture
def hub(tmp_path, demo_dir, reference_x, trust_file):
    settings = HubSettings(
        data_dir=tmp_path / "hub",
        api_port=0,
        embedded_broker_port=free_port(),
        rollout_interval_s=0.2,
        revocation_interval_s=0.2,
    )
    with HubService(settings) as service:
        ref = ReferenceData(reference_x, tuple(f"f{i}" for i in range(10)))
        service.registry.push_model(
            (demo_dir / "model-int8.tflite").read_bytes(), name="pump", reference=ref
        )
        token, _ = service.tokens.create("ops", ["deploy", "read"])
        for dev in ("dev-a", "dev-b", "dev-c"):
            enroll_device(
                dev,
                tags=["site-a"],
                store=service.store,
                broker_dir=tmp_path / "broker",
                hub_url=service.api.url,
                broker_url=service.broker_url,
                trust_file=trust_file,
                out_dir=tmp_path / "out",
            )
            service.store.record_state(State(dev, True, time.time()))
        yield (
            service,
            httpx.Client(
                base_url=service.api.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
            ),
            tmp_path / "broker",
        )


def wait_for(condition, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return result


def test_revoked_device_is_hidden_refused_and_its_directive_cleared(hub):
    service, api, broker_dir = hub
    host, port = service.broker.host, service.broker.port
    assert (
        api.post("/v1/devices/dev-b/deploy", json={"name": "pump", "version": 1}).status_code == 201
    )
    assert retained(host, port, "dev-b") is not None

    revoke_device("dev-b", store=service.store, broker_dir=broker_dir)

    listed = [d["id"] for d in api.get("/v1/devices").json()["devices"]]
    assert listed == ["dev-a", "dev-c"]
    only = api.get("/v1/devices", params={"revoked": "true"}).json()["devices"]
    assert [d["id"] for d in only] == ["dev-b"] and only[0]["revoked_at"] is not None
    everyone = api.get("/v1/devices", params={"include_revoked": "true"}).json()["devices"]
    assert [d["id"] for d in everyone] == ["dev-a", "dev-b", "dev-c"]

    r = api.post("/v1/devices/dev-b/deploy", json={"name": "pump", "version": 1})
    assert r.status_code == 409 and r.json() == {"error": "device 'dev-b' is revoked"}

    wait_for(lambda: retained(host, port, "dev-b") is None, "the retained directive to be cleared")
    assert retained(host, port, "dev-a") is None  # never deployed: nothing to see
    assert service.store.revoked_with_directive() == []


def test_rollout_never_selects_a_revoked_device(hub):
    service, api, broker_dir = hub
    revoke_device("dev-c", store=service.store, broker_dir=broker_dir)
    spec = RolloutSpec(
        id="r-revoked",
        model="pump",
        target_version=1,
        previous_version=None,
        stages=(Stage(share=1.0, bake_s=3600, gates=OPEN_GATES),),
    )
    r = api.post("/v1/rollouts", json=spec.to_json())
    assert r.status_code == 201, r.text
    touched = wait_for(
        lambda: api.get("/v1/rollouts/r-revoked").json().get("touched"), "the first stage"
    )
    assert sorted(touched) == ["dev-a", "dev-b"]
    assert retained(service.broker.host, service.broker.port, "dev-c") is None
