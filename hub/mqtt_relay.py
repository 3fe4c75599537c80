"""The ingest's MQTT connection, in a process of its own.

Receiving a QoS 1 message costs paho ~70 µs of Python; validating and storing it costs
about twice that. In one process both share one interpreter lock, so the hub's ingest
ran at a third of what a bare paho subscriber receives. The relay moves the paho client
into a child process: it receives, acknowledges to the broker, and forwards batches of
``(topic, payload)`` over a pipe; the hub's :class:`~hub.ingest.Ingest` validates and
stores them and sends back the end-to-end acks to publish. The two halves run on two
cores.

Protocol on the pipe (pickled tuples, in order):

- parent to child: ``("config", RelayConfig)`` first, then
  ``("publish_retained", [(topic, payload), ...])`` (QoS 1) and ``("stop",)``;
- child to parent: ``("connected",)``, ``("disconnected", reason)``,
  ``("refused", reason)``, ``("batch", [(topic, payload), ...])``.

The configuration (with the password) travels over the pipe, never on a command line.
Messages the child holds when it stops or dies were acknowledged to the broker but not
stored: the devices resend them, since the hub's end-to-end ack never covered them.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Final

from edge_agent.daemon.config import BrokerConfig
from edge_agent.daemon.link import configure_client

log = logging.getLogger("edgefleet.hub.relay")

#: Most messages waiting in the child; past it paho's thread waits (TCP backpressure).
QUEUE_MAX: Final = 50_000
#: How often the forwarder looks whether a filling batch is full.
_FILL_POLL_S: Final = 0.002


#: The garbage collector's first threshold in both ingest processes (default: 700).
#: A batch keeps hundreds of messages (thousands of containers, once parsed) alive
#: until it is handed on or stored, so the default collects the young generation dozens
#: of times per batch, finding nothing: ~8 % of the ingest's CPU. Messages hold no
#: reference cycles.
INGEST_GC_THRESHOLD: Final = 50_000


def tune_gc_for_ingest() -> None:
    """Raise the collector's first threshold for this process and freeze what exists
    (modules, the application: never scanned again). Process-wide, so applications
    call it (the relay's main, :class:`~hub.service.HubService`), not library code."""
    _, second, third = gc.get_threshold()
    gc.set_threshold(INGEST_GC_THRESHOLD, second, third)
    gc.freeze()


@dataclass(frozen=True)
class RelayConfig:
    """What the child needs to connect and subscribe."""

    broker: BrokerConfig  # its repr leaves the password out
    client_id: str
    subscriptions: tuple[tuple[str, int], ...]
    batch_max: int = 500
    flush_interval_s: float = 0.02


def relay_main(conn: Connection) -> None:
    """The child process: connect, forward batches, publish what the parent asks.

    Returns when the parent says stop or the pipe closes.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    tune_gc_for_ingest()
    kind, config = conn.recv()
    if kind != "config" or not isinstance(config, RelayConfig):
        log.error("relay: the first message must be the configuration, got %r", kind)
        return
    _Relay(conn, config).run()


class _Relay:
    def __init__(self, conn: Connection, config: RelayConfig) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.conn, self.config = conn, config
        self.send_lock = threading.Lock()
        # paho's thread appends, the forwarder pops (deque operations are atomic). The
        # forwarder is woken once per batch (the first message into an empty inbox), not
        # per message as a queue.Queue would: each wake-up cost a GIL hand-off.
        self.inbox: deque[tuple[str, bytes]] = deque()
        self.arrived = threading.Event()  # the inbox went from empty to not
        self.drained = threading.Event()  # the forwarder took a batch (for a full inbox)
        self.stopping = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=config.client_id,
            protocol=mqtt.MQTTv311,
            clean_session=False,  # the broker queues QoS 1 messages while we reconnect
        )
        configure_client(self.client, config.broker)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    def run(self) -> None:
        forwarder = threading.Thread(target=self._forward, name="relay-forward", daemon=True)
        forwarder.start()
        self.client.connect_async(self.config.broker.host, self.config.broker.port)
        self.client.loop_start()
        try:
            while True:
                try:
                    command = self.conn.recv()
                except (EOFError, OSError):
                    break  # the parent is gone
                if command[0] == "publish_retained":
                    for topic, payload in command[1]:
                        self.client.publish(topic, payload, qos=1, retain=True)
                elif command[0] == "stop":
                    break
        finally:
            self.stopping.set()
            forwarder.join(5)
            self.client.disconnect()
            self.client.loop_stop()

    def _send(self, message: tuple[Any, ...]) -> None:
        with self.send_lock:
            try:
                self.conn.send(message)
            except (EOFError, OSError):
                self.stopping.set()

    def _on_connect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if getattr(reason, "is_failure", False):
            self._send(("refused", str(reason)))
            return
        client.subscribe(list(self.config.subscriptions))  # "connected" once acknowledged

    def _on_subscribe(
        self, client: Any, userdata: Any, mid: Any, reason_codes: Any, properties: Any
    ) -> None:
        if any(getattr(rc, "is_failure", False) for rc in reason_codes or ()):
            self._send(("refused", f"subscription refused: {reason_codes}"))
            return
        self._send(("connected",))

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if not self.stopping.is_set():
            self._send(("disconnected", str(reason)))

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        inbox = self.inbox
        while len(inbox) >= QUEUE_MAX and not self.stopping.is_set():
            self.drained.wait(0.5)  # a full inbox holds paho back
            self.drained.clear()
        inbox.append((message.topic, bytes(message.payload)))
        if len(inbox) == 1:  # only this thread appends: it was empty
            self.arrived.set()

    def _forward(self) -> None:
        """Send what arrived in batches: up to ``batch_max``, or what came in
        ``flush_interval_s`` after the first."""
        inbox, batch_max = self.inbox, self.config.batch_max
        while not self.stopping.is_set():
            if not inbox:
                self.arrived.wait(0.2)
                self.arrived.clear()  # (set again by the next message into an empty inbox)
                continue
            deadline = time.monotonic() + self.config.flush_interval_s
            while len(inbox) < batch_max:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                time.sleep(min(left, _FILL_POLL_S))
            popleft = inbox.popleft
            batch = [popleft() for _ in range(min(len(inbox), batch_max))]
            self.drained.set()
            self._send(("batch", batch))


if __name__ == "__main__":
    import sys

    # Through the package, so that unpickled RelayConfig objects are this module's class.
    from hub.mqtt_relay import relay_main as _main

    _main(Connection(int(sys.argv[1])))
