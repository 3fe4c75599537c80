"""The hub's MQTT ingest against the real embedded broker and a real agent.

Tests wait on the ingest's condition (woken after every batch), never on sleeps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from dataclasses import replace
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.contract.messages import Ack, Event, EventKind, MetricsMessage, State, offline_state
from edge_agent.contract.topics import Channel, topic
from edge_agent.contract.window import MetricsWindow
from edge_agent.daemon.agent import Agent
from edge_agent.errors import ValidationError
from hub.ingest import Ingest, parse_message
from hub.store import Store
from tests.hub.test_store import row
from tests.support.bundles import model_ref
from tests.support.hub_double import HubDouble

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "hub.db") as s:
        yield s


@pytest.fixture
def ingest(store, broker):
    with Ingest(store, broker.host, broker.port, client_id=f"ingest-{uuid.uuid4().hex[:8]}") as i:
        yield i


class Publisher:
    """A bare MQTT client that publishes whatever a test needs, as any device could."""

    def __init__(self, host: str, port: int) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"dev-pub-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv311,
        )
        self.client.connect(host, port)
        self.client.loop_start()

    def publish(self, device_id: str, channel: Channel, payload: bytes) -> None:
        info = self.client.publish(topic(device_id, channel), payload, qos=1)
        info.wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def device(broker):
    p = Publisher(broker.host, broker.port)
    yield p
    p.close()


def wait(ingest: Ingest, predicate, what: str, timeout: float = 60.0) -> None:
    assert ingest.wait_until(lambda _: predicate(), timeout), f"timed out waiting for {what}"


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_real_agent_windows_stored_and_acked_end_to_end(
    ingest, store, broker, signing_keys, agent_config, server, bundles, reference_x
):
    dev = agent_config.device_id
    directives = HubDouble(broker.host, broker.port, signing_keys[:2], ack=False)
    agent = Agent(agent_config).start()
    try:
        path = bundles["v1"]
        ref = model_ref(path, server.add("/b/v1.efb", path.read_bytes()), version=1)
        d = directives.publish_directive(directives.directive(dev, ref))
        wait(
            ingest,
            lambda: any(
                r.event.kind is EventKind.ACTIVATED and r.event.directive_seq == d.seq
                for r in store.events(device=dev)
            ),
            "activated event",
        )
        for x in reference_x[:50]:
            agent.predict(x)
        assert agent.close_window()
        assert agent.wait_for_drain(60), "outbox emptied by the ingest's ack"
        (window,) = store.windows_for(device=dev)
        assert window.n == 50 and window.model_version == 1
        assert store.contiguous(dev) == 1 and ingest.acked(dev) == 1
        wait(
            ingest,
            lambda: (s := store.device(dev)) is not None and s.active is not None,
            "state with the active model",
        )
    finally:
        agent.stop()
        directives.close()
    counts = ingest.counters()
    assert counts["stored"] == 1 and counts["acks_published"] == 1
    assert counts["malformed"] == counts["refused_device_mismatch"] == 0


def test_garbage_and_oversized_payloads_counted_as_malformed_and_ingest_keeps_working(
    ingest, store, device
):
    dev = uid("junk")
    huge = b'{"format": "' + b"x" * (300 << 10) + b'"}'
    for channel in (Channel.METRICS, Channel.STATE, Channel.EVENTS):
        device.publish(dev, channel, b"\x00garbage{")
        device.publish(dev, channel, huge)
    device.publish(dev, Channel.METRICS, b"")
    wait(ingest, lambda: ingest.counters()["malformed"] >= 7, "7 malformed")
    device.publish(dev, Channel.METRICS, row(dev, 1).to_bytes())
    assert ingest.wait_until_acked(dev, 1, 60)
    assert ingest.counters()["malformed"] == 7
    assert store.contiguous(dev) == 1


def test_message_claiming_another_devices_id_refused(ingest, store, device):
    attacker, victim = uid("attacker"), uid("victim")
    device.publish(attacker, Channel.METRICS, row(victim, 1).to_bytes())
    device.publish(attacker, Channel.STATE, State(victim, online=True).to_bytes())
    device.publish(attacker, Channel.EVENTS, Event(victim, 1.0, EventKind.FAILED).to_bytes())
    wait(ingest, lambda: ingest.counters()["refused_device_mismatch"] == 3, "3 refusals")
    assert store.contiguous(victim) == 0 and store.windows_for(device=victim) == []
    assert store.device(victim) is None and store.events(device=victim) == []
    assert ingest.acked(victim) == 0


def test_replayed_metrics_stored_once(ingest, store, device):
    dev = uid("replay")
    messages = [row(dev, s) for s in (1, 2, 3)]
    for m in messages + messages:  # the device resends everything (lost ack, reboot...)
        device.publish(dev, Channel.METRICS, m.to_bytes())
    # The counters are the ingest's, and the shared broker also hands it the retained
    # states earlier tests left: wait on the duplicates only this test's replays make.
    wait(ingest, lambda: ingest.counters()["duplicates"] >= 3, "3 duplicates")
    assert ingest.wait_until_acked(dev, 3, 30)
    assert ingest.counters()["duplicates"] == 3
    assert store.stored_ranges(dev) == [(1, 1), (2, 2), (3, 3)]
    assert len(store.windows_for(device=dev)) == 3
    assert sum(w.n for w in store.windows_for(device=dev)) == sum(m.windows[0].n for m in messages)


def test_gap_holds_the_ack_until_filled(ingest, store, device):
    dev = uid("gap")
    device.publish(dev, Channel.METRICS, row(dev, 1).to_bytes())
    device.publish(dev, Channel.METRICS, row(dev, 3).to_bytes())
    assert ingest.wait_until_acked(dev, 1, 60)
    wait(ingest, lambda: store.stored_ranges(dev) == [(1, 1), (3, 3)], "seq 3 stored")
    assert ingest.acked(dev) == 1
    device.publish(dev, Channel.METRICS, row(dev, 2).to_bytes())
    assert ingest.wait_until_acked(dev, 3, 60)


def test_offline_state_marks_device_offline(ingest, store, device):
    dev = uid("lwt")
    device.publish(dev, Channel.STATE, State(dev, online=True, ts=1.0).to_bytes())
    wait(ingest, lambda: (d := store.device(dev)) is not None and d.online, "online")
    device.publish(dev, Channel.STATE, offline_state(dev).to_bytes())
    wait(ingest, lambda: (d := store.device(dev)) is not None and not d.online, "offline")


def test_agent_killed_with_sigkill_is_marked_offline_by_its_last_will(
    ingest, store, agent_config, tmp_path
):
    """No goodbye from a process killed with SIGKILL: only the broker's last will (the
    offline state the agent registered when it connected) tells the hub."""
    dev = agent_config.device_id
    toml = tmp_path / "agent.toml"
    toml.write_text(
        f'device_id = "{dev}"\ndata_dir = "{agent_config.data_dir}"\n'
        f'trust_file = "{agent_config.trust_file}"\n'
        f'[broker]\nurl = "mqtt://{agent_config.broker.host}:{agent_config.broker.port}"\n'
        "[monitoring]\nwindow_s = 3600\nstate_interval_s = 3600\n[local_api]\nport = 0\n"
    )
    log = tmp_path / "agent.log"
    with log.open("wb") as out:
        agent = subprocess.Popen(
            [sys.executable, "-m", "edge_agent.cli", "agent", "run", "--config", str(toml)],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait(
            ingest,
            lambda: (d := store.device(dev)) is not None and d.online,
            f"the agent's online state (agent log: {log})",
            60,
        )
        agent.kill()  # SIGKILL: the process cannot say goodbye
        agent.wait(30)
        wait(
            ingest,
            lambda: (d := store.device(dev)) is not None and not d.online,
            "the last will marking the device offline",
            60,
        )
        record = store.device(dev)
        assert record is not None and record.offline_since is not None
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(30)


def test_parse_message_is_pure_and_strict():
    dev = "d1"
    m = row(dev, 1)
    parsed = parse_message(topic(dev, Channel.METRICS), m.to_bytes())
    assert parsed.device_id == dev and isinstance(parsed.message, MetricsMessage)
    from hub.ingest import DeviceMismatchError

    with pytest.raises(DeviceMismatchError, match="'d2''s topic claims device 'd1'"):
        parse_message(topic("d2", Channel.METRICS), m.to_bytes())
    with pytest.raises(ValidationError, match="devices do not publish on ack"):
        parse_message(topic(dev, Channel.ACK), m.to_bytes())
    with pytest.raises(ValidationError, match="is not under edgefleet/v1/devices/"):
        parse_message("other/tree/d1/metrics", m.to_bytes())


def test_ingest_resubscribes_after_the_broker_restarts(tmp_path):
    from hub.broker import EmbeddedBroker

    first = EmbeddedBroker().start()
    port = first.port
    second = None
    with Store(tmp_path / "hub.db") as store, Ingest(store, first.host, port) as ingest:
        try:
            # amqtt waits ~10 s for connected clients at shutdown; its listener closes first
            first.stop(timeout=1)
            second = EmbeddedBroker(port=port).start()  # knows no session: we must resubscribe
            dev = uid("restart")
            publisher = Publisher(second.host, port)
            try:
                assert ingest.wait_until(lambda c: c["connects"] >= 2, 60), "no reconnect"
                publisher.publish(dev, Channel.METRICS, row(dev, 1).to_bytes())
                assert ingest.wait_until_acked(dev, 1, 60)
            finally:
                publisher.close()
        finally:
            first.stop()
            if second is not None:
                second.stop()


def test_killed_relay_process_is_restarted_and_nothing_acked_is_lost(ingest, store, device):
    dev = uid("relay")
    device.publish(dev, Channel.METRICS, row(dev, 1).to_bytes())
    assert ingest.wait_until_acked(dev, 1, 60)
    connects = ingest.counters()["connects"]
    relay = ingest._relay
    assert relay is not None
    relay.kill()  # kill -9 of the process holding the MQTT connection
    wait(ingest, lambda: ingest.counters()["connects"] > connects, "the relay reconnecting")
    assert ingest._relay is not None and ingest._relay.pid != relay.pid
    device.publish(dev, Channel.METRICS, row(dev, 2).to_bytes())
    assert ingest.wait_until_acked(dev, 2, 60)
    assert store.stored_ranges(dev) == [(1, 2)] or store.stored_ranges(dev) == [(1, 1), (2, 2)]


def test_number_beyond_any_float_is_malformed_not_a_crash(ingest, store, device):
    dev = uid("bigint")
    payload = row(dev, 1).to_bytes()
    doc = json.loads(payload)
    doc["windows"][0]["features"]["mean"][0] = 10**400  # valid JSON, no float holds it
    device.publish(dev, Channel.METRICS, json.dumps(doc).encode())
    wait(ingest, lambda: ingest.counters()["malformed"] >= 1, "the malformed count")
    device.publish(dev, Channel.METRICS, payload)
    assert ingest.wait_until_acked(dev, 1, 60)
    assert ingest.counters()["malformed"] == 1 and store.contiguous(dev) == 1


def _with(doc: dict, path: tuple, value) -> bytes:
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    "path",
    [
        ("seq_lo",),
        ("seq_hi",),
        ("windows", 0, "version"),
        ("windows", 0, "n"),
        ("windows", 0, "compared"),
        ("windows", 0, "errors"),
    ],
)
def test_integers_beyond_the_wire_contract_are_refused_by_the_parser(path):
    """2**63 fits no SQLite integer: a message carrying it must be malformed, not a
    store failure that rolls back the batch it came in."""
    doc = json.loads(row("d1", 1).to_bytes())
    value = {"invoke_error": 2**63} if path[-1] == "errors" else 2**63
    if path == ("seq_lo",):
        doc["seq_hi"] = 2**63
    with pytest.raises(ValidationError, match=r"2\*\*53|seq_lo|seq_hi|not n ="):
        parse_message(topic("d1", Channel.METRICS), _with(doc, path, value))


def test_a_huge_model_version_is_malformed_and_other_devices_are_stored(ingest, store, device):
    evil, good = uid("huge"), uid("good")
    doc = json.loads(row(evil, 1).to_bytes())
    device.publish(evil, Channel.METRICS, _with(doc, ("windows", 0, "version"), 2**63))
    device.publish(good, Channel.METRICS, row(good, 1).to_bytes())
    wait(ingest, lambda: ingest.counters()["malformed"] >= 1, "the malformed count")
    assert ingest.wait_until_acked(good, 1, 60)
    assert store.contiguous(good) == 1 and store.windows_for(device=evil) == []


@pytest.mark.parametrize("column", ["mean", "m2", "min", "max"])
def test_window_with_a_number_beyond_any_float_is_refused_by_the_parser(column):
    doc = row("d1", 1).windows[0].to_json()
    doc["features"][column][0] = 10**400
    with pytest.raises(ValidationError, match=rf"\[0\]\.{column}: expected a finite number"):
        MetricsWindow.from_json(doc)


def test_wiped_device_gets_acks_in_its_new_epoch(ingest, store, device, broker):
    dev = uid("wiped")
    e1, e2 = "1" * 16, "2" * 16
    for q in (1, 2, 3):
        device.publish(dev, Channel.METRICS, replace(row(dev, q), epoch=e1).to_bytes())
    assert ingest.wait_until_acked(dev, 3, 60)
    # the device (wiped) subscribes to its acks: first the retained one of its old life
    got: list[Ack] = []
    new_ack = threading.Event()
    reader = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=uid("reader"))
    subscribed = threading.Event()

    def on_message(client, userdata, message):
        if message.topic != topic(dev, Channel.ACK):
            return  # amqtt 0.12 sometimes delivers another client's message
        got.append(Ack.from_bytes(message.payload))
        if got[-1].epoch == e2:
            new_ack.set()

    reader.on_message = on_message
    reader.on_subscribe = lambda *a: subscribed.set()
    reader.on_connect = lambda c, *a: c.subscribe(topic(dev, Channel.ACK), 1)
    reader.connect(broker.host, broker.port)
    reader.loop_start()
    try:
        assert subscribed.wait(60)
        device.publish(dev, Channel.METRICS, replace(row(dev, 1), epoch=e2).to_bytes())
        assert ingest.wait_until_acked(dev, 1, 60, epoch=e2)
        assert new_ack.wait(60), got
    finally:
        reader.disconnect()
        reader.loop_stop()
    assert got[-1] == Ack(dev, 1, e2)
    assert len(store.windows_for(device=dev)) == 4 and ingest.counters()["duplicates"] == 0


def test_windows_of_an_unknown_model_version_are_counted_stored_and_acked(
    store, broker, device, caplog
):
    """Nothing can score them (no reference), but the device's data is kept and acked."""
    dev = uid("unknown")
    with Ingest(
        store, broker.host, broker.port, client_id=uid("ingest"),
        known_version=lambda name, version: (name, version) == ("demo", 1),
    ) as ingest:  # fmt: skip
        known = row(dev, 1)
        unknown = MetricsMessage(dev, 2, 2, (replace(row(dev, 2).windows[0], model_version=7),))
        for m in (known, unknown, MetricsMessage(dev, 3, 3, unknown.windows)):
            device.publish(dev, Channel.METRICS, m.to_bytes())
        assert ingest.wait_until_acked(dev, 3, 60)
        assert ingest.counters()["unknown_model"] == 2
    assert [w.model_version for w in store.windows_for(device=dev)] == [1, 7, 7]
    assert caplog.text.count("which the registry does not know") == 1  # once per version


