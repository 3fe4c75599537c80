"""The soak's MQTT clients besides the fleet: a tap that keeps copies of real messages to
replay, and a rogue client that replays them and worse.

On Mosquitto the rogue logs in with one enrolled device's credentials (``A``) over the
devices' TLS listener and speaks MQTT 5, so each refusal comes back with the broker's
reason code: it publishes metrics and a replayed directive on another device's (``B``)
topics, publishes a directive on its own (read-only) directive topic, and subscribes to
``B``'s directives. Every one must be refused by the ACL.

On the embedded broker (anonymous, MQTT 3.1.1: no credentials to steal, no refusal
codes) it sends what only the hub and the agents can refuse: a malformed metrics
message, ``A``'s metrics on ``B``'s topic (device mismatch), ``B``'s own metrics again
(a replay: stored once), and ``B``'s earlier directive again (a replay the agent refuses
with an event).
"""

from __future__ import annotations

import ssl
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.contract.topics import Channel, fleet_filter, topic


@dataclass(frozen=True)
class Endpoint:
    """How a client reaches the broker."""

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    v5: bool = False


def _client(ep: Endpoint, prefix: str) -> mqtt.Client:
    protocol = mqtt.MQTTv5 if ep.v5 else mqtt.MQTTv311
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"{prefix}-{uuid.uuid4().hex[:8]}",
        protocol=protocol,
    )
    if ep.username is not None:
        c.username_pw_set(ep.username, ep.password)
    if ep.ca_file is not None:
        c.tls_set_context(ssl.create_default_context(cafile=str(ep.ca_file)))
    return c


