"""The hub's MQTT side: take what devices publish, store it, acknowledge it end to end.

A relay process (:mod:`hub.mqtt_relay`) holds the MQTT connection and forwards batches
of ``(topic, payload)``; one worker thread here validates every message against the
wire contract (:mod:`edge_agent.contract.messages`), stores metrics in one transaction
per batch through the
:class:`~hub.store.Store`, and then publishes, per device whose highest contiguous
sequence advanced, one retained :class:`~edge_agent.contract.messages.Ack` (QoS 1).

Malformed or oversized payloads, and messages whose payload names another device than
the topic (a device claiming another's id), are counted and logged in one line each;
they never stop the ingest. Messages still queued when :meth:`Ingest.stop` is called
are not acknowledged, so devices send them again.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final

from edge_agent.contract.messages import Ack, Event, EventKind, MetricsMessage, State
from edge_agent.contract.topics import DEVICE_CHANNELS, Channel, fleet_filter, parse_topic, topic
from edge_agent.daemon.config import BrokerConfig
from edge_agent.errors import ValidationError
from hub.errors import HubError
from hub.mqtt_relay import RelayConfig
from hub.plausibility import Limits, MessageJudgement, judge_message
from hub.restamps import ACTION as RESTAMP_AUDIT_ACTION
from hub.store import Restamped, Store, StoreError, StoreOutcome

log = logging.getLogger("edgefleet.hub.ingest")

#: One hub, one persistent MQTT session; hub replicas need their own ids.
DEFAULT_CLIENT_ID: Final = "edgefleet-hub-ingest"
COUNTER_NAMES: Final = (
    "received",
    "stored",
    "duplicates",
    "rejected",
    "malformed",
    "refused_device_mismatch",
    "implausible",
    "clock_skewed",
    "identity_conflicts",
    "store_errors",
    "unknown_model",
    "acks_published",
    "connects",
)


#: At most one ``identity_conflict`` event per device in this many seconds (every sign
#: is still logged and counted).
CONFLICT_EVENT_INTERVAL_S: Final = 300.0
#: Longest event detail the ingest writes.
MAX_DETAIL: Final = 500
#: The audit action of a metrics message stored at the hub's time (see
#: :mod:`hub.plausibility`; written, rate-limited, by :mod:`hub.restamps`).
RESTAMPED_ACTION: Final = RESTAMP_AUDIT_ACTION


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

    The MQTT client runs in a child process (:mod:`hub.mqtt_relay`) so that receiving
    and storing use two cores; a worker thread here validates and stores each batch it
    forwards and sends back the acks to publish. A relay that dies is restarted.
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
        flush_interval_s: float = 0.02,
        *,
        client_id: str | None = None,
        clock: Callable[[], float] = time.time,
        tls: bool = False,
        ca_file: Path | None = None,
        known_version: Callable[[str, int], bool] | None = None,
        limits: Limits | None = None,
        on_refused: Callable[[str, str, str], object] | None = None,
        on_restamped: Callable[[str, dict[str, object]], object] | None = None,
    ) -> None:
        """Configure (but do not start) the ingest. With ``tls``, the broker's certificate
        is verified against ``ca_file`` (or the system's CAs). ``known_version`` (the
        registry's) tells windows of unregistered model versions apart: they are stored
        (the device's data is not lost, and its acks keep flowing) but counted as
        ``unknown_model`` and logged once per version, since nothing can score them.
        Metrics a device cannot have counted (see :mod:`hub.plausibility`, ``limits``)
        are refused, logged in one line and counted per device (:meth:`implausible`).
        ``on_refused(topic, kind, reason)`` is called for every refused message
        (``malformed``, ``device_mismatch``, ``implausible``): the hub's
        :class:`~hub.refusals.RefusalLog` makes them visible in the audit log.
        Metrics whose windows end more than ``limits.max_clock_skew_s`` after the hub's
        clock (a device clock that ran ahead) are stored at the hub's arrival time
        instead (:func:`hub.plausibility.judge_message`); each such message stored is
        logged in one line, counted per device (:meth:`clock_skewed`) and passed to
        ``on_restamped(device, details)`` (the hub appends an ``ingest.restamped``
        audit entry: details name the sequence range, the original end and the shift).

        Raises:
            ValueError: ``batch_max`` < 1 or ``flush_interval_s`` < 0.
        """
        if batch_max < 1 or flush_interval_s < 0:
            raise ValueError("ingest: batch_max must be >= 1 and flush_interval_s >= 0")
        self.store = store
        self.host, self.port = host, port
        self._known_version = known_version
        self._limits = limits or Limits()
        self._on_refused = on_refused
        self._on_restamped = on_restamped
        self._implausible: dict[str, int] = {}
        self._clock_skewed: dict[str, int] = {}
        self._known: set[tuple[str, int]] = set()
        self._warned: set[tuple[str, int]] = set()
        self._config = RelayConfig(
            broker=BrokerConfig(
                host=host,
                port=port,
                tls=tls,
                username=username,
                password=password,
                ca_file=ca_file,
            ),
            client_id=client_id or DEFAULT_CLIENT_ID,
            subscriptions=tuple((fleet_filter(c), 1) for c in DEVICE_CHANNELS),
            batch_max=batch_max,
            flush_interval_s=flush_interval_s,
        )
        self._clock = clock
        self._cond = threading.Condition()
        self._counts = dict.fromkeys(COUNTER_NAMES, 0)
        self._acked: dict[tuple[str, str], int] = {}  # (device, epoch) -> seq
        self._current: dict[str, str] = {}  # device -> its current epoch
        self._conflict_at: dict[str, float] = {}  # device -> last identity_conflict event
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._worker: threading.Thread | None = None
        self._conn: Connection | None = None
        self._relay: subprocess.Popen[bytes] | None = None

    # --- life cycle -------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> Ingest:
        """Start the relay process and the worker; returns once subscribed.

        Raises:
            IngestError: already started, or no connection within ``timeout``.
        """
        if self._worker is not None:
            raise IngestError("ingest: already started")
        self._stop.clear()
        self._spawn_relay()
        self._worker = threading.Thread(target=self._run, name="hub-ingest", daemon=True)
        self._worker.start()
        if not self._connected.wait(timeout):
            self.stop()
            raise IngestError(f"ingest: no MQTT connection to {self.host}:{self.port}")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the worker (after its current batch) and the relay; idempotent."""
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout)
            self._worker = None
        self._stop_relay(timeout)
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

    def implausible(self) -> dict[str, int]:
        """How many implausible metrics messages each device sent (refused, not stored)."""
        with self._cond:
            return dict(self._implausible)

    def clock_skewed(self) -> dict[str, int]:
        """How many metrics messages of each device were stored restamped to the hub's
        clock (their windows ended more than a day in the future)."""
        with self._cond:
            return dict(self._clock_skewed)

    def counters(self) -> dict[str, int]:
        """A snapshot of the counters (names in :data:`COUNTER_NAMES`)."""
        with self._cond:
            return dict(self._counts)

    def acked(self, device_id: str) -> int:
        """The last sequence acknowledged to the device by this ingest (0: none yet), in
        the numbering of the device's current epoch."""
        with self._cond:
            return self._acked.get((device_id, self._current.get(device_id, "")), 0)

    def _advances(self, key: tuple[str, str], seq: int) -> bool:
        """Whether ``seq`` says more than the last ack published for the (device, epoch)
        ``key`` (caller holds the lock)."""
        last = self._acked.get(key)
        return last is None or seq > last

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

    def wait_until_acked(
        self, device_id: str, seq: int, timeout: float, epoch: str | None = None
    ) -> bool:
        """Block until the device was acknowledged up to ``seq`` (in ``epoch``; default:
        its current one); False on timeout."""
        deadline = time.monotonic() + timeout

        def done() -> bool:
            e = self._current.get(device_id, "") if epoch is None else epoch
            return self._acked.get((device_id, e), 0) >= seq

        with self._cond:
            while not done():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    # --- the relay process ------------------------------------------------------------

    def _spawn_relay(self) -> None:
        # A plain child interpreter on a socket pair (not multiprocessing's spawn, which
        # re-runs the caller's main module: scripts without a __main__ guard would break).
        ours, theirs = socket.socketpair()
        relay = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "hub.mqtt_relay", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        conn = Connection(ours.detach())
        conn.send(("config", self._config))
        self._conn, self._relay = conn, relay

    def _stop_relay(self, timeout: float) -> None:
        conn, relay = self._conn, self._relay
        self._conn = self._relay = None
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.send(("stop",))
        if relay is not None:
            try:
                relay.wait(timeout)
            except subprocess.TimeoutExpired:
                relay.kill()
                relay.wait(timeout)
        if conn is not None:
            conn.close()

    def _publish_acks(self, messages: list[tuple[str, bytes]]) -> bool:
        """Have the relay publish retained QoS 1 acks, in one hand-off; False if it is gone."""
        conn = self._conn
        if conn is None:
            return False
        try:
            conn.send(("publish_retained", messages))
        except OSError:
            return False
        return True

    # --- the worker -------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            conn = self._conn
            try:
                if conn is None or not conn.poll(0.2):
                    continue
                message = conn.recv()
            except (EOFError, OSError):
                if not self._stop.is_set():
                    self._restart_relay()
                continue
            try:
                self._dispatch(message)
            except Exception:  # never let one batch end the ingest
                log.exception("ingest: a message from the relay failed")

    def _restart_relay(self) -> None:
        code = self._relay.poll() if self._relay is not None else None
        log.error("ingest: the MQTT relay process died (exit code %s); restarting it", code)
        self._connected.clear()
        with self._cond:
            self._cond.notify_all()
        self._stop_relay(1.0)
        if not self._stop.wait(1.0):
            self._spawn_relay()

    def _dispatch(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "batch":
            self.process(message[1])
        elif kind == "connected":
            self._connected.set()
            with self._cond:
                self._counts["connects"] += 1
                self._cond.notify_all()
            log.info("ingest: connected to %s:%d and subscribed", self.host, self.port)
        elif kind == "disconnected":
            self._connected.clear()
            with self._cond:
                self._cond.notify_all()
            log.warning("ingest: disconnected (%s); reconnecting", message[1])
        elif kind == "refused":
            log.warning("ingest: broker refused the connection: %s", message[1])

    def _unknown_versions(self, m: MetricsMessage) -> int:
        """How many of the message's windows are of a version the registry lacks."""
        if self._known_version is None:
            return 0
        unknown = 0
        for w in m.windows:
            key = (w.model_name, w.model_version)
            if key in self._known:
                continue
            if self._known_version(*key):
                self._known.add(key)
                continue
            unknown += 1
            if key not in self._warned:
                self._warned.add(key)
                log.warning(
                    "ingest: %s reports windows of %s v%d, which the registry does not know:"
                    " stored, but not scored until that version is registered",
                    m.device_id, *key,
                )  # fmt: skip
        return unknown

    def _refused(self, topic_name: str, kind: str, reason: str) -> None:
        if self._on_refused is not None:
            try:
                self._on_refused(topic_name, kind, reason)
            except Exception:  # a refusal's record must never stop the ingest
                log.exception("ingest: recording a refusal failed")

    def process(self, batch: Sequence[tuple[str, bytes]]) -> None:
        """Validate, store and acknowledge one batch of ``(topic, payload)`` (worker thread).

        Store failures are logged and counted; the devices resend what was not acked.
        """
        counts = dict.fromkeys(COUNTER_NAMES, 0)
        counts["received"] = len(batch)
        metrics: list[MetricsMessage | Restamped] = []
        judged: list[MessageJudgement] = []  # one per entry of metrics
        for topic_name, payload in batch:
            try:
                parsed = parse_message(topic_name, payload)
            except DeviceMismatchError as exc:
                counts["refused_device_mismatch"] += 1
                log.warning("ingest: refused: %s", exc)
                self._refused(topic_name, "device_mismatch", str(exc))
                continue
            except ValidationError as exc:
                counts["malformed"] += 1
                log.warning("ingest: malformed message on %r: %s", topic_name[:200], exc)
                self._refused(topic_name, "malformed", str(exc))
                continue
            message = parsed.message
            judgement = MessageJudgement()
            if isinstance(message, MetricsMessage):
                judgement = judge_message(message, self._limits, self._clock())
                problem = judgement.problem
                if problem is not None:
                    counts["implausible"] += 1
                    with self._cond:
                        self._implausible[message.device_id] = (
                            self._implausible.get(message.device_id, 0) + 1
                        )
                    log.warning("ingest: refused implausible metrics: %s", problem)
                    self._refused(topic_name, "implausible", str(problem))
                    continue
            try:
                if isinstance(message, MetricsMessage):
                    if judgement.windows is not None:
                        metrics.append(Restamped(message, judgement.windows))
                    else:
                        metrics.append(message)
                    judged.append(judgement)
                    counts["unknown_model"] += self._unknown_versions(message)
                elif isinstance(message, State):
                    self.store.record_state(message, self._clock())
                else:
                    self.store.record_event(message)
            except StoreError as exc:
                counts["store_errors"] += 1
                log.error("ingest: %s", exc)
        acks: dict[tuple[str, str], int] = {}
        conflicts: tuple[tuple[str, str], ...] = ()
        if metrics:
            try:
                result = self.store.store_metrics_batch(metrics)
            except StoreError as exc:
                counts["store_errors"] += 1
                log.error("ingest: %d metrics message(s) not stored: %s", len(metrics), exc)
            else:
                counts["stored"] += result.count(StoreOutcome.STORED)
                counts["duplicates"] += result.count(StoreOutcome.DUPLICATE)
                counts["rejected"] += result.count(StoreOutcome.REJECTED)
                counts["clock_skewed"] += self._report_restamped(metrics, judged, result.outcomes)
                conflicts = result.conflicts
                with self._cond:
                    acks = {k: a for k, a in result.acks.items() if self._advances(k, a)}
                    self._current.update(result.current)
        counts["identity_conflicts"] += self._report_conflicts(conflicts)
        out = [
            (topic(d, Channel.ACK), Ack(d, seq, epoch).to_bytes())
            for (d, epoch), seq in acks.items()
        ]
        published = acks if acks and self._publish_acks(out) else {}
        counts["acks_published"] = len(published)
        with self._cond:
            for name, n in counts.items():
                self._counts[name] += n
            self._acked.update(published)
            self._cond.notify_all()

    def _report_restamped(
        self,
        metrics: Sequence[MetricsMessage | Restamped],
        judged: Sequence[MessageJudgement],
        outcomes: Sequence[StoreOutcome],
    ) -> int:
        """Log, count per device and audit every message stored restamped to the hub's
        clock (a resend of one already stored is a duplicate: not again); returns how
        many there were."""
        stored = 0
        for item, judgement, outcome in zip(metrics, judged, outcomes, strict=True):
            if not isinstance(item, Restamped) or outcome is not StoreOutcome.STORED:
                continue
            stored += 1
            m = item.message
            log.warning(
                "ingest: %s [%d, %d] ends %.0f s in the future by the hub's clock (over %.0f s):"
                " stored at the hub's arrival time, shifted by %.0f s",
                m.device_id, m.seq_lo, m.seq_hi, -judgement.shift_s,
                self._limits.max_clock_skew_s, judgement.shift_s,
            )  # fmt: skip
            with self._cond:
                self._clock_skewed[m.device_id] = self._clock_skewed.get(m.device_id, 0) + 1
            if self._on_restamped is not None:
                details: dict[str, object] = {
                    "epoch": m.epoch,
                    "seq_lo": m.seq_lo,
                    "seq_hi": m.seq_hi,
                    "original_end": judgement.original_end,
                    "shift_s": judgement.shift_s,
                }
                try:
                    self._on_restamped(m.device_id, details)
                except Exception:  # a correction's record must never stop the ingest
                    log.exception("ingest: recording a restamped message failed")
        return stored

    def _report_conflicts(self, conflicts: Sequence[tuple[str, str]]) -> int:
        """Log every sign of two devices under one id, and record an ``identity_conflict``
        event per device at most once per :data:`CONFLICT_EVENT_INTERVAL_S`; returns how
        many signs there were."""
        now = self._clock()
        for device_id, line in conflicts:
            log.warning("ingest: identity conflict on %s: %s", device_id, line)
            last = self._conflict_at.get(device_id)
            if last is not None and 0 <= now - last < CONFLICT_EVENT_INTERVAL_S:
                continue
            self._conflict_at[device_id] = now
            try:
                self.store.record_event(
                    Event(device_id, now, EventKind.IDENTITY_CONFLICT, line[:MAX_DETAIL])
                )
            except StoreError as exc:
                log.error("ingest: %s", exc)
        return len(conflicts)
