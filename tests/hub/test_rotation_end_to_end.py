"""Key rotation end to end: the operator's commands, the real hub, Mosquitto with the deploy
ACL, and a real agent that switches to the new keys while it runs.

rotate (``edgefleet keys rotate``) -> adopt (``edgefleet hub keys adopt-rotation``) ->
the restarted hub publishes the chain retained -> the device adopts it -> the hub signs
with the new keys, and what only the retired keys signed is refused.
"""

from __future__ import annotations

import threading
from dataclasses import replace

import httpx
import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.cli import _load_plugins, cli
from edge_agent.contract.directive import ModelRef
from edge_agent.contract.topics import TRUST_TOPIC
from edge_agent.contract.trust import RotationChain
from edge_agent.daemon.agent import Agent
from edge_agent.daemon.config import BrokerConfig
from hub.bundler import ReferenceData
from hub.keys import ROTATIONS_FILE, load_private_key
from hub.service import HubService, HubSettings
from tests.support.hub_double import HubDouble
from tests.support.mosquitto import Mosquitto

pytestmark = pytest.mark.timeout(120)

_load_plugins(cli)
USERS = {"edgefleet-hub": "hub-secret", "dev-a": "a-secret"}


@pytest.fixture(scope="module")
def mosquitto(tmp_path_factory):
    with Mosquitto(tmp_path_factory.mktemp("mosquitto"), USERS) as m:
        yield m


def run(*args: object):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def events(service: HubService, device: str) -> list[tuple[str, int | None, str]]:
    return [
        (r.event.kind.value, r.event.model.version if r.event.model else None, r.event.detail)
        for r in service.store.events(device=device, limit=1000)
    ]


def wait_event(service: HubService, device: str, kind: str, version: int | None) -> str:
    """The detail of the device's first ``kind`` event about ``version``, once stored."""

    def found() -> str | None:
        return next((d for k, v, d in events(service, device) if (k, v) == (kind, version)), None)

    ok = service.ingest.wait_until(lambda _: found() is not None, 30)
    assert ok, f"no {kind} v{version} from {device}: {events(service, device)}"
    return found() or ""


def deploy(service: HubService, token: str, device: str, version: int) -> None:
    r = httpx.post(
        f"{service.api.url}/v1/devices/{device}/deploy",
        headers={"Authorization": f"Bearer {token}"},
        json={"name": "pump", "version": version},
    )
    assert r.status_code == 201, r.text


def retained(m: Mosquitto, topic: str) -> bytes:
    """The retained message on ``topic``, read as the hub's account."""
    got: list[bytes] = []
    arrived = threading.Event()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="probe-retained")
    c.username_pw_set("edgefleet-hub", USERS["edgefleet-hub"])
    c.on_connect = lambda cl, *a: cl.subscribe(topic, 1)
    c.on_message = lambda cl, ud, msg: (got.append(bytes(msg.payload)), arrived.set())
    c.connect(m.host, m.port)
    c.loop_start()
    try:
        assert arrived.wait(15), f"no retained message on {topic}"
    finally:
        c.loop_stop()
        c.disconnect()
    return got[0]


