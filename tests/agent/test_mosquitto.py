"""The agent against Mosquitto started from deploy/mosquitto: credentials and per-device ACLs."""

from __future__ import annotations

import logging
import threading
from dataclasses import replace

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.contract.topics import Channel, topic
from edge_agent.daemon.agent import Agent
from edge_agent.daemon.config import BrokerConfig
from tests.support.bundles import model_ref
from tests.support.hub_double import HubDouble
from tests.support.mosquitto import Mosquitto
from tests.support.tls import make_tls

pytestmark = pytest.mark.timeout(180)

USERS = {"edgefleet-hub": "hub-secret", "dev-a": "a-secret", "dev-b": "b-secret"}


@pytest.fixture(scope="module")
def mosquitto(tmp_path_factory):
    with Mosquitto(tmp_path_factory.mktemp("mosquitto"), USERS) as m:
        yield m


@pytest.fixture
def mhub(mosquitto, signing_keys):
    h = HubDouble(
        mosquitto.host,
        mosquitto.port,
        signing_keys[:2],
        username="edgefleet-hub",
        password=USERS["edgefleet-hub"],
    )
    yield h
    h.close()


def client(mosquitto, user: str, password: str):
    connected = threading.Event()
    result = {}
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"probe-{user}-{password[:3]}",
        protocol=mqtt.MQTTv311,
    )
    c.username_pw_set(user, password)

    def on_connect(cl, ud, flags, reason, props):
        result["reason"] = reason
        connected.set()

    c.on_connect = on_connect
    c.connect(mosquitto.host, mosquitto.port)
    c.loop_start()
    assert connected.wait(60)
    return c, result["reason"]


def test_agent_deploys_and_reports_through_mosquitto(
    mosquitto, mhub, agent_config, server, bundles, reference_x
):
    config = replace(
        agent_config,
        device_id="dev-a",
        broker=BrokerConfig(
            host=mosquitto.host, port=mosquitto.port, username="dev-a", password=USERS["dev-a"]
        ),
    )
    url = server.add("/b/v1.efb", bundles["v1"].read_bytes())
    with Agent(config) as agent:
        d = mhub.publish_directive(mhub.directive("dev-a", model_ref(bundles["v1"], url)))
        mhub.wait_for(mhub.event("dev-a", "activated", d.seq), 60, "activated")
        for row in reference_x[:20]:
            agent.predict(row)
        assert agent.close_window(60)
        assert agent.wait_for_drain(60)
        assert mhub.seqs_stored("dev-a")
    assert "password" not in repr(config.broker) and USERS["dev-a"] not in repr(config)


def test_wrong_password_is_refused(mosquitto):
    c, reason = client(mosquitto, "dev-a", "wrong")
    c.loop_stop()
    assert reason.is_failure


def test_device_cannot_read_or_write_another_devices_topics(mosquitto, mhub):
    got: list[str] = []
    marker = threading.Event()
    a, reason = client(mosquitto, "dev-a", USERS["dev-a"])
    assert not reason.is_failure

    def on_message(cl, ud, msg):
        got.append(msg.topic)
        if msg.topic == topic("dev-a", Channel.ACK):
            marker.set()

    a.on_message = on_message
    a.subscribe([(topic("dev-b", Channel.DESIRED), 1), (topic("dev-a", Channel.ACK), 1)])
    # dev-a tries to write dev-b's state: Mosquitto drops it silently
    a.publish(topic("dev-b", Channel.STATE), b'{"forged": true}', qos=1).wait_for_publish(60)
    # the hub writes dev-b's desired, then dev-a's ack; ordering makes the ack a marker
    mhub.publish_raw("dev-b", Channel.DESIRED, b"for dev-b only")
    mhub.publish_raw("dev-a", Channel.ACK, b"marker", retain=False)
    assert marker.wait(60)
    assert topic("dev-b", Channel.DESIRED) not in got
    assert mhub.malformed == 0  # the forged state never reached the hub
    a.loop_stop()
    a.disconnect()


# --- TLS: the deploy config's TLS listener, enabled with a throw-away CA ---------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_mosquitto(tmp_path_factory, tls_files):
    with Mosquitto(tmp_path_factory.mktemp("mosquitto-tls"), USERS, tls=tls_files) as m:
        yield m


def test_agent_reports_over_tls_to_a_broker_its_pinned_ca_signed(
    tls_mosquitto, tls_files, signing_keys, agent_config
):
    hub = HubDouble(
        tls_mosquitto.host,
        tls_mosquitto.port,
        signing_keys[:2],
        username="edgefleet-hub",
        password=USERS["edgefleet-hub"],
    )
    config = replace(
        agent_config,
        device_id="dev-a",
        broker=BrokerConfig(
            host=tls_mosquitto.host,
            port=tls_mosquitto.tls_port,
            tls=True,
            ca_file=tls_files.ca,
            username="dev-a",
            password=USERS["dev-a"],
        ),
    )
    try:
        with Agent(config):
            hub.wait_for(
                lambda: any(s.online for s in hub.devices["dev-a"].states),
                60,
                "dev-a online over TLS",
            )
    finally:
        hub.close()


def test_agent_refuses_a_broker_certificate_its_ca_did_not_sign(
    tls_mosquitto, tmp_path, agent_config
):
    other_ca = make_tls(tmp_path / "other").ca  # a CA that did not sign the broker's cert
    config = replace(
        agent_config,
        device_id="dev-a",
        broker=BrokerConfig(
            host=tls_mosquitto.host,
            port=tls_mosquitto.tls_port,
            tls=True,
            ca_file=other_ca,
            username="dev-a",
            password=USERS["dev-a"],
        ),
    )
    said: list[str] = []
    failed = threading.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "cannot connect" in record.getMessage():
                said.append(record.getMessage())
                failed.set()

    watch = Watch()
    logging.getLogger("edgefleet.agent").addHandler(watch)
    try:
        with Agent(config) as agent:
            assert failed.wait(60), "no line said why the agent cannot connect"
            assert not agent.link.connected.is_set()
    finally:
        logging.getLogger("edgefleet.agent").removeHandler(watch)
    assert "over TLS" in said[0] and "CERTIFICATE_VERIFY_FAILED" in said[0]
    assert USERS["dev-a"] not in said[0]
