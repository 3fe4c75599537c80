"""Signing and publishing desired-state directives (the retained ``desired`` topic), and
the fleet's trust rotations (the retained ``trust`` topic).

Each device has its own monotonically increasing sequence, kept in the hub's SQLite
file, so a restarted hub never reuses one (devices refuse a sequence at or below the
last they accepted). A directive names the bundle by digest and size, and carries
download URLs signed for a limited time (see :func:`hub.api.sign_bundle_url`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.contract.directive import Directive, ModelRef, Probation, SignedDirective
from edge_agent.contract.fields import safe_name
from edge_agent.contract.topics import TRUST_TOPIC, Channel, topic
from edge_agent.contract.trust import Context, RotationChain
from edge_agent.daemon.config import BrokerConfig
from edge_agent.daemon.link import configure_client
from hub.db import open_database
from hub.errors import HubError
from hub.signing import sign


class DirectiveError(HubError):
    """A directive cannot be made or published (no keys, broker unreachable)."""


class DirectiveSigner:
    """Sequences (persisted) and signatures for directives. Thread-safe."""

    def __init__(self, db_path: Path, keys: Sequence[Ed25519PrivateKey]) -> None:
        """Open the sequence table in the hub's database.

        Raises:
            DirectiveError: no signing keys, or the database cannot be opened.
        """
        if not keys:
            raise DirectiveError("no signing keys: this hub cannot sign directives")
        self.keys = list(keys)
        self._lock = threading.Lock()
        self._db = open_database(db_path, label=f"directives {db_path}", error=DirectiveError)

    def next_seq(self, device_id: str) -> int:
        """Reserve the device's next sequence number (durably, before it is used)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO directive_seqs (device_id, seq) VALUES (?, 1)"
                    " ON CONFLICT (device_id) DO UPDATE SET seq = seq + 1",
                    (device_id,),
                )
                row = self._db.execute(
                    "SELECT seq FROM directive_seqs WHERE device_id = ?", (device_id,)
                ).fetchone()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return int(row[0])

    def make(
        self,
        device_id: str,
        model: ModelRef,
        *,
        mode: Literal["active", "shadow"] = "active",
        downgrade: bool = False,
        probation: Probation | None = None,
        ttl_s: int = 7 * 24 * 3600,
        rollout: str | None = None,
        now: float | None = None,
    ) -> SignedDirective:
        """A signed directive for ``device_id`` with the next sequence number.

        Raises:
            ValidationError: the device id or rollout id is not a safe name.
        """
        safe_name(device_id, "device_id")
        issued = int(time.time() if now is None else now)
        directive = Directive(
            device_id=device_id,
            seq=self.next_seq(device_id),
            issued_at=issued,
            expires_at=issued + ttl_s,
            model=model,
            mode=mode,
            downgrade=downgrade,
            probation=probation or Probation(),
            rollout=rollout,
        )
        signatures = sign(Context.DIRECTIVE, directive.signed_bytes(), self.keys)
        return SignedDirective(directive, tuple(signatures))

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()


class DirectivePublisher:
    """Publishes retained directives over MQTT (its own client, QoS 1)."""

    def __init__(
        self,
        host: str,
        port: int,
        username: str | None = None,
        password: str | None = None,
        *,
        tls: bool = False,
        ca_file: Path | None = None,
    ) -> None:
        """Configure; :meth:`start` connects (with ``tls``, verifying the broker against
        ``ca_file`` or the system's CAs)."""
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"edgefleet-hub-directives-{port}",
            protocol=mqtt.MQTTv311,
        )
        configure_client(
            self.client,
            BrokerConfig(host, port, tls, username=username, password=password, ca_file=ca_file),
        )
        self._connected = threading.Event()
        self.client.on_connect = lambda *a: self._connected.set()
        self.client.on_disconnect = lambda *a: self._connected.clear()
        self.host, self.port = host, port

    def start(self, timeout: float = 10.0) -> DirectivePublisher:
        """Connect.

        Raises:
            DirectiveError: the broker cannot be reached.
        """
        self.client.connect_async(self.host, self.port)
        self.client.loop_start()
        if not self._connected.wait(timeout):
            self.client.loop_stop()
            raise DirectiveError(f"cannot reach the broker at {self.host}:{self.port}")
        return self

    def publish(self, signed: SignedDirective, timeout: float = 10.0) -> None:
        """Publish retained on the device's ``desired`` topic; waits for the broker's ack.

        Raises:
            DirectiveError: the broker did not take it in time.
        """
        device = signed.directive.device_id
        info = self.client.publish(
            topic(device, Channel.DESIRED), signed.to_bytes(), qos=1, retain=True
        )
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError) as exc:
            raise DirectiveError(f"directive for {device} not published: {exc}") from exc
        if not info.is_published():
            raise DirectiveError(f"directive for {device} not acknowledged by the broker")

    def publish_trust(self, chain: RotationChain, timeout: float = 10.0) -> None:
        """Publish the rotation chain retained on the fleet's ``trust`` topic; waits for
        the broker's ack.

        Raises:
            DirectiveError: the broker did not take it in time.
        """
        info = self.client.publish(TRUST_TOPIC, chain.to_bytes(), qos=1, retain=True)
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError) as exc:
            raise DirectiveError(f"trust rotations not published: {exc}") from exc
        if not info.is_published():
            raise DirectiveError("trust rotations not acknowledged by the broker")

    def clear(self, device_id: str, timeout: float = 10.0) -> None:
        """Remove the device's retained directive from the broker (an empty retained
        message), as for a revoked device; waits for the broker's ack.

        Raises:
            DirectiveError: the broker did not take it in time.
        """
        info = self.client.publish(topic(device_id, Channel.DESIRED), b"", qos=1, retain=True)
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError) as exc:
            raise DirectiveError(f"directive of {device_id} not cleared: {exc}") from exc
        if not info.is_published():
            raise DirectiveError(f"clearing the directive of {device_id} was not acknowledged")

    def stop(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()
