"""The demo's simulated fleet: worker processes, each running several real agents.

Every device is a real :class:`~edge_agent.daemon.agent.Agent` with its own data directory,
outbox and MQTT session; a worker process runs a few of them and feeds each, at a
steady rate, with readings from the model kit's sensor generator (its own seed per
device). The parent steers a worker through a pipe: a cohort's sensors drift or are
recalibrated, and at the end the worker stops feeding, closes every window, waits
until the hub acknowledged them all, and reports what each device produced.

A worker ignores Ctrl-C (the parent stops it) and stops by itself when the parent
goes away (the pipe closes).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hub.errors import HubError

log = logging.getLogger("edgefleet.demo")

#: The sensor whose calibration drifts, and by how many reference standard deviations.
DRIFT_FEATURE = "bearing_temp_c"
DRIFT_OFFSET = 2.0
#: A motor's loose accelerometer mount: its vertical axis reads this much high.
LOOSE_AXIS = "az"
LOOSE_GAIN = 1.4


@dataclass(frozen=True)
class DeviceSpec:
    """One simulated device: its id, tags, data directory and the broker port it dials
    (a :class:`~hub.demo.netcut.LinkCut` relay's for a device that goes offline)."""

    device_id: str
    tags: tuple[str, ...]
    data_dir: Path
    broker_port: int
    quick_reconnect: bool = False  # back on the broker 1-2 s after its link returns
    # What it is fed: the pump's ten sensors (pump-health) or 3-axis accelerometer
    # windows [64, 3] (vibration-cnn).
    feed: Literal["pump", "vibration"] = "pump"
    drifting: bool = False  # fed its drifted data from the start (a loose sensor mount)
    # A broker with accounts (Mosquitto's production layout): the device's enrolment
    # credentials, and the CA of its TLS listener (None: plain MQTT).
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None


@dataclass(frozen=True)
class WorkerSpec:
    """What one worker process runs."""

    devices: tuple[DeviceSpec, ...]
    trust_file: Path
    broker_host: str
    window_s: float
    rate_hz: float  # predictions per second per device
    log_file: Path
    seed: int = 0
    # "module:function" called first in the worker process (the soak records every
    # window an agent stores through it); empty: nothing.
    setup: str = ""
    checkpoint_s: float = 5.0


@dataclass
class DeviceCounts:
    """What one device produced: predictions served, windows (outbox rows) written, and
    its active model version."""

    served: int = 0
    produced: int = 0
    active: int | None = None
    active_sha256: str | None = None  # the verified bundle it runs


@dataclass
class _Device:
    spec: DeviceSpec
    agent: Any  # edge_agent.daemon.agent.Agent (imported in the worker only)
    rows: np.ndarray
    drifted: np.ndarray
    served: int = 0
    drifting: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


def _quiet(log_file: Path) -> None:
    """Send this process's output (Python logging and the TFLite runtime's own prints on
    file descriptors 1 and 2) to ``log_file``, so it never draws over the console."""
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s worker-{os.getpid()} %(name)s %(levelname)s %(message)s",
        force=True,
    )
    # amqtt sometimes hands a client another device's message; agents ignore it.
    logging.getLogger("edgefleet.agent").setLevel(logging.WARNING)


