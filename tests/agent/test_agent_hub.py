"""The agent against the real hub ingest (hub.ingest.Ingest and its SQLite Store) over a real
broker: what the agent's outbox promises is checked where it matters, in the hub's store.

The hub double signs and publishes directives only (it never acks here). Not marked
``runtime``: the hub side needs the hub extra, absent from the tflite-runtime environment.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from edge_agent.contract.messages import EventKind, MetricsMessage
from edge_agent.contract.topics import Channel, topic
from edge_agent.daemon.agent import Agent
from tests.support.bundles import model_ref
from tests.support.hub_double import HubDouble

# The tflite-runtime environment collects this module too (make pytest-tflite), without the
# hub extra; its tests are not marked runtime, so nothing is lost there.
pytest.importorskip("orjson", reason="the hub's ingest needs the hub extra")
from hub.alerts import BUILTIN_RULES, Alerter
from hub.broker import EmbeddedBroker
from hub.ingest import Ingest
from hub.store import EPOCH_BLOCK, Store

REFERENCE_UNUSED: Any = None  # the built-in rule reads no reference

pytestmark = pytest.mark.timeout(180)
WAIT = 60.0


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    """A broker of this test's own: the session's shared one holds retained messages of
    every earlier test, which the ingest would count (amqtt even delivers some on topics
    no one subscribed to)."""
    with EmbeddedBroker() as b:
        yield b


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    with Store(tmp_path / "hub.db") as s:
        yield s


def start_ingest(store: Store, broker) -> Ingest:
    return Ingest(store, broker.host, broker.port, client_id=f"ingest-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def ingest(store, broker) -> Iterator[Ingest]:
    with start_ingest(store, broker) as i:
        yield i


@pytest.fixture
def directives(broker, signing_keys) -> Iterator[HubDouble]:
    h = HubDouble(broker.host, broker.port, signing_keys[:2], ack=False)
    yield h
    h.close()


def wait(ingest: Ingest, predicate, what: str) -> None:
    assert ingest.wait_until(lambda _: predicate(), WAIT), f"timed out waiting for {what}"


def activate_v1(agent_config, directives, ingest, store, server, bundles) -> None:
    dev = agent_config.device_id
    path = bundles["v1"]
    ref = model_ref(path, server.add("/b/v1.efb", path.read_bytes()), version=1)
    d = directives.publish_directive(directives.directive(dev, ref))
    wait(
        ingest,
        lambda: any(
            r.event.kind is EventKind.ACTIVATED and r.event.directive_seq == d.seq
            for r in store.events(device=dev)
        ),
        "v1 activated",
    )


def test_wiped_outbox_ignores_the_old_lifes_retained_ack_and_loses_no_window(
    agent_config, directives, ingest, store, server, bundles, reference_x
):
    """A device whose outbox was wiped restarts its sequences at 1; the hub's retained ack of
    its earlier life (up to 3) must not delete its new windows before the hub has them: the
    real ingest stores the new life's windows after the old ones and acks them in the new
    epoch's numbering."""
    dev = agent_config.device_id
    with Agent(agent_config) as first:
        activate_v1(agent_config, directives, ingest, store, server, bundles)
        for _ in range(3):
            first.predict(reference_x[0])
            assert first.close_window(WAIT)
        assert first.wait_for_drain(WAIT), "the first life's windows acked"
        old_epoch = first.outbox.epoch
    assert store.contiguous(dev) == 3 and ingest.acked(dev) == 3
    for suffix in ("", "-wal", "-shm"):
        (agent_config.data_dir / f"outbox.db{suffix}").unlink(missing_ok=True)
    ignored = threading.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if f"ignored an ack for epoch {old_epoch!r}" in record.getMessage():
                ignored.set()

    watch = Watch()
    logging.getLogger("edgefleet.agent").addHandler(watch)
    try:
        second = Agent(agent_config).start()
        # the old life's retained ack (seq 3) reaches the new life first
        assert ignored.wait(WAIT), "the old epoch's retained ack was not refused"
    finally:
        logging.getLogger("edgefleet.agent").removeHandler(watch)
    try:
        new_epoch = second.outbox.epoch
        assert new_epoch not in ("", old_epoch)
        for n in (7, 2, 5):  # new sequences 1..3: all covered by the stale ack
            for row in reference_x[:n]:
                second.predict(row)
            assert second.close_window(WAIT)
        assert ingest.wait_until_acked(dev, 3, WAIT, epoch=new_epoch), "new life acked"
        assert second.wait_for_drain(WAIT), "the new life's outbox emptied by the ack"
    finally:
        second.stop()
    assert [w.n for w in store.windows_for(device=dev)] == [1, 1, 1, 7, 2, 5]
    # the new life's block starts after the old one's, on the hub's sequence line
    b = EPOCH_BLOCK
    assert store.stored_ranges(dev) == [
        (1, 1),
        (2, 2),
        (3, 3),
        (b + 1, b + 1),
        (b + 2, b + 2),
        (b + 3, b + 3),
    ]
    assert store.contiguous(dev) == b + 3
    assert ingest.counters()["identity_conflicts"] == 0
    assert ingest.counters()["malformed"] == 0