def test_rotated_keys_reach_a_running_device_and_retired_keys_are_refused_after(
    tmp_path, mosquitto, demo_dir, reference_x, agent_config
):
    data = tmp_path / "hub"
    settings = HubSettings(
        data_dir=data,
        api_port=0,
        broker_url=f"mqtt://{mosquitto.host}:{mosquitto.port}",
        broker_username="edgefleet-hub",
        broker_password=USERS["edgefleet-hub"],
    )
    model = (demo_dir / "model-int8.tflite").read_bytes()
    ref = ReferenceData(reference_x, tuple(f"f{i}" for i in range(reference_x.shape[1])))
    config = replace(
        agent_config,
        device_id="dev-a",
        trust_file=data / "keys" / "trust.json",
        broker=BrokerConfig(mosquitto.host, mosquitto.port, username="dev-a",
                            password=USERS["dev-a"]),
    )  # fmt: skip
    agent: Agent | None = None
    try:
        with HubService(settings) as service:
            token, _ = service.tokens.create("ci", ["deploy"])
            for _ in (1, 2):  # v1 and v2, signed by the hub's first keys
                service.registry.push_model(model, name="pump", reference=ref)
            agent = Agent(config).start()
            deploy(service, token, "dev-a", 1)
            wait_event(service, "dev-a", "activated", 1)
        # the operator rotates and adopts while the hub is stopped; the device runs on
        old_keys = sorted((data / "keys").glob("key-*.pem"))
        run("keys", "rotate", "--trust", data / "keys" / "trust.json",
            *(a for k in old_keys for a in ("--key", k)),
            "--dir", tmp_path / "new-keys", "--count", 2, "--threshold", 2,
            "--out", tmp_path / "rotation.json")  # fmt: skip
        out = run("hub", "keys", "adopt-rotation", tmp_path / "rotation.json",
                  "--keys", tmp_path / "new-keys", "--data", data).output  # fmt: skip
        assert "trust version 1 -> 2 adopted" in out
        assert agent.trust.version == 1  # nothing reaches devices before the hub restarts
        with HubService(settings) as service:
            detail = wait_event(service, "dev-a", "trust_rotated", None)
            assert detail == "trust version 1 -> 2 (2 of 2)"
            assert agent.trust.version == 2
            assert (
                retained(mosquitto, TRUST_TOPIC)
                == RotationChain.load(data / ROTATIONS_FILE).to_bytes()
            )
            # v2 was signed by the keys now retired: the device refuses the bundle
            deploy(service, token, "dev-a", 2)
            assert "not trusted" in wait_event(service, "dev-a", "failed", 2)
            # pushed after the rotation, so signed by the new keys: followed
            service.registry.push_model(model, name="pump", reference=ref)
            deploy(service, token, "dev-a", 3)
            wait_event(service, "dev-a", "activated", 3)
            # a directive signed only by the retired keys (someone kept a copy)
            retired = [load_private_key(p).key for p in (data / "keys-retired" / "v1").iterdir()
                       if p.suffix == ".pem"]  # fmt: skip
            assert len(retired) == len(old_keys)
            forger = HubDouble(mosquitto.host, mosquitto.port, retired, username="edgefleet-hub",
                               password=USERS["edgefleet-hub"])  # fmt: skip
            try:
                v3 = service.registry.get("pump", 3)
                assert v3 is not None
                bundle = ModelRef("pump", 3, v3.sha256, v3.size, ("http://127.0.0.1:1/x",))
                forger.publish_directive(forger.directive("dev-a", bundle, seq=10**6))
            finally:
                forger.close()
            refused = wait_event(service, "dev-a", "refused", None)
            assert refused.startswith("directive refused (untrusted)")
            assert agent.active_version.version == 3
    finally:
        if agent is not None:
            agent.stop()


def test_devices_read_the_trust_topic_but_cannot_write_it(mosquitto):
    chain = b'{"format":"edgefleet-rotations/1","records":[]}'
    hub = HubDouble(mosquitto.host, mosquitto.port, [], username="edgefleet-hub",
                    password=USERS["edgefleet-hub"])  # fmt: skip
    try:
        info = hub.client.publish(TRUST_TOPIC, chain, qos=1, retain=True)
        info.wait_for_publish(10)
    finally:
        hub.close()
    device = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="probe-dev-a")
    device.username_pw_set("dev-a", USERS["dev-a"])
    got: list[bytes] = []
    arrived = threading.Event()
    device.on_connect = lambda cl, *a: cl.subscribe(TRUST_TOPIC, 1)
    device.on_message = lambda cl, ud, msg: (got.append(bytes(msg.payload)), arrived.set())
    device.connect(mosquitto.host, mosquitto.port)
    device.loop_start()
    try:
        assert arrived.wait(15), "the device could not read the trust topic"
        assert got == [chain]
        # a device's forged chain: Mosquitto acknowledges it and drops it (the ACL)
        device.publish(TRUST_TOPIC, b"forged", qos=1, retain=True).wait_for_publish(10)
    finally:
        device.loop_stop()
        device.disconnect()
    assert retained(mosquitto, TRUST_TOPIC) == chain