def test_rogue_garbage_and_another_devices_metrics_are_audited_with_their_reason(
    store, broker, device, tmp_path
):
    """The soak's rogue client (embedded broker): garbage and another device's metrics
    on a device's topic were refused but visible only as counters. Now each kind is an
    ``ingest.refused`` audit entry naming the device the topic names and the reason;
    a flood of the same stays one entry (counted)."""
    from hub.audit import AuditLog
    from hub.refusals import ACTION, RefusalLog

    audit = AuditLog(tmp_path / "audit.db")
    victim, other = uid("victim"), uid("other")
    try:
        with Ingest(
            store, broker.host, broker.port, client_id=f"ingest-{uuid.uuid4().hex[:8]}",
            on_refused=RefusalLog(audit).record,
        ) as ingest:  # fmt: skip
            for _ in range(5):
                device.publish(victim, Channel.METRICS, b"{not json")
            device.publish(victim, Channel.METRICS, row(other, 1).to_bytes())
            wait(
                ingest,
                lambda: (
                    ingest.counters()["malformed"] >= 5
                    and ingest.counters()["refused_device_mismatch"] >= 1
                ),
                "the refusals",
            )
        entries = [e for e in audit.entries(limit=100) if e.action == ACTION]
        assert {(e.target, e.details["kind"]) for e in entries} == {
            (victim, "malformed"), (victim, "device_mismatch"),
        }  # fmt: skip
        assert all(e.actor == "ingest" and e.details["reason"] for e in entries)
        mismatch = next(e for e in entries if e.details["kind"] == "device_mismatch")
        assert other in mismatch.details["reason"]
        assert store.events(device=victim) == []  # never a device event: rollouts ignore it
    finally:
        audit.close()