def test_forged_new_epoch_on_a_devices_topic_raises_an_identity_conflict_and_the_agent_stays_acked(
    agent_config, directives, ingest, store, server, bundles, reference_x, tmp_path
):
    """Someone with the device's credentials (or a cloned image with a fresh outbox)
    publishes seq 1 of a new epoch on its metrics topic. The real agent's next windows
    are stored (not taken for duplicates), acknowledged in its own epoch so its outbox
    drains, and the hub records an ``identity_conflict`` event that fires the built-in
    alert."""
    dev = agent_config.device_id
    with Agent(agent_config) as agent:
        activate_v1(agent_config, directives, ingest, store, server, bundles)
        agent.predict(reference_x[0])
        assert agent.close_window(WAIT)
        assert agent.wait_for_drain(WAIT), "the first window acked"
        [stolen] = store.windows_for(device=dev)
        forged = MetricsMessage(dev, 1, 1, (stolen,), epoch="feedfacefeedface")
        directives.client.publish(topic(dev, Channel.METRICS), forged.to_bytes(), qos=1)
        assert ingest.wait_until_acked(dev, 1, WAIT, epoch="feedfacefeedface")
        own = agent.outbox.epoch
        for n in (3, 4):
            for x in reference_x[:n]:
                agent.predict(x)
            assert agent.close_window(WAIT)
        assert ingest.wait_until_acked(dev, 3, WAIT, epoch=own), "the real agent acked"
        assert agent.wait_for_drain(WAIT), "the real agent's outbox drained"
    assert sorted(w.n for w in store.windows_for(device=dev)) == [1, 1, 3, 4]
    conflicts = [
        r.event for r in store.events(device=dev) if r.event.kind is EventKind.IDENTITY_CONFLICT
    ]
    assert len(conflicts) == 1 and "two live sequence spaces" in conflicts[0].detail
    assert ingest.counters()["identity_conflicts"] >= 1
    alerter = Alerter(store, lambda m, v: REFERENCE_UNUSED, BUILTIN_RULES)
    try:
        [fired] = alerter.tick()
        assert (fired.rule, fired.state, fired.value) == ("identity-conflict", "firing", 1.0)
    finally:
        alerter.close()


def test_compaction_keeps_every_count_end_to_end(
    agent_config, directives, ingest, store, broker, server, bundles, reference_x
):
    """With the hub's ingest down and a small disk budget, the outbox merges its oldest
    windows; once the ingest is back, the hub stores the merged ranges next to the windows
    it already had, and its prediction count equals what the agent served."""
    dev = agent_config.device_id
    config = replace(agent_config, outbox_budget_bytes=6000, resend_after_s=1.0)
    served = 0
    with Agent(config) as agent:
        activate_v1(config, directives, ingest, store, server, bundles)
        for n in (3, 4):  # stored and acked one by one
            for row in reference_x[:n]:
                agent.predict(row)
            served += n
            assert agent.close_window(WAIT)
        assert agent.wait_for_drain(WAIT)
        ingest.stop()  # the hub is down: nothing is acked
        for i in range(40):
            n = 1 + i % 5
            for row in reference_x[i : i + n]:
                agent.predict(row)
            served += n
            assert agent.close_window(WAIT)
        assert agent.outbox.compactions > 0, "the budget forced merges"
        assert agent.outbox.depth() < 40
        with start_ingest(store, broker) as back:  # the hub is back
            assert back.wait_until_acked(dev, 42, WAIT), "everything acked"
            assert agent.wait_for_drain(WAIT)
    ranges = store.stored_ranges(dev)
    assert ranges[:2] == [(1, 1), (2, 2)] and ranges[-1][1] == 42
    assert any(hi > lo for lo, hi in ranges), "merged ranges reached the hub"
    assert store.contiguous(dev) == 42
    assert sum(w.n for w in store.windows_for(device=dev)) == served
