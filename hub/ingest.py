"""The hub's MQTT side: take what devices publish, store it, acknowledge it end to end.

paho-mqtt's network thread only enqueues ``(topic, payload)``; one worker thread takes
batches off the queue, validates every message against the wire contract
(:mod:`edge_agent.messages`), stores metrics in one transaction per batch through the
:class:`~hub.store.Store`, and then publishes, per device whose highest contiguous
sequence advanced, one retained :class:`~edge_agent.messages.Ack` (QoS 1).

Malformed or oversized payloads, and messages whose payload names another device than
the topic (a device claiming another's id), are counted and logged in one line each;
they never stop the ingest. Messages still queued when :meth:`Ingest.stop` is called
are not acknowledged, so devices send them again.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.errors import ValidationError
from edge_agent.messages import Ack, Event, MetricsMessage, State
from edge_agent.topics import DEVICE_CHANNELS, Channel, fleet_filter, parse_topic, topic
from hub.errors import HubError
from hub.store import Outcome, Store, StoreError

log = logging.getLogger("edgefleet.hub.ingest")

#: Most messages waiting in the queue; past it paho's thread waits (TCP backpressure).
QUEUE_MAX: Final = 50_000
#: One hub, one persistent MQTT session; hub replicas need their own ids.
DEFAULT_CLIENT_ID: Final = "edgefleet-hub-ingest"
COUNTER_NAMES: Final = (
    "received",
    "stored",
    "duplicates",
    "rejected",
    "malformed",
    "refused_device_mismatch",
    "store_errors",
    "acks_published",
    "connects",
)


class IngestError(HubError):
    """The ingest cannot start (broker unreachable, already started...)."""


@dataclass(frozen=True)
class Parsed:
    """A validated message from a device."""

    device_id: str
    message: MetricsMessage | State | Event


_PARSERS: Final[dict[Channel, Callable[[bytes], MetricsMessage | State | Event]]] = {
    Channel.METRICS: MetricsMessage.from_bytes,
    Channel.STATE: State.from_bytes,
    Channel.EVENTS: Event.from_bytes,
}


class DeviceMismatchError(ValidationError):
    """The payload names another device than its topic."""


def parse_message(topic_name: str, payload: bytes) -> Parsed:
    """Validate one device message: topic in the tree, payload per the wire contract,
    and the payload's device id equal to the topic's.

    Raises:
        DeviceMismatchError: the payload claims another device's id.
        ValidationError: anything else is wrong (topic, size, JSON, fields).
    """
    device_id, channel = parse_topic(topic_name)
    parser = _PARSERS.get(channel)
    if parser is None:
        raise ValidationError(f"topic {topic_name!r}: devices do not publish on {channel}")
    message = parser(payload)
    if message.device_id != device_id:
        raise DeviceMismatchError(
            f"{channel} on {device_id!r}'s topic claims device {message.device_id!r}"
        )
    return Parsed(device_id, message)


class Ingest:
    """Subscribes to every device's state, events and metrics; stores and acknowledges.

    Counters (see :meth:`counters`) are for the hub's ``/metrics`` endpoint.
    """

    def __init__(
        self,
        store: Store,
        host: str,
        port: int,
        username: str | None = None,
        password: str | None = None,
        batch_max: int = 500,
        flush_interval_s: float = 0.05,
        *,
        client_id: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Configure (but do not start) the ingest.

        Raises:
            ValueError: ``batch_max`` < 1 or ``flush_interval_s`` < 0.
        """
        if batch_max < 1 or flush_interval_s < 0:
            raise ValueError("ingest: batch_max must be >= 1 and flush_interval_s >= 0")
        self.store = store
        self.host, self.port = host, port
        self.batch_max = batch_max
        self.flush_interval_s = flush_interval_s
        self._clock = clock
        self._queue: queue.Queue[tuple[str, bytes]] = queue.Queue(QUEUE_MAX)
        self._cond = threading.Condition()
        self._counts = dict.fromkeys(COUNTER_NAMES, 0)
        self._acked: dict[str, int] = {}
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._worker: threading.Thread | None = None
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or DEFAULT_CLIENT_ID,
            protocol=mqtt.MQTTv311,
            clean_session=False,  # the broker queues QoS 1 messages while we reconnect
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    # --- life cycle -------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> Ingest:
        """Connect, subscribe and start the worker; returns once subscribed.

        Raises:
            IngestError: already started, or no connection within ``timeout``.
        """
        if self._worker is not None:
            raise IngestError("ingest: already started")
        self._stop.clear()
        self._worker = threading.Thread(target=self._run, name="hub-ingest", daemon=True)
        self._worker.start()
        self.client.connect_async(self.host, self.port)
        self.client.loop_start()
        if not self._connected.wait(timeout):
            self.stop()
            raise IngestError(f"ingest: no MQTT connection to {self.host}:{self.port}")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the worker (after its current batch) and disconnect; idempotent."""
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout)
            self._worker = None
        self.client.disconnect()
        self.client.loop_stop()
        self._connected.clear()

    def __enter__(self) -> Ingest:
        """Start; stop at the end of the block.

        Raises:
            IngestError: see :meth:`start`.
        """
        return self.start()

    def __exit__(self, *exc: object) -> None:
        """Stop."""
        self.stop()

    @property
    def connected(self) -> bool:
        """Whether the MQTT connection is up (and subscribed)."""
        return self._connected.is_set()

    # --- observation ------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        """A snapshot of the counters (names in :data:`COUNTER_NAMES`)."""
        with self._cond:
            return dict(self._counts)

    def acked(self, device_id: str) -> int:
        """The last sequence acknowledged to the device by this ingest (0: none yet)."""
        with self._cond:
            return self._acked.get(device_id, 0)

    def wait_until(self, predicate: Callable[[dict[str, int]], bool], timeout: float) -> bool:
        """Block until ``predicate(counters)`` holds (checked after every batch, connect
        and disconnect); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self._counts):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def wait_until_acked(self, device_id: str, seq: int, timeout: float) -> bool:
        """Block until the device was acknowledged up to ``seq``; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._acked.get(device_id, 0) < seq:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    # --- paho's thread ----------------------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("ingest: broker refused the connection: %s", reason)
            return
        client.subscribe([(fleet_filter(c), 1) for c in DEVICE_CHANNELS])
        self._connected.set()
        with self._cond:
            self._counts["connects"] += 1
            self._cond.notify_all()
        log.info("ingest: connected to %s:%d and subscribed", self.host, self.port)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self._connected.clear()
        with self._cond:
            self._cond.notify_all()
        if not self._stop.is_set():
            log.warning("ingest: disconnected (%s); paho reconnects", reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        item = (message.topic, bytes(message.payload))
        while not self._stop.is_set():  # a full queue holds paho back (TCP backpressure)
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    # --- the worker -------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self._take_batch()
            if batch:
                try:
                    self.process(batch)
                except Exception:  # never let one batch end the ingest
                    log.exception("ingest: batch of %d failed", len(batch))

    def _take_batch(self) -> list[tuple[str, bytes]]:
        try:
            batch = [self._queue.get(timeout=0.2)]
        except queue.Empty:
            return []
        deadline = time.monotonic() + self.flush_interval_s
        while len(batch) < self.batch_max:
            try:
                left = deadline - time.monotonic()
                batch.append(
                    self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
                )
            except queue.Empty:
                break
        return batch

    def process(self, batch: Sequence[tuple[str, bytes]]) -> None:
        """Validate, store and acknowledge one batch of ``(topic, payload)`` (worker thread).

        Store failures are logged and counted; the devices resend what was not acked.
        """
        counts = dict.fromkeys(COUNTER_NAMES, 0)
        counts["received"] = len(batch)
        metrics: list[MetricsMessage] = []
        for topic_name, payload in batch:
            try:
                parsed = parse_message(topic_name, payload)
            except DeviceMismatchError as exc:
                counts["refused_device_mismatch"] += 1
                log.warning("ingest: refused: %s", exc)
                continue
            except ValidationError as exc:
                counts["malformed"] += 1
                log.warning("ingest: malformed message on %r: %s", topic_name[:200], exc)
                continue
            message = parsed.message
            try:
                if isinstance(message, MetricsMessage):
                    metrics.append(message)
                elif isinstance(message, State):
                    self.store.record_state(message, self._clock())
                else:
                    self.store.record_event(message)
            except StoreError as exc:
                counts["store_errors"] += 1
                log.error("ingest: %s", exc)
        acks: dict[str, int] = {}
        if metrics:
            try:
                result = self.store.store_metrics_batch(metrics)
            except StoreError as exc:
                counts["store_errors"] += 1
                log.error("ingest: %d metrics message(s) not stored: %s", len(metrics), exc)
            else:
                counts["stored"] += result.count(Outcome.STORED)
                counts["duplicates"] += result.count(Outcome.DUPLICATE)
                counts["rejected"] += result.count(Outcome.REJECTED)
                with self._cond:
                    acks = {d: c for d, c in result.contiguous.items() if c > self._acked.get(d, 0)}
        for device_id, seq in acks.items():
            self.client.publish(
                topic(device_id, Channel.ACK), Ack(device_id, seq).to_bytes(), qos=1, retain=True
            )
        counts["acks_published"] = len(acks)
        with self._cond:
            for name, n in counts.items():
                self._counts[name] += n
            self._acked.update(acks)
            self._cond.notify_all()
