"""A device's credentials cannot take over another client's session.

On a real Mosquitto with the deploy configuration (devices on the TLS listener, where
the broker uses the username as the client id; the hub on loopback; a hub-only TLS
listener), device A logs in with the hub ingest's client id and then with device B's:
before, Mosquitto disconnected the hub 23 times in 40 s and kicked B off (marking it
offline by its last will). Now A only ever connects as itself.
"""

from __future__ import annotations

import ssl
import threading
import uuid
from dataclasses import replace

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.daemon.agent import Agent
from edge_agent.daemon.config import BrokerConfig
from hub.ingest import DEFAULT_CLIENT_ID, Ingest
from hub.store import Store
from tests.support.mosquitto import Mosquitto
from tests.support.tls import make_tls

pytestmark = pytest.mark.timeout(180)

USERS = {"edgefleet-hub": "hub-secret", "dev-a": "a-secret", "dev-b": "b-secret"}


@pytest.fixture(scope="module")
def mosq(tmp_path_factory):
    tls = make_tls(tmp_path_factory.mktemp("tls"))
    with Mosquitto(tmp_path_factory.mktemp("mosquitto"), USERS, tls=tls) as m:
        yield m, tls


def login(m: Mosquitto, tls_ca, port: int, user: str, client_id: str) -> mqtt.Client:
    """Connect over TLS with ``user``'s credentials and ``client_id``; wait for CONNACK."""
    done = threading.Event()
    reasons: list[mqtt.ReasonCode] = []
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    c.username_pw_set(user, USERS[user])
    c.tls_set_context(ssl.create_default_context(cafile=str(tls_ca)))

    def on_connect(_c, _u, _f, reason, _p) -> None:
        reasons.append(reason)
        done.set()

    c.on_connect = on_connect
    c.connect(m.host, port)
    c.loop_start()
    assert done.wait(60), "no CONNACK"
    c.user_data_set(reasons[0])
    return c


def test_device_credentials_cannot_take_over_the_hub_or_another_device(
    mosq, tmp_path, agent_config
):
    m, tls = mosq
    with Store(tmp_path / "hub.db") as store, Ingest(
        store, m.host, m.port, "edgefleet-hub", USERS["edgefleet-hub"],
        client_id=DEFAULT_CLIENT_ID,
    ) as ingest:  # fmt: skip
        assert ingest.wait_until(lambda c: c["connects"] == 1, 60)
        config = replace(
            agent_config,
            device_id="dev-b",
            broker=BrokerConfig(
                host=m.host, port=m.tls_port, tls=True, ca_file=tls.ca,
                username="dev-b", password=USERS["dev-b"],
            ),
        )  # fmt: skip
        with Agent(config) as agent:
            assert ingest.wait_until(
                lambda _: (d := store.device("dev-b")) is not None and d.online, 60
            ), "dev-b never came online"
            attackers = [
                login(m, tls.ca, m.tls_port, "dev-a", client_id)
                for client_id in (DEFAULT_CLIENT_ID, "edgefleet-dev-b", "dev-b")
            ]
            # Mosquitto logs a takeover before the new connection's line, and every
            # attacker got its CONNACK: once three dev-a lines are in, all is logged.
            m.wait_for_log(lambda lines: sum(" as dev-a " in line for line in lines) >= 3)
            for c in attackers:
                assert not c.user_data_get().is_failure  # accepted, but only as dev-a
                c.loop_stop()
                c.disconnect()
            taken = [
                line for line in m.log if "already connected" in line
                and (DEFAULT_CLIENT_ID in line or "dev-b" in line)
            ]  # fmt: skip
            assert not taken, taken
            assert ingest.counters()["connects"] == 1, "the hub's ingest was kicked off"
            assert agent.link.connected.is_set()
            device = store.device("dev-b")
            assert device is not None and device.online, "dev-b was marked offline"


def test_device_credentials_cannot_log_in_where_only_the_hub_may(mosq):
    m, tls = mosq
    device = login(m, tls.ca, m.hub_tls_port, "dev-a", "dev-a")
    hub = login(m, tls.ca, m.hub_tls_port, "edgefleet-hub", f"hub-{uuid.uuid4().hex[:6]}")
    try:
        assert device.user_data_get().is_failure  # not authorised on the hub's listener
        assert not hub.user_data_get().is_failure
    finally:
        for c in (device, hub):
            c.loop_stop()
            c.disconnect()
