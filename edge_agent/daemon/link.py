"""The agent's MQTT connection (paho-mqtt, v2 callback API, MQTT 3.1.1).

paho's network thread only puts what arrives on a queue; the agent's own thread
handles it. Reconnects use exponential backoff whose bounds are jittered per
process, so a fleet that lost its broker does not reconnect in lockstep.

Nothing here logs credentials: paho's own logger is never enabled.
"""

from __future__ import annotations

import logging
import queue
import random
import ssl
import threading
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from edge_agent.contract.messages import offline_state
from edge_agent.contract.topics import TRUST_TOPIC, Channel, parse_topic, topic
from edge_agent.daemon.config import BrokerConfig
from edge_agent.errors import ValidationError

log = logging.getLogger("edgefleet.agent")


@dataclass(frozen=True)
class Incoming:
    """Something for the agent thread: a message on one of its topics, or a (re)connect."""

    channel: Channel | None
    payload: bytes = b""
    retained: bool = False
    done: threading.Event | None = None  # set once the agent thread handled it


CONNECTED = Incoming(channel=None)


class _Client(mqtt.Client):
    """paho's client, remembering why the last connection attempt failed (paho's
    background loop swallows the exception and only calls ``on_connect_fail``)."""

    last_error: str = ""

    def reconnect(self) -> MQTTErrorCode:
        try:
            return super().reconnect()
        except OSError as exc:  # refused, unreachable, TLS verification failed...
            self.last_error = f"{type(exc).__name__}: {exc}"
            raise


def configure_client(client: mqtt.Client, broker: BrokerConfig) -> None:
    """Set a paho client's credentials and, for ``mqtts``, TLS that verifies the broker
    (against ``broker.ca_file``, or the system's CAs without one).

    Raises:
        OSError: the CA file cannot be read.
        ssl.SSLError: the CA file holds no usable certificate.
    """
    if broker.username is not None:
        client.username_pw_set(broker.username, broker.password)
    if broker.tls:
        client.tls_set(
            ca_certs=str(broker.ca_file) if broker.ca_file else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )


class MqttLink:
    """One device's connection: subscribes to ``trust``, ``desired`` and ``ack``, publishes
    the rest."""

    def __init__(
        self,
        device_id: str,
        broker: BrokerConfig,
        inbox: queue.Queue[Incoming],
        min_backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
    ) -> None:
        """Configure the client; nothing connects before :meth:`start`."""
        self.device_id = device_id
        self.broker = broker
        self.inbox = inbox
        self.connected = threading.Event()
        self._failures = 0
        client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"edgefleet-{device_id}",
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        configure_client(client, broker)
        jitter = random.uniform(0.8, 1.2)  # noqa: S311 - spreading reconnects, not security
        client.reconnect_delay_set(
            min_delay=max(1, round(min_backoff_s * jitter)),
            max_delay=max(1, round(max_backoff_s * jitter)),
        )
        client.max_queued_messages_set(10_000)
        client.will_set(
            topic(device_id, Channel.STATE),
            offline_state(device_id).to_bytes(),
            qos=1,
            retain=True,
        )
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self.client = client

    def start(self) -> None:
        """Connect in the background; paho reconnects by itself after any loss."""
        self.client.connect_async(self.broker.host, self.broker.port, self.broker.keepalive)
        self.client.loop_start()

    def stop(self) -> None:
        """Disconnect cleanly (after marking the device offline) and stop the thread."""
        if self.connected.is_set():
            info = self.publish(
                Channel.STATE, offline_state(self.device_id).to_bytes(), retain=True
            )
            if info is not None:
                info.wait_for_publish(2.0)
        self.connected.clear()  # a disconnect we asked for is not worth a warning
        self.client.disconnect()
        self.client.loop_stop()
        self.connected.clear()

    def publish(
        self, channel: Channel, payload: bytes, *, retain: bool = False, qos: int = 1
    ) -> mqtt.MQTTMessageInfo | None:
        """Publish on this device's ``channel``; None if paho refused to queue it."""
        info = self.client.publish(topic(self.device_id, channel), payload, qos=qos, retain=retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.warning("mqtt: publish on %s not queued (%s)", channel, mqtt.error_string(info.rc))
            return None
        return info

    # --- paho callbacks (paho's thread: only enqueue) ----------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            log.warning(
                "mqtt: connection to %s:%s refused (%s)", self.broker.host, self.broker.port, reason
            )
            return
        client.subscribe(  # trust first: retained rotations then usually precede directives
            [
                (TRUST_TOPIC, 1),
                (topic(self.device_id, Channel.DESIRED), 1),
                (topic(self.device_id, Channel.ACK), 1),
            ]
        )
        self._failures = 0
        self.connected.set()
        log.info("mqtt: connected to %s:%s", self.broker.host, self.broker.port)
        self.inbox.put(CONNECTED)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        """One line for the first failure of a streak, then every 10th (paho retries)."""
        self._failures += 1
        if self._failures == 1 or self._failures % 10 == 0:
            where = f"{self.broker.host}:{self.broker.port}{' over TLS' if self.broker.tls else ''}"
            log.warning(
                "mqtt: cannot connect to %s (%s; attempt %d); retrying with backoff",
                where, getattr(client, "last_error", "") or "unknown error", self._failures,
            )  # fmt: skip

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if self.connected.is_set():
            log.warning("mqtt: disconnected (%s); reconnecting with backoff", reason)
        self.connected.clear()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic == TRUST_TOPIC:
            self.inbox.put(Incoming(Channel.TRUST, bytes(message.payload), bool(message.retain)))
            return
        try:
            device_id, channel = parse_topic(message.topic)
        except ValidationError as exc:
            log.warning("mqtt: ignored message: %s", exc)
            return
        if device_id != self.device_id:
            log.warning("mqtt: ignored message for device %r on %s", device_id, message.topic)
            return
        self.inbox.put(Incoming(channel, bytes(message.payload), bool(message.retain)))
