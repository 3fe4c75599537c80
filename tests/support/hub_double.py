"""A test double of the hub's side of the wire contract, over a real MQTT broker.

It signs and publishes retained directives, stores metric windows idempotently by
(device, seq), publishes the end-to-end ack (highest contiguous seq stored), and
records events and states. Tests wait on conditions, never on sleeps.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.contract.directive import Directive, ModelRef, Probation, SignedDirective
from edge_agent.contract.messages import Ack, Event, MetricsMessage, State
from edge_agent.contract.topics import Channel, fleet_filter, parse_topic, topic
from edge_agent.contract.trust import Context
from edge_agent.errors import ValidationError
from hub.signing import sign


@dataclass
class DeviceRecord:
    windows: dict[tuple[int, int], MetricsMessage] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    states: list[State] = field(default_factory=list)
    acked: int = 0
    epoch: str = ""
    #: Windows of the device's earlier sequence spaces (before its outbox was wiped).
    earlier: list[MetricsMessage] = field(default_factory=list)


class HubDouble:
    def __init__(
        self,
        host: str,
        port: int,
        keys: Sequence[Ed25519PrivateKey],
        ack: bool = True,
        username: str | None = None,
        password: str | None = None,
    ):
        self.keys = list(keys)
        self.ack_enabled = ack
        self.devices: dict[str, DeviceRecord] = defaultdict(DeviceRecord)
        self.malformed = 0
        self.cond = threading.Condition()
        self.seq = 0
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"hub-double-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv311,
        )
        self.client.max_queued_messages_set(0)
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        if username is not None:
            self.client.username_pw_set(username, password)
        self._connected = threading.Event()
        self.client.connect(host, port)
        self.client.loop_start()
        assert self._connected.wait(60), "hub double could not connect in 60 s"

    def _on_disconnect(self, client, userdata, flags, reason, properties):
        self._connected.clear()

    def _on_connect(self, client, userdata, flags, reason, properties):
        client.subscribe(
            [(fleet_filter(c), 1) for c in (Channel.STATE, Channel.EVENTS, Channel.METRICS)]
        )
        self._connected.set()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    # --- directives ---------------------------------------------------------------

    def directive(
        self,
        device_id: str,
        model: ModelRef,
        *,
        mode: str = "active",
        downgrade: bool = False,
        probation: Probation | None = None,
        expires_in: int = 3600,
        seq: int | None = None,
    ) -> Directive:
        self.seq = seq if seq is not None else self.seq + 1
        now = int(time.time())
        return Directive(
            device_id=device_id,
            seq=self.seq,
            issued_at=now,
            expires_at=now + expires_in,
            model=model,
            mode=mode,  # type: ignore[arg-type]
            downgrade=downgrade,
            probation=probation or Probation(window_s=0.5, min_predictions=1),
        )

    def signed(self, d: Directive, keys: Sequence[Ed25519PrivateKey] | None = None) -> bytes:
        sigs = sign(Context.DIRECTIVE, d.signed_bytes(), keys or self.keys)
        return SignedDirective(d, tuple(sigs)).to_bytes()

    def publish_raw(
        self,
        device_id: str,
        channel: Channel,
        payload: bytes,
        retain: bool = True,
        timeout: float = 60.0,
    ) -> None:
        # amqtt 0.12.1 sometimes drops a client when others connect at the same moment
        # ("dictionary changed size during iteration" in the broker): wait for paho to
        # reconnect and publish again, as the real hub will.
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not self._connected.wait(left):
                break
            info = self.client.publish(topic(device_id, channel), payload, qos=1, retain=retain)
            try:
                info.wait_for_publish(max(0.0, min(10.0, deadline - time.monotonic())))
            except RuntimeError:  # not connected: paho reconnects; wait for on_connect
                if not self.client.is_connected():
                    self._connected.clear()
                continue
            if info.is_published():
                return
        raise AssertionError(f"hub double could not publish on {channel} in {timeout}s")

    def publish_directive(self, d: Directive, **kw: Any) -> Directive:
        self.publish_raw(d.device_id, Channel.DESIRED, self.signed(d, **kw))
        return d

    # --- ingest -------------------------------------------------------------------------

    def _on_message(self, client, userdata, message):
        try:
            device_id, channel = parse_topic(message.topic)
            payload = bytes(message.payload)
            with self.cond:
                rec = self.devices[device_id]
                if channel is Channel.METRICS:
                    m = MetricsMessage.from_bytes(payload)
                    if m.device_id != device_id:
                        raise ValidationError("device id does not match the topic")
                    if m.epoch != rec.epoch:  # a new sequence space: start counting again
                        rec.earlier.extend(rec.windows.values())
                        rec.windows, rec.acked, rec.epoch = {}, 0, m.epoch
                    rec.windows.setdefault((m.seq_lo, m.seq_hi), m)
                    self._ack(device_id, rec)
                elif channel is Channel.EVENTS:
                    rec.events.append(Event.from_bytes(payload))
                elif channel is Channel.STATE:
                    rec.states.append(State.from_bytes(payload))
                self.cond.notify_all()
        except ValidationError:
            with self.cond:
                self.malformed += 1
                self.cond.notify_all()

    def _ack(self, device_id: str, rec: DeviceRecord) -> None:
        covered = set()
        for lo, hi in rec.windows:
            covered.update(range(lo, hi + 1))
        n = rec.acked
        while n + 1 in covered:
            n += 1
        if n > rec.acked and self.ack_enabled:
            rec.acked = n
            ack = Ack(device_id, n, rec.epoch).to_bytes()
            self.client.publish(topic(device_id, Channel.ACK), ack, qos=1, retain=True)

    # --- waiting ------------------------------------------------------------------------

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                result = predicate()
                if result:
                    return result
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {what or predicate}")
                self.cond.wait(left)

    def event(self, device_id: str, kind: str, seq: int | None = None) -> Callable[[], Any]:
        def find() -> Event | None:
            for e in self.devices[device_id].events:
                if e.kind == kind and (seq is None or e.directive_seq == seq):
                    return e
            return None

        return find

    def kinds(self, device_id: str) -> list[str]:
        with self.cond:
            return [e.kind.value for e in self.devices[device_id].events]

    def seqs_stored(self, device_id: str) -> set[int]:
        with self.cond:
            out: set[int] = set()
            for lo, hi in self.devices[device_id].windows:
                out.update(range(lo, hi + 1))
            return out
