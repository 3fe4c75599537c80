"""The relay's hand-off from paho's thread to the forwarder, without a broker."""

from __future__ import annotations

import socket
import threading
import time
from multiprocessing.connection import Connection
from types import SimpleNamespace

import pytest

from edge_agent.daemon.config import BrokerConfig
from hub import mqtt_relay
from hub.mqtt_relay import RelayConfig, _Relay


@pytest.fixture
def relay():
    ours, theirs = socket.socketpair()
    parent, child = Connection(ours.detach()), Connection(theirs.detach())
    config = RelayConfig(
        broker=BrokerConfig(host="127.0.0.1", port=1),
        client_id="test-relay",
        subscriptions=(),
        batch_max=50,
        flush_interval_s=0.01,
    )
    r = _Relay(child, config)
    yield r, parent
    r.stopping.set()
    parent.close()
    child.close()


class _WaitProbe(threading.Event):
    """The relay's ``drained`` event, which also says when someone waits on it."""

    def __init__(self, waiting: threading.Event) -> None:
        super().__init__()
        self.waiting = waiting

    def wait(self, timeout: float | None = None) -> bool:
        self.waiting.set()
        return super().wait(timeout)


def message(i: int) -> SimpleNamespace:
    return SimpleNamespace(topic=f"t/{i}", payload=b"%d" % i)


def receive(parent: Connection, n: int) -> list[list[tuple[str, bytes]]]:
    batches = []
    while sum(map(len, batches)) < n:
        assert parent.poll(60), "the forwarder sent nothing for 60 s"
        kind, batch = parent.recv()
        assert kind == "batch"
        batches.append(batch)
    return batches


def test_every_message_is_forwarded_once_in_order_in_bounded_batches(relay):
    r, parent = relay
    forwarder = threading.Thread(target=r._forward, daemon=True)
    forwarder.start()
    n = 1000

    def produce() -> None:
        for i in range(n):
            r._on_message(None, None, message(i))
            if i % 100 == 0:
                time.sleep(0.015)  # some batches close on time, some on size

    producer = threading.Thread(target=produce)
    producer.start()
    batches = receive(parent, n)
    producer.join(60)
    r.stopping.set()
    forwarder.join(60)
    assert not producer.is_alive() and not forwarder.is_alive()
    got = [item for b in batches for item in b]
    assert got == [(f"t/{i}", b"%d" % i) for i in range(n)]
    assert max(map(len, batches)) <= 50
    assert not parent.poll(0)  # the forwarder ended: whatever it sent is here already


def test_a_full_inbox_holds_paho_back_until_the_forwarder_takes_a_batch(relay, monkeypatch):
    r, parent = relay
    monkeypatch.setattr(mqtt_relay, "QUEUE_MAX", 10)
    for i in range(10):
        r._on_message(None, None, message(i))
    stopped = threading.Event()  # paho's thread waits for a drain, or it returned
    r.drained = _WaitProbe(stopped)

    def on_message() -> None:
        try:
            r._on_message(None, None, message(10))
        finally:
            stopped.set()

    blocked = threading.Thread(target=on_message)
    blocked.start()
    assert stopped.wait(60), "paho's thread neither waited nor returned"
    assert blocked.is_alive() and len(r.inbox) == 10  # paho's thread waits
    threading.Thread(target=r._forward, daemon=True).start()
    blocked.join(60)
    assert not blocked.is_alive()
    got = [item for b in receive(parent, 11) for item in b]
    assert got == [(f"t/{i}", b"%d" % i) for i in range(11)]
