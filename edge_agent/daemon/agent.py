"""The agent daemon: reconcile signed directives, serve predictions, report and buffer.

Threads, and what each may touch:

- the **agent thread** owns the outbox, publishes state/events/metrics, handles what
  MQTT delivers (directives, acks, trust rotations, reconnects), closes monitoring
  windows on time and decides probation;
- the **deploy thread** downloads, verifies, smoke-tests and activates bundles, one
  directive at a time (a newer directive cancels the download in progress);
- paho's network thread only enqueues (see :mod:`edge_agent.daemon.link`);
- callers of :meth:`Agent.predict` (local apps, the loopback HTTP API) run the model.

What is on disk (``data_dir``, mode 0700) is enough to restart into the same state:
the last accepted directive, the slot pointer, the outbox, the adopted trust rotations.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import shutil
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from edge_agent import __version__
from edge_agent.contract.directive import (
    Directive,
    DirectiveRefusedError,
    Refusal,
    accept_directive,
)
from edge_agent.contract.messages import (
    Ack,
    Event,
    EventKind,
    Health,
    MetricsMessage,
    ModelVersion,
    State,
)
from edge_agent.contract.topics import Channel
from edge_agent.contract.trust import RotationChain, TrustRoot
from edge_agent.contract.window import MetricsWindow
from edge_agent.daemon.config import AgentConfig
from edge_agent.daemon.link import CONNECTED, Incoming, MqttLink
from edge_agent.daemon.local_api import LocalApi
from edge_agent.daemon.outbox import Outbox
from edge_agent.daemon.pinned import PinnedTrust
from edge_agent.daemon.probation import ProbationMonitor, ProbationVerdict
from edge_agent.daemon.slots import Pointer, ProbationRecord, SlotRef, SlotStore
from edge_agent.durable import read_json, write_json_atomic
from edge_agent.errors import (
    ActivationError,
    DownloadError,
    EdgeFleetError,
    OutboxError,
    ValidationError,
)
from edge_agent.inference.prediction import Prediction
from edge_agent.inference.serving import Predictor, ServingModel
from edge_agent.inference.tensor_bytes import tensor_from_bytes

log = logging.getLogger("edgefleet.agent")


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's per-thread malloc arenas (a daemon's RSS grows with each thread's arena).

    Same as ``MALLOC_ARENA_MAX``; a no-op where glibc is not the C library.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):
        return


def skip_httpx_cli() -> None:
    """Keep httpx from importing its command line when the agent first downloads.

    ``import httpx`` also imports ``httpx._main`` (click, rich, pygments: about 4 MB
    resident for the daemon's lifetime) whenever those are installed; the agent only
    uses the client. Marking ``httpx._main`` unimportable makes httpx fall back to its
    stub ``main``. Does nothing once httpx is imported (another user may want its CLI).
    """
    if "httpx" not in sys.modules:
        sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


def trim_malloc() -> bool:
    """Collect garbage, then hand freed C heap back to the kernel (glibc ``malloc_trim(0)``).

    Loading a model, verifying a bundle and importing modules leave freed but still
    resident pages in the malloc arenas; a daemon that then serves for months keeps them
    counted in its RSS. Called after startup and after each activation. Never raises:
    returns False where glibc is not the C library (nothing to do there).
    """
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True


#: Windows published per drain step; the rest follow as acks arrive.
DRAIN_BATCH = 500


@dataclass(frozen=True)
class Plan:
    """What the deploy thread must do for a directive (see :func:`plan`)."""

    action: str  # "nothing" | "activate" | "shadow"
    reason: str = ""


def directive_retry_backoff(failures: int, base_s: float = 5.0) -> float:
    """Seconds before the agent tries a directive whose download failed ``failures``
    (>= 1) times in a row again: ``base_s`` doubling up to 5 minutes, with jitter so a
    fleet that lost its hub does not come back in lockstep."""
    step = min(300.0, base_s * 2.0 ** min(max(failures, 1) - 1, 16))
    return step * (0.5 + 0.5 * random.random())  # noqa: S311  (jitter, not a secret)


def plan(d: Directive, pointer: Pointer, failed_seq: int | None) -> Plan:
    """Decide what a directive asks of this device, given what is installed. Pure."""
    if failed_seq == d.seq:
        return Plan("nothing", f"seq {d.seq} already failed here")
    active = pointer.active
    if d.mode == "active":
        if active is not None and active.sha256 == d.model.sha256:
            return Plan("nothing", "already active")
        return Plan("activate")
    if active is not None and active.sha256 == d.model.sha256:
        return Plan("nothing", "already the active model")
    if pointer.shadow is not None and pointer.shadow.sha256 == d.model.sha256:
        return Plan("nothing", "already in shadow")
    return Plan("shadow")


class Agent:
    """One device's agent. Use :meth:`start` / :meth:`stop`, or as a context manager."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        local_api: bool = True,
    ) -> None:
        """Prepare the agent (nothing runs before :meth:`start`).

        The trust root is the pinned trust file with the rotations adopted since
        (:class:`edge_agent.daemon.pinned.PinnedTrust`).

        Raises:
            ValidationError: the trust file is malformed.
            OSError: the data directory or trust file cannot be used.
        """
        self.config = config
        self.device_id = config.device_id
        self.clock = clock
        self.monotonic = monotonic
        config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.pinned = PinnedTrust.load(config.trust_file, config.data_dir)
        self.slots = SlotStore(config.data_dir, self.pinned.root, self.pinned.retired)
        self.downloads = config.data_dir / "downloads"
        self.downloads.mkdir(mode=0o700, exist_ok=True)
        self.state_path = config.data_dir / "agent-state.json"
        self.predictor = Predictor()
        self.inbox: queue.Queue[Incoming] = queue.Queue()
        self.link = MqttLink(config.device_id, config.broker, self.inbox)
        self.outbox: Outbox | None = None
        self._deploy_lock = threading.RLock()
        self._desired: Directive | None = None
        self._desired_changed = threading.Event()
        # The last directive refused as untrusted: a rotation adopted later may make it
        # trusted (its retained message can arrive before the rotation's).
        self._untrusted_payload = b""
        self._cancel = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # Groups of windows closed together (one outbox row each), not yet stored.
        self._pending_windows: list[list[MetricsWindow]] = []  # agent thread only
        self._handoff: queue.SimpleQueue[list[MetricsWindow]] = queue.SimpleQueue()
        self._sent_up_to = 0
        self._acked = 0
        self._acked_applied = 0
        self._epoch = ""  # the outbox's, once started
        self._drained = threading.Condition()
        self._last_ack_progress = monotonic()
        self._last_state = 0.0
        self._started = monotonic()
        self._last_error = ""
        self._with_local_api = local_api
        self.local_api: LocalApi | None = None
        saved = read_json(self.state_path, {})
        self._last_seq: int = int(saved.get("last_seq", 0))
        self._accepted_payload: bytes = str(saved.get("directive", "")).encode()
        self._failed_seq: int | None = saved.get("failed_seq")
        # A download that failed (network, TLS, a full disk) is retried with back-off; a
        # bundle that failed verification or its smoke test is not (``_failed_seq``).
        self._download_failures = 0
        self._retry_at: float | None = None
        # What the outbox's checkpoint holds (model key and counts per window; () for
        # none), so an unchanged checkpoint is not written again.
        self._checkpointed: tuple[tuple[Any, ...], ...] = ()

    # --- public API --------------------------------------------------------------------

    def predict(
        self, inputs: Any, shape: Sequence[int] | str | None = None, dtype: str = "float32"
    ) -> Prediction:
        """Run the active model on one sample (the schema's sample shape, ``[F]`` for a
        tabular model) or a batch (a leading batch dimension): NumPy arrays, nested lists,
        or raw little-endian tensor bytes (``bytes``/``bytearray``/``memoryview``, C order)
        with their ``shape`` and ``dtype`` (one of
        :data:`edge_agent.inference.tensor_bytes.DTYPES`).

        Raises:
            PredictionError: no model is active, invalid inputs (for raw bytes also: no
                shape, an unknown dtype, or a byte length that is not the shape's), or the
                model failed.
        """
        if shape is not None or (
            type(inputs) is not np.ndarray  # the hot path: one identity test
            and isinstance(inputs, bytes | bytearray | memoryview)
        ):
            inputs = tensor_from_bytes(inputs, shape, dtype)
        return self.predictor.predict(inputs)

    def close_window(self, timeout: float = 10.0) -> bool:
        """Close the current monitoring windows now; they are stored, then sent as usual.

        Returns once they are in the outbox (False if that took over ``timeout``).
        """
        done = threading.Event()
        self.inbox.put(Incoming(None, b"close", done=done))
        return done.wait(timeout)

    @property
    def trust(self) -> TrustRoot:
        """The trust root bundles and directives must be signed by now."""
        return self.pinned.root

    @property
    def active_version(self) -> ModelVersion | None:
        """The model version serving predictions now."""
        active = self.predictor.active
        return active.version if active else None

    def start(self) -> Agent:
        """Restore state from disk, then connect and serve.

        Raises:
            OSError: the outbox or the local API port cannot be opened.
        """
        # httpx logs every request's full URL at INFO; a bundle URL carries its signature
        # (a bearer credential). The agent logs its downloads itself, by bundle hash.
        logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger("httpx").level))
        self.outbox = Outbox(self.config.data_dir / "outbox.db", self.config.outbox_budget_bytes)
        restored = self.outbox.restore_checkpoint()
        if restored:
            log.warning(
                "agent: the last run did not stop cleanly; %d group(s) of windows "
                "recovered from its checkpoint", restored,
            )  # fmt: skip
        self._epoch = self.outbox.epoch
        self._acked = self._acked_applied = 0
        self._restore_models()
        if self._accepted_payload:
            with contextlib.suppress(EdgeFleetError):
                self._set_desired(self._parse_stored_directive())
        if self._with_local_api and self.config.local_api_port >= 0:
            self.local_api = LocalApi(
                self.predict, self.health, self.model_info, self.config.local_api_port
            )
            self.local_api.start()
        for name, target in (("agent", self._agent_loop), ("deploy", self._deploy_loop)):
            thread = threading.Thread(target=target, name=f"edgefleet-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self.link.start()
        trim_malloc()  # what loading the stored models and starting up freed
        return self

    def stop(self) -> None:
        """Close the current windows into the outbox, go offline cleanly, stop threads."""
        self._stop.set()
        self._cancel.set()
        self._desired_changed.set()
        self.inbox.put(Incoming(None, b"stop"))
        for thread in self._threads:
            thread.join(10)
        self._store_windows(self.predictor.close_windows(self.clock()))
        self.link.stop()
        if self.local_api is not None:
            self.local_api.stop()
        with contextlib.suppress(OSError, EdgeFleetError):
            self.slots.write(replace(self.slots.pointer(), running=False))  # a clean stop
        if self.outbox is not None:
            self.outbox.close()

    def __enter__(self) -> Agent:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def health(self) -> dict[str, Any]:
        """The state this agent reports, as JSON (also served at ``/v1/health``), with
        ``online`` saying whether the broker link is up right now."""
        import json

        doc = dict(json.loads(self._state().to_bytes()))
        doc["online"] = self.link.connected.is_set()
        return doc

    def model_info(self) -> dict[str, Any] | None:
        """The active model and its input schema (``/v1/model``), or None."""
        active = self.predictor.active
        if active is None:
            return None
        return {"model": active.version.to_json(), "schema": active.schema.to_json()}

    # --- restoring after a restart -------------------------------------------------------

    def _restore_models(self) -> None:
        pointer = self.slots.pointer()
        if pointer.running and pointer.probation is not None:
            crashes = pointer.probation.crashes + 1
            record = replace(pointer.probation, crashes=crashes)
            pointer = replace(pointer, probation=record)
            self.slots.write(pointer)
            limit = self._stored_gates_max_crashes()
            log.warning(
                "agent: restarted after a crash during probation (%d of %d)", crashes, limit
            )
            if crashes >= limit and pointer.previous is not None:
                self._rollback(f"{crashes} crashes while on probation", record.directive_seq)
                pointer = self.slots.pointer()
        if pointer.active is not None:
            try:
                serving = ServingModel(
                    self.slots.load(pointer.active), pointer.active.model, clock=self.clock
                )
            except ActivationError as exc:
                log.error("agent: active model unusable (%s); falling back to previous", exc)
                self._last_error = str(exc)
                if pointer.previous is None:
                    serving = None
                else:
                    self.slots.rollback()
                    pointer = self.slots.pointer()
                    serving = (
                        ServingModel(
                            self.slots.load(pointer.active), pointer.active.model, clock=self.clock
                        )
                        if pointer.active
                        else None
                    )
            self.predictor.active = serving
        if pointer.shadow is not None:
            try:
                self.predictor.shadow = ServingModel(
                    self.slots.load(pointer.shadow), pointer.shadow.model, "shadow", self.clock
                )
            except ActivationError as exc:
                log.error("agent: shadow model unusable (%s); shadow stopped", exc)
                self.slots.set_shadow(None)
        if pointer.probation is not None and self.predictor.active is not None:
            directive = self._stored_directive_or_none()
            gates = directive.probation if directive else None
            if gates is not None:
                self.predictor.probation = ProbationMonitor(gates, self.monotonic())
        self.slots.write(replace(self.slots.pointer(), running=True))

    def _parse_stored_directive(self) -> Directive:
        from edge_agent.contract.canonical import parse_json

        return Directive.from_json(
            parse_json(self._accepted_payload, "stored directive")["directive"]
        )

    def _stored_directive_or_none(self) -> Directive | None:
        try:
            return self._parse_stored_directive() if self._accepted_payload else None
        except EdgeFleetError:
            return None

    def _stored_gates_max_crashes(self) -> int:
        directive = self._stored_directive_or_none()
        return directive.probation.max_crashes if directive else 2

    def _save_state(self) -> None:
        write_json_atomic(
            self.state_path,
            {
                "last_seq": self._last_seq,
                "directive": self._accepted_payload.decode(),
                "failed_seq": self._failed_seq,
            },
        )

    # --- the agent thread ----------------------------------------------------------------

    def _agent_loop(self) -> None:
        next_window = self.monotonic() + self.config.window_s
        every = self.config.checkpoint_s
        next_checkpoint = self.monotonic() + every if every > 0 else float("inf")
        while not self._stop.is_set():
            timeout = max(0.0, min(next_window - self.monotonic(), 1.0))
            try:
                item = self.inbox.get(timeout=timeout)
            except queue.Empty:
                item = None
            try:
                if item is not None:
                    self._handle(item)
                if self.inbox.empty():
                    self._apply_acks()
                now = self.monotonic()
                if now >= next_window:
                    next_window = now + self.config.window_s
                    self._store_windows(self.predictor.close_windows(self.clock()))
                    self._drain()
                elif now >= next_checkpoint:
                    self._checkpoint()
                if now >= next_checkpoint:
                    next_checkpoint = now + every
                self._check_probation()
                if now - self._last_state >= self.config.state_interval_s:
                    self._publish_state()
                if (
                    self._sent_up_to > self._acked
                    and now - self._last_ack_progress > self.config.resend_after_s
                ):
                    self._sent_up_to = self._acked  # the hub lost some: send again
                    self._last_ack_progress = now
                    self._drain()
            except Exception:  # the loop must survive anything; say what happened
                log.exception("agent: unexpected error in the agent loop")

    def _handle(self, item: Incoming) -> None:
        if item is CONNECTED:
            self._sent_up_to = self._acked  # resend whatever the latest ack does not cover
            self._publish_state()
            self._drain()
        elif item.channel is Channel.DESIRED:
            self._on_directive(item.payload)
        elif item.channel is Channel.ACK:
            self._on_ack(item.payload)
        elif item.channel is Channel.TRUST:
            self._on_rotations(item.payload)
        elif item.channel is None and item.payload == b"windows":
            self._store_windows([])
            self._drain()
        elif item.channel is None and item.payload == b"close":
            self._store_windows(self.predictor.close_windows(self.clock()))
            self._drain()
            if item.done is not None:
                item.done.set()
        elif item.channel is None and item.payload == b"state":
            self._publish_state()

    def _on_directive(self, payload: bytes) -> None:
        if not payload:
            return  # retained directive cleared by the hub: keep serving what we have
        if payload == self._accepted_payload:
            return  # the same retained directive again (reconnect): nothing new
        installed = self.predictor.active.version if self.predictor.active else None
        try:
            directive = accept_directive(
                payload,
                trust=self.trust,
                device_id=self.device_id,
                now=self.clock(),
                last_seq=self._last_seq,
                installed_version=installed.version if installed else None,
                installed_name=installed.name if installed else None,
            )
        except DirectiveRefusedError as exc:
            log.warning("agent: %s", exc)
            self._last_error = str(exc)
            self._event(EventKind.REFUSED, str(exc), seq=exc.seq)
            self._untrusted_payload = payload if exc.reason is Refusal.UNTRUSTED else b""
            return
        self._untrusted_payload = b""
        self._last_seq = directive.seq
        self._accepted_payload = payload
        self._save_state()
        m = directive.model
        self._event(
            EventKind.RECEIVED,
            f"{directive.mode} {m.name} v{m.version}",
            ModelVersion(m.name, m.version, m.sha256),
            directive.seq,
        )
        self._set_desired(directive)

    def _on_rotations(self, payload: bytes) -> None:
        """Adopt the rotations of the hub's retained chain that follow the current root.

        A record that does not verify is refused (a ``refused`` event) and changes
        nothing; records at or below the current version are ignored.
        """
        if not payload:
            return
        before = self.pinned.root.version
        try:
            step = self.pinned.adopt(RotationChain.from_bytes(payload))
        except ValidationError as exc:
            self._refuse_rotation(f"rotation: {exc}")
            return
        except OSError as exc:  # not stored, so not adopted: the retained chain comes again
            log.error("agent: cannot store the trust rotation: %s", exc)
            self._last_error = f"cannot store the trust rotation: {exc}"
            return
        if step.adopted:
            with self._deploy_lock:
                self.slots.trust, self.slots.retired = self.pinned.root, self.pinned.retired
            now = self.pinned.root
            log.warning("agent: trust rotated from version %d to %d", before, now.version)
            self._event(
                EventKind.TRUST_ROTATED,
                f"trust version {before} -> {now.version} ({now.threshold} of {len(now.keys)})",
            )
            if self._untrusted_payload:  # signed by the new keys, it arrived first
                self._on_directive(self._untrusted_payload)
        if step.refused:
            self._refuse_rotation(step.refused)

    def _refuse_rotation(self, reason: str) -> None:
        line = reason.splitlines()[0] if reason else "rotation refused"
        log.warning("agent: refused %s", line)
        self._last_error = line
        self._event(EventKind.REFUSED, line)

    def _on_ack(self, payload: bytes) -> None:
        try:
            ack = Ack.from_bytes(payload)
        except ValidationError as exc:
            log.warning("agent: ignored malformed ack: %s", exc)
            return
        if ack.device_id != self.device_id:
            return
        if ack.epoch != self._epoch:  # meant for this device id's earlier sequence space
            log.warning("agent: ignored an ack for epoch %r (ours is %r)", ack.epoch, self._epoch)
            return
        if ack.seq > self._acked:
            self._acked = ack.seq  # applied once the burst of acks is read (_apply_acks)
            self._last_ack_progress = self.monotonic()

    def _apply_acks(self) -> None:
        """Delete acknowledged rows and send more: once per burst of acks, not per ack."""
        if self.outbox is None or self._acked <= self._acked_applied:
            return
        self.outbox.ack(self._acked)
        self._acked_applied = self._acked
        self._drain()
        with self._drained:
            self._drained.notify_all()

    def wait_for_drain(self, timeout: float) -> bool:
        """Block until the hub acknowledged every stored window; False on timeout."""
        deadline = self.monotonic() + timeout
        with self._drained:
            while self.outbox is not None and self.outbox.depth() > 0:
                left = deadline - self.monotonic()
                if left <= 0 or self._stop.is_set():
                    return False
                self._drained.wait(min(left, 1.0))
        return True

    def _checkpoint(self) -> None:
        """Save what a kill -9 would lose: closed windows not stored yet and the open
        ones as they are now (agent thread; every append deletes the checkpoint)."""
        if self.outbox is None:
            return
        self._store_windows([])  # windows closed meanwhile (an activation) go in first
        open_now = self.predictor.peek_windows(self.clock())
        groups = [*self._pending_windows, *([open_now] if open_now else [])]
        signature = tuple(
            (w.key, w.n, sum(w.errors.values()), w.compared) for g in groups for w in g
        )
        if signature == self._checkpointed:
            return  # nothing counted since the last one: no write (an SD card's wear)
        try:
            self.outbox.checkpoint(groups)
        except (OutboxError, ValidationError) as exc:
            log.warning("agent: checkpoint not saved: %s", exc)
            return
        self._checkpointed = signature

    def _store_windows(self, windows: list[MetricsWindow]) -> None:
        """Append windows closed together as one outbox row; keep them in memory if it cannot."""
        while not self._handoff.empty():
            self._pending_windows.append(self._handoff.get())
        if windows:
            self._pending_windows.append(windows)
        if self.outbox is None:
            return
        backlog = self._pending_windows
        self._pending_windows = []
        if backlog:
            self._checkpointed = ()  # an append deletes the stored checkpoint
        for i, group in enumerate(backlog):
            try:
                self.outbox.append(group)
            except OutboxError as exc:
                log.error("agent: outbox: %s; %d window(s) kept in memory", exc, len(backlog) - i)
                self._last_error = str(exc)
                self._pending_windows = backlog[i:]
                return

    def _drain(self) -> None:
        if self.outbox is None or not self.link.connected.is_set():
            return
        after = max(self._sent_up_to, self._acked)
        rows = self.outbox.pending(limit=DRAIN_BATCH, after=after)
        if rows and after == self._acked:
            self._last_ack_progress = self.monotonic()  # the resend timer starts at this send
        for row in rows:
            payload = MetricsMessage.splice(
                self.device_id, row.seq_lo, row.seq_hi, row.payload, self._epoch
            )
            if self.link.publish(Channel.METRICS, payload) is None:
                return
            self._sent_up_to = row.seq_hi

    def _publish_state(self) -> None:
        self._last_state = self.monotonic()
        if self.link.connected.is_set():
            self.link.publish(Channel.STATE, self._state().to_bytes(), retain=True)

    def _state(self) -> State:
        pointer = self.slots.pointer()
        shadow = self.predictor.shadow
        probation = "none"
        if self.predictor.probation is not None:
            probation = "running"
        return State(
            device_id=self.device_id,
            online=True,
            ts=self.clock(),
            agent_version=__version__,
            active=self.active_version,
            previous=pointer.previous.model if pointer.previous else None,
            shadow=shadow.version if shadow else None,
            probation=probation,
            directive_seq=self._last_seq,
            health=self._health(),
            buffer_depth=self.outbox.depth() if self.outbox else 0,
            buffer_bytes=self.outbox.size_bytes() if self.outbox else 0,
            compactions=self.outbox.compactions if self.outbox else 0,
            last_error=self._last_error,
        )

    def _health(self) -> Health:
        try:
            import psutil

            proc = psutil.Process()
            cpu = float(proc.cpu_percent(interval=None))
            rss = int(proc.memory_info().rss)
        except ImportError:
            cpu, rss = 0.0, 0
        return Health(
            cpu_percent=cpu,
            rss_bytes=rss,
            disk_free_bytes=shutil.disk_usage(self.config.data_dir).free,
            uptime_s=round(self.monotonic() - self._started, 3),
        )

    def _event(
        self,
        kind: EventKind,
        detail: str = "",
        model: ModelVersion | None = None,
        seq: int | None = None,
        progress: float | None = None,
    ) -> None:
        event = Event(self.device_id, self.clock(), kind, detail[:1000], model, seq, progress)
        self.link.publish(Channel.EVENTS, event.to_bytes())

    def _check_probation(self) -> None:
        monitor = self.predictor.probation
        if not isinstance(monitor, ProbationMonitor):  # none running (the agent sets it)
            return
        outcome = monitor.outcome(self.monotonic())
        if outcome.verdict is ProbationVerdict.RUNNING:
            return
        seq = self.slots.pointer().probation
        directive_seq = seq.directive_seq if seq else None
        with self._deploy_lock:
            if outcome.verdict is ProbationVerdict.PASSED:
                self.slots.end_probation()
                self.predictor.probation = None
                self._event(
                    EventKind.PROBATION_PASSED, outcome.reason, self.active_version, directive_seq
                )
                self._publish_state()
            else:
                self._rollback(outcome.reason, directive_seq)

    def _rollback(self, reason: str, directive_seq: int | None) -> None:
        """Switch back to the previous slot and report why (agent thread or start-up)."""
        with self._deploy_lock:
            pointer = self.slots.pointer()
            failed = (  # at start-up (crashes on probation) nothing is loaded yet
                self.predictor.active.version if self.predictor.active else None
            ) or (pointer.active.model if pointer.active else None)
            if pointer.previous is None:
                log.error("agent: probation failed (%s) but there is no previous model", reason)
                return
            try:
                previous = ServingModel(
                    self.slots.load(pointer.previous), pointer.previous.model, clock=self.clock
                )
            except ActivationError as exc:
                log.error("agent: cannot roll back: %s", exc)
                return
            if self.predictor.active is not None:
                self._store_windows([w for w in [self.predictor.active.monitor.close()] if w])
            self.slots.rollback()
            self.predictor.active = previous
            self.predictor.probation = None
            self._failed_seq = directive_seq
            self._save_state()
            log.warning(
                "agent: rolled back to %s v%s: %s",
                previous.version.name,
                previous.version.version,
                reason,
            )
            self._event(EventKind.ROLLED_BACK, reason, failed, directive_seq)
            self._publish_state()

    # --- the deploy thread ---------------------------------------------------------------

    def _set_desired(self, directive: Directive) -> None:
        self._desired = directive
        self._download_failures = 0
        self._cancel.set()  # abort a download for an older directive
        self._desired_changed.set()

    def _deploy_loop(self) -> None:
        while not self._stop.is_set():
            self._desired_changed.wait(1.0)
            if self._stop.is_set():
                return
            retry_due = self._retry_at is not None and self.monotonic() >= self._retry_at
            if not self._desired_changed.is_set() and not retry_due:
                continue
            self._desired_changed.clear()
            self._retry_at = None
            self._cancel.clear()
            directive = self._desired
            if directive is None:
                continue
            try:
                self._reconcile(directive)
            except Exception as exc:  # report and keep serving the last good model
                log.exception("agent: deployment of seq %s failed unexpectedly", directive.seq)
                self._last_error = str(exc)

    def _reconcile(self, d: Directive) -> None:
        step = plan(d, self.slots.pointer(), self._failed_seq)
        if step.action == "nothing":
            return
        m = d.model
        version = ModelVersion(m.name, m.version, m.sha256)
        try:
            ref = self.slots.find(m.sha256) or self._fetch(d, version)
            serving = ServingModel(
                self.slots.load(ref),
                ref.model,
                "active" if step.action == "activate" else "shadow",
                self.clock,
            )
            serving.smoke_test()
            self._event(
                EventKind.VERIFIED, "signature, digest and smoke test passed", version, d.seq
            )
        except (DownloadError, ActivationError, EdgeFleetError, OSError) as exc:
            if self._cancel.is_set() and self._desired is not d:
                return  # superseded by a newer directive
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            kind = EventKind.FAILED
            if isinstance(exc, DownloadError | OSError) and not self._stop.is_set():
                # Transient: try again later (and after a restart, which has no record).
                # Reported as still downloading, with the reason: a ``failed`` event is
                # the device giving up, which a rollout's gates count against the
                # version (a link cut or a corrupted transfer during a canary rolled a
                # healthy version back).
                self._download_failures += 1
                failures, base = self._download_failures, self.config.download_retry_s
                wait = directive_retry_backoff(failures, base)
                self._retry_at = self.monotonic() + wait
                reason = f"{reason} (retrying in {wait:.1f} s)"
                kind = EventKind.DOWNLOADING
            else:
                self._failed_seq = d.seq
                self._save_state()
            log.error("agent: cannot deploy %s v%s: %s", m.name, m.version, reason)
            self._last_error = reason
            self._event(kind, reason, version, d.seq)
            return
        self._download_failures = 0
        with self._deploy_lock:
            if self._desired is not d:
                return
            if step.action == "activate":
                old, promoted = self.predictor.active, self.predictor.shadow
                if promoted is not None and promoted.version != version:
                    promoted = None  # another challenger keeps running
                self.slots.activate(ref, ProbationRecord(d.seq, self.clock()))
                if promoted is not None:  # (first: no state shows v2 active and in shadow)
                    self.predictor.shadow = None
                self.predictor.probation = ProbationMonitor(d.probation, self.monotonic())
                self.predictor.active = serving
                # The replaced model's window, and the promoted challenger's: closed together
                closed = [w for s in (old, promoted) if s and (w := s.monitor.close())]
                if closed:
                    self._handoff.put(closed)  # the agent thread stores them
                    self.inbox.put(Incoming(None, b"windows"))
                log.info("agent: activated %s v%s", m.name, m.version)
                self._event(EventKind.ACTIVATED, "on probation", version, d.seq)
            else:
                self.slots.set_shadow(ref)
                self.predictor.shadow = serving
                log.info("agent: %s v%s runs in shadow", m.name, m.version)
                self._event(
                    EventKind.SHADOW_STARTED, "challenger beside the active model", version, d.seq
                )
        self.inbox.put(Incoming(None, b"state"))
        self._last_state = 0.0
        trim_malloc()  # the download, verification and smoke test are done with

    def _fetch(self, d: Directive, version: ModelVersion) -> SlotRef:
        m = d.model
        dest = self.downloads / f"{m.sha256}.efb"
        last = [0.0]

        def progress(done: int, total: int) -> None:
            now = self.monotonic()
            if now - last[0] >= 1.0 or done == total:
                last[0] = now
                self._event(
                    EventKind.DOWNLOADING,
                    f"{done} of {total} bytes",
                    version,
                    d.seq,
                    round(done / total, 4) if total else None,
                )

        skip_httpx_cli()
        from edge_agent.daemon.download import download_bundle  # httpx is imported only when needed

        # The URLs carry a signature (a bearer credential): name the bundle by its hash.
        log.info("agent: downloading %s v%s (bundle %s, %d bytes)",
                 m.name, m.version, m.sha256[:16], m.size)  # fmt: skip

        path = download_bundle(
            list(m.urls),
            dest,
            size=m.size,
            sha256=m.sha256,
            on_progress=progress,
            cancel=self._cancel,
            attempts=self.config.download_attempts,
            ca_file=self.config.download_ca_file,
        )
        return self.slots.install(path)