def worker_main(spec: WorkerSpec, conn: Connection) -> None:  # pragma: no cover (a process)
    """The worker process: start the agents, feed them, obey the parent's commands."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _quiet(spec.log_file)
    if spec.setup:
        import importlib

        module, _, function = spec.setup.partition(":")
        getattr(importlib.import_module(module), function)()
    from edge_agent.daemon.agent import Agent
    from edge_agent.daemon.config import AgentConfig, BrokerConfig
    from edge_agent.errors import EdgeFleetError
    from hub.modelkit.dataset import Drift, apply_drift, make_dataset
    from hub.modelkit.vibration import make_vibration

    devices: list[_Device] = []
    drift = Drift(offset=DRIFT_OFFSET, features=(DRIFT_FEATURE,))
    for i, d in enumerate(spec.devices):
        config = AgentConfig(
            device_id=d.device_id,
            data_dir=d.data_dir,
            trust_file=spec.trust_file,
            broker=BrokerConfig(
                host=spec.broker_host,
                port=d.broker_port,
                keepalive=10,
                tls=d.ca_file is not None,
                ca_file=d.ca_file,
                username=d.username,
                password=d.password,
            ),
            tags=d.tags,
            window_s=spec.window_s,
            local_api_port=0,
            state_interval_s=min(5.0, spec.window_s),
            resend_after_s=max(5.0, spec.window_s),
            download_retry_s=1.0,
            checkpoint_s=spec.checkpoint_s,
        )
        agent = Agent(config, local_api=False)
        if d.quick_reconnect:
            agent.link.client.reconnect_delay_set(min_delay=1, max_delay=2)
        seed = spec.seed * 1000 + i + 1
        if d.feed == "vibration":
            rows = make_vibration(500, seed).x
            drifted = make_vibration(500, seed, gain={LOOSE_AXIS: LOOSE_GAIN}).x
        else:
            rows = make_dataset(4000, seed=seed).x
            drifted = apply_drift(rows, drift, np.random.default_rng(i))
        device = _Device(d, agent.start(), rows, drifted)
        device.drifting = d.drifting
        devices.append(device)
    stop_feeding = threading.Event()
    feeder = threading.Thread(
        target=_feed, args=(devices, spec.rate_hz, stop_feeding, EdgeFleetError), daemon=True
    )
    feeder.start()
    conn.send(("ready", None))
    try:
        while True:
            try:
                command, arg = conn.recv()
            except (EOFError, OSError):
                break  # the parent is gone
            if command == "drift":
                for dev in devices:
                    if arg in dev.spec.tags:
                        dev.drifting = True
                conn.send(("ok", None))
            elif command == "calm":
                for dev in devices:
                    if arg in dev.spec.tags:
                        dev.drifting = False
                conn.send(("ok", None))
            elif command == "flush":
                stop_feeding.set()
                feeder.join(10)
                for dev in devices:
                    dev.agent.close_window()
                drained = all(dev.agent.wait_for_drain(float(arg)) for dev in devices)
                conn.send(("flushed", (drained, _counts(devices))))
            elif command == "counts":
                conn.send(("counts", _counts(devices)))
            elif command == "stop":
                break
    finally:
        stop_feeding.set()
        feeder.join(10)
        threads = [threading.Thread(target=dev.agent.stop) for dev in devices]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        with contextlib.suppress(OSError):
            conn.send(("stopped", None))


def _counts(devices: list[_Device]) -> dict[str, DeviceCounts]:
    out = {}
    for dev in devices:
        outbox = dev.agent.outbox
        active = dev.agent.active_version
        with dev.lock:
            served = dev.served
        out[dev.spec.device_id] = DeviceCounts(
            served=served,
            produced=0 if outbox is None else outbox.last_seq,
            active=None if active is None else active.version,
            active_sha256=None if active is None else active.sha256,
        )
    return out


def _feed(
    devices: list[_Device], rate_hz: float, stop: threading.Event, errors: type[Exception]
) -> None:  # pragma: no cover (runs in the worker)
    """Predict one reading per device every ``1 / rate_hz`` seconds until ``stop``."""
    period = 1.0 / rate_hz
    tick = 0
    next_at = time.monotonic()
    while not stop.is_set():
        for dev in devices:
            if dev.agent.active_version is None:
                continue  # no model yet: a device without one serves nothing
            table = dev.drifted if dev.drifting else dev.rows
            try:
                dev.agent.predict(table[tick % len(table)])
            except errors:
                continue  # refused (e.g. while switching): not served
            with dev.lock:
                dev.served += 1
        tick += 1
        next_at += period
        delay = next_at - time.monotonic()
        if delay < -1.0:  # far behind (a busy machine): do not try to catch up in a burst
            next_at = time.monotonic()
        elif delay > 0 and stop.wait(delay):
            return


class FleetWorker:
    """The parent's handle on one worker process."""

    def __init__(self, spec: WorkerSpec) -> None:
        """Start the process (spawned, so it shares no threads or locks with the hub)."""
        self.spec = spec
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._lock = threading.Lock()
        self.process: BaseProcess = ctx.Process(
            target=worker_main, args=(spec, child), name="edgefleet-demo-fleet", daemon=False
        )
        self.process.start()
        child.close()

    def wait_ready(self, timeout: float) -> None:
        """Block until the worker's agents run.

        Raises:
            HubError: the worker died or did not start within ``timeout``.
        """
        self._reply("ready", timeout)

    def _reply(self, expected: str, timeout: float) -> Any:
        if not self._conn.poll(timeout):
            raise HubError(
                f"demo fleet worker {self.process.pid}: no answer within {timeout:.0f} s "
                f"(see {self.spec.log_file})"
            )
        try:
            kind, value = self._conn.recv()
        except (EOFError, OSError) as exc:
            raise HubError(
                f"demo fleet worker {self.process.pid} died (see {self.spec.log_file})"
            ) from exc
        if kind != expected:
            raise HubError(f"demo fleet worker {self.process.pid}: {kind}")
        return value

    def _ask(self, command: str, arg: object, expected: str, timeout: float) -> Any:
        with self._lock:
            try:
                self._conn.send((command, arg))
            except OSError as exc:
                raise HubError(f"demo fleet worker {self.process.pid} is gone") from exc
            return self._reply(expected, timeout)

    def drift(self, tag: str, on: bool) -> None:
        """Start (``on``) or end the drift of the devices tagged ``tag``.

        Raises:
            HubError: the worker did not answer.
        """
        self._ask("drift" if on else "calm", tag, "ok", 30)

    def counts(self) -> dict[str, DeviceCounts]:
        """What each device produced so far.

        Raises:
            HubError: the worker did not answer.
        """
        return dict(self._ask("counts", None, "counts", 30))

    def flush(self, timeout: float) -> tuple[bool, dict[str, DeviceCounts]]:
        """Stop feeding, close every window and wait up to ``timeout`` until the hub
        acknowledged them all; returns whether it did, and the final counts.

        Raises:
            HubError: the worker did not answer.
        """
        drained, counts = self._ask("flush", timeout, "flushed", timeout + 30)
        return bool(drained), dict(counts)

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the agents and the process (killed if it does not end in ``timeout``)."""
        with self._lock, contextlib.suppress(OSError):
            self._conn.send(("stop", None))
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(10)
        self._conn.close()