def _connect(c: mqtt.Client, ep: Endpoint, timeout: float) -> None:
    done = threading.Event()
    failed: list[str] = []

    def on_connect(_c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        if reason.is_failure:
            failed.append(str(reason))
        done.set()

    c.on_connect = on_connect
    c.connect(ep.host, ep.port, keepalive=30)
    c.loop_start()
    if not done.wait(timeout):
        c.loop_stop()
        raise TimeoutError(f"no CONNACK from {ep.host}:{ep.port} within {timeout:.0f} s")
    if failed:
        c.loop_stop()
        raise ConnectionError(f"connection refused: {failed[0]}")


class Tap:
    """Keeps the directives every device receives (in order) and a few devices' metrics."""

    def __init__(self, ep: Endpoint, metrics_of: tuple[str, ...]) -> None:
        """Connect and subscribe (blocking until subscribed).

        Raises:
            TimeoutError, ConnectionError: the broker did not take it.
        """
        self.directives: dict[str, list[bytes]] = {}
        self.metrics: dict[str, list[bytes]] = {d: [] for d in metrics_of}
        self._seen: dict[tuple[str, int], int] = {}  # (topic, hash of payload) -> times
        self._lock = threading.Lock()
        self._client = _client(ep, "soak-tap")
        self._client.on_message = self._on_message
        self._ep = ep
        self._metrics_of = metrics_of
        self._client.on_connect = None
        _connect(self._client, ep, 60)
        self._subscribe()
        self._client.on_connect = lambda *_: self._subscribe()

    def _subscribe(self) -> None:
        self._client.subscribe(fleet_filter(Channel.DESIRED), qos=1)
        for d in self._metrics_of:
            self._client.subscribe(topic(d, Channel.METRICS), qos=1)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        parts = msg.topic.split("/")
        if len(parts) < 5 or not msg.payload:
            return
        device, channel = parts[3], parts[4]
        with self._lock:
            key = (msg.topic, hash(bytes(msg.payload)))
            self._seen[key] = self._seen.get(key, 0) + 1
            if channel == Channel.DESIRED.value:
                seen = self.directives.setdefault(device, [])
                if not seen or seen[-1] != msg.payload:
                    seen.append(bytes(msg.payload))
            elif channel == Channel.METRICS.value and device in self.metrics:
                kept = self.metrics[device]
                if len(kept) < 20:
                    kept.append(bytes(msg.payload))

    def times_seen(self, topic_name: str, payload: bytes) -> int:
        """How often the broker delivered ``payload`` on ``topic_name`` to the tap."""
        with self._lock:
            return self._seen.get((topic_name, hash(payload)), 0)

    def earlier_directive(self, device: str) -> bytes | None:
        """A directive ``device`` received before its latest one (a replay), or None."""
        with self._lock:
            seen = self.directives.get(device, [])
            return seen[0] if len(seen) >= 2 else None

    def metrics_of(self, device: str) -> bytes | None:
        """One metrics message ``device`` sent, or None yet."""
        with self._lock:
            kept = self.metrics.get(device, [])
            return kept[0] if kept else None

    def close(self) -> None:
        """Disconnect."""
        self._client.disconnect()
        self._client.loop_stop()


@dataclass
class RogueResult:
    """What the rogue tried and what each attempt got: ``(attempt, outcome)``."""

    attempts: list[tuple[str, str]] = field(default_factory=list)
    sent: list[tuple[str, str, bytes]] = field(default_factory=list)  # what, topic, payload


def rogue_on_mosquitto(ep: Endpoint, victim: str, replay: bytes, metrics: bytes) -> RogueResult:
    """With ``ep``'s device credentials (MQTT 5): publish ``metrics`` on ``victim``'s
    metrics topic, ``replay`` on ``victim``'s and on its own directive topic, subscribe to
    ``victim``'s directives. Each outcome is the broker's reason code.

    Raises:
        TimeoutError, ConnectionError: it could not log in at all.
    """
    assert ep.username is not None
    c = _client(ep, "soak-rogue")
    acks: dict[int, str] = {}
    cond = threading.Condition()

    def on_publish(_c: Any, _u: Any, mid: int, reason: ReasonCode, _p: Properties) -> None:
        with cond:
            acks[mid] = str(reason)
            cond.notify_all()

    def on_subscribe(_c: Any, _u: Any, mid: int, reasons: list[ReasonCode], _p: Any) -> None:
        with cond:
            acks[mid] = ",".join(str(r) for r in reasons)
            cond.notify_all()

    got: list[str] = []

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with cond:
            got.append(msg.topic)
            cond.notify_all()

    c.on_publish = on_publish
    c.on_subscribe = on_subscribe
    c.on_message = on_message
    _connect(c, ep, 60)
    result = RogueResult()
    try:
        tries = [
            (f"metrics on {victim}'s topic", "pub", topic(victim, Channel.METRICS), metrics),
            (
                f"replayed directive on {victim}'s topic",
                "pub",
                topic(victim, Channel.DESIRED),
                replay,
            ),
            (
                "replayed directive on its own directive topic",
                "pub",
                topic(ep.username, Channel.DESIRED),
                replay,
            ),
            (f"subscribe to {victim}'s directives", "sub", topic(victim, Channel.DESIRED), b""),
        ]
        for what, kind, name, payload in tries:
            if kind == "pub":
                mid = c.publish(name, payload, qos=1).mid
            else:
                _, mid_or_none = c.subscribe(name, qos=1)
                mid = int(mid_or_none or 0)
            with cond:
                cond.wait_for(lambda m=mid: m in acks, 30)  # type: ignore[misc]
                outcome = acks.get(mid, "no answer")
                if kind == "sub" and outcome.startswith("Granted"):
                    # Mosquitto grants the subscription and applies the ACL to each
                    # message it would deliver: the victim's retained directive (the
                    # tap saw it) arrives at once if reading is allowed.
                    cond.wait_for(lambda: bool(got), 5)
                    outcome = (
                        f"{outcome}, then delivered {len(got)} message(s): READ ALLOWED"
                        if got
                        else f"{outcome}, then nothing delivered: Not authorized to read"
                    )
                result.attempts.append((what, outcome))
    finally:
        c.disconnect()
        c.loop_stop()
    return result


def rogue_on_embedded(
    ep: Endpoint,
    victim: str,
    other: str,
    replay: bytes,
    victim_metrics: bytes,
    other_metrics: bytes,
) -> RogueResult:
    """Anonymous (MQTT 3.1.1): a malformed metrics message, ``other``'s metrics on
    ``victim``'s topic, ``victim``'s metrics again, ``victim``'s earlier directive again.
    The outcomes are only "sent": the hub's counters and the agent's events tell.

    Raises:
        TimeoutError, ConnectionError: it could not connect.
    """
    c = _client(ep, "soak-rogue")
    _connect(c, ep, 60)
    result = RogueResult()
    try:
        tries = [
            ("malformed metrics", topic(victim, Channel.METRICS), b"{not json"),
            (
                f"{other}'s metrics on {victim}'s topic",
                topic(victim, Channel.METRICS),
                other_metrics,
            ),
            (f"{victim}'s metrics replayed", topic(victim, Channel.METRICS), victim_metrics),
            (f"{victim}'s earlier directive replayed", topic(victim, Channel.DESIRED), replay),
        ]
        for what, name, payload in tries:
            info = c.publish(name, payload, qos=1)
            info.wait_for_publish(30)
            result.attempts.append((what, "acknowledged" if info.is_published() else "no PUBACK"))
            result.sent.append((what, name, payload))
    finally:
        c.disconnect()
        c.loop_stop()
    return result
