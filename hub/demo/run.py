"""``edgefleet demo``: the hub, a simulated fleet and the story, in the console or headless.

One process runs the hub (:class:`~hub.service.HubService`: broker unless Mosquitto is
asked for, store, ingest, registry, rollouts, API), an alerter with one drift rule per
cohort, and the story (:mod:`hub.demo.story`), which it observes once a second and
whose actions it carries out through the hub's own parts (registry pushes, rollouts)
and the fleet workers (:mod:`hub.demo.fleet`). The console is ``edgefleet console``
in a child process on the terminal, with an operator token; it reads the story's
status line from a file named in ``EDGEFLEET_DEMO_STORY``. Everything the hub and the
agents log goes to ``<dir>/demo.log``, never over the console.

The end, however it comes (the story and ``--duration`` in headless mode, quitting
the console, Ctrl-C, SIGTERM): the fleet stops feeding, closes its windows and waits
for the hub's acknowledgements, the summary compares what the agents produced with
what the hub stored, and every process and thread the demo started is stopped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Literal, NamedTuple, TextIO, TypeVar

from edge_agent.contract.directive import Probation
from edge_agent.durable import write_atomic
from edge_agent.errors import EdgeFleetError
from hub.alerts import Alerter, AlertRecord, AlertRule, Scope
from hub.broker import free_port
from hub.demo import models
from hub.demo.brokers import MosquittoProcess
from hub.demo.fleet import LOOSE_AXIS, DeviceCounts, DeviceSpec, FleetWorker, WorkerSpec
from hub.demo.netcut import LinkCut
from hub.demo.story import (
    Action,
    CutLink,
    Observation,
    Plan,
    Recalibrate,
    RestoreLink,
    StartDrift,
    StartRollout,
    StoryState,
    Timing,
    alert_rule,
    begin,
    status_line,
    step,
)
from hub.demo.workdir import WorkDir, open_workdir
from hub.errors import HubError
from hub.keys import load_private_key
from hub.modelkit.pump import demo_schema
from hub.operations import DriftQueries, DriftScope
from hub.registry import Registry
from hub.rollouts import Gates, RolloutSpec, RolloutStore, Selector, Stage
from hub.rollouts.runner import RolloutRunner
from hub.service import HubService, HubSettings
from hub.store import Store
from hub.tokens import TokenStore

log = logging.getLogger("edgefleet.demo")
T = TypeVar("T")

#: The file the console reads the story's status line from (see ``tui/story.py``).
STORY_ENV = "EDGEFLEET_DEMO_STORY"
#: ``edgefleet console`` in a child process (the console's command itself, not through
#: the ``edgefleet.commands`` entry point: an environment installed before the console
#: existed lacks that entry point).
CONSOLE = "from tui.cli import console; console(prog_name='edgefleet console')"
#: The tags the rollouts select on: the story's model goes to the pumps only.
PUMPS = "pumps"
MOTORS = "motors"


class _Running(NamedTuple):
    store: Store
    registry: Registry
    rollouts: RolloutStore
    runner: RolloutRunner
    api_url: str
    tokens: TokenStore


@dataclass(frozen=True)
class DemoOptions:
    """What ``edgefleet demo`` was asked for."""

    data: Path | None = None  # None: a fresh temporary directory, removed at the end
    agents: int = 12
    motors: int = 2  # devices running the vibration CNN beside the pumps
    broker: Literal["embedded", "mosquitto"] = "embedded"
    headless: bool = False
    duration_s: float | None = None  # headless: run at least this long
    rate_hz: float = 5.0  # predictions per second per device
    per_worker: int = 4  # agents per worker process


@dataclass
class Summary:
    """What the demo showed, for the last screen and the exit code."""

    story: StoryState | None = None
    devices: int = 0
    versions: dict[str, int] = field(default_factory=dict)  # "v2" -> devices on it
    rollouts: list[tuple[str, str, str]] = field(default_factory=list)  # id, state, why
    alerts: list[str] = field(default_factory=list)
    produced: int = 0  # windows (outbox rows) the agents wrote
    stored: int = 0  # of those, stored by the hub
    served: int = 0  # predictions the agents served
    counted: int = 0  # predictions counted in the windows the hub stored
    drained: bool = False
    problems: list[str] = field(default_factory=list)
    motors: list[str] = field(default_factory=list)  # each motor's drift verdict, one line

    @property
    def ok(self) -> bool:
        """Every story outcome happened and nothing the agents produced was lost."""
        return (
            self.story is not None
            and self.story.succeeded
            and self.drained
            and self.produced == self.stored
            and self.served == self.counted
            and not self.problems
        )

    def lines(self) -> list[str]:
        """The summary, one line per item."""
        out = [f"devices    {self.devices}"]
        out.append(
            "versions   "
            + (", ".join(f"{v}: {n}" for v, n in sorted(self.versions.items())) or "-")
        )
        out.extend(f"motor      {m}" for m in self.motors)
        for rid, state, why in self.rollouts:
            out.append(f"rollout    {rid}: {state}" + (f" ({why})" if why else ""))
        out.extend(f"alert      {a}" for a in self.alerts or ["none raised"])
        same = "equal" if self.produced == self.stored else "DIFFERENT"
        out.append(
            f"windows    produced by the agents {self.produced}, stored by the hub "
            f"{self.stored} ({same})"
        )
        same = "equal" if self.served == self.counted else "DIFFERENT"
        out.append(
            f"predictions served {self.served}, counted in stored windows {self.counted} ({same})"
        )
        if not self.drained:
            out.append("drain      some windows were not acknowledged in time")
        if self.story is not None:
            for o in self.story.outcomes:
                out.append(f"outcome    {o.name}: {o.detail}")
            if self.story.failure:
                out.append(f"story      failed: {self.story.failure}")
        out.extend(f"problem    {p}" for p in self.problems)
        if self.story is not None and not self.story.finished:
            n = len(self.story.outcomes)
            lost = "nothing lost" if self.produced == self.stored and self.drained else "LOST"
            out.append(f"result     stopped before the story's end ({n} of 5 outcomes); {lost}")
        else:
            out.append(f"result     {'every outcome happened' if self.ok else 'FAILED'}")
        return out


def device_ids(n: int) -> list[str]:
    """``pump-01`` ... (width 2, or more for large fleets)."""
    width = max(2, len(str(n)))
    return [f"pump-{i + 1:0{width}d}" for i in range(n)]


def motor_ids(n: int) -> list[str]:
    """``motor-01`` ...: the devices running the vibration CNN."""
    width = max(2, len(str(n)))
    return [f"motor-{i + 1:0{width}d}" for i in range(n)]


def worker_groups(*kinds: Sequence[T], per: int) -> list[list[T]]:
    """The devices of each worker process: each kind (pumps, motors: fed differently) in
    workers of its own, at most ``per`` devices each; every device in exactly one."""
    size = max(1, per)
    return [list(kind[i : i + size]) for kind in kinds for i in range(0, len(kind), size)]


def line_of(index: int, n: int) -> str:
    """The production line (cohort tag) of device ``index`` of ``n``: three lines."""
    return f"line-{index * 3 // n + 1}"


@contextlib.contextmanager
def _output_to(log_file: Path, keep_stdout: bool) -> Iterator[tuple[TextIO, TextIO]]:
    """Send file descriptor 2 (and 1 unless ``keep_stdout``) to ``log_file`` while the
    demo runs, so the hub's logs and the TFLite runtime's prints never land on the
    terminal; yields text streams on the original stdout and stderr."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    target = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    out = os.fdopen(os.dup(saved[1]), "w", buffering=1)
    err = os.fdopen(os.dup(saved[2]), "w", buffering=1)
    try:
        os.dup2(target, 2)
        if not keep_stdout:
            os.dup2(target, 1)
        yield out, err
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        os.close(target)
        out.close()
        err.close()


class Demo:
    """One run of the demo (see the module docstring)."""

    def __init__(self, options: DemoOptions, work: WorkDir, out: TextIO) -> None:
        """Plan the run in the locked directory ``work``; ``out`` gets progress lines."""
        if options.agents < 3:
            raise HubError(f"--agents: the story needs at least 3 agents, got {options.agents}")
        self.options, self.work, self.out = options, work, out
        self.dir = work.path
        if options.headless:
            self.timing = Timing.for_duration(options.duration_s or 300.0)
        else:
            self.timing = Timing()
        ids = device_ids(options.agents)
        # The story is about the pumps (``self.tags``); the motors run a second model.
        self.tags = {d: ("site-a", line_of(i, len(ids)), PUMPS) for i, d in enumerate(ids)}
        self.motor_tags = {d: ("site-a", MOTORS) for d in motor_ids(options.motors)}
        lines = sorted({t[1] for t in self.tags.values()})
        self.plan = Plan(
            devices=tuple(ids),
            drifting_tag=lines[-1],
            healthy_tags=tuple(lines[:-1]),
            offline_device=ids[1],
            timing=self.timing,
        )
        suffix = "" if work.run == 1 else f"-run{work.run}"
        self.rollout_ids = {"v1": f"install-v1{suffix}", "v2": f"canary-v2{suffix}",
                            "v3": f"broken-v3{suffix}"}  # fmt: skip
        self.motors_rollout = f"install-vibration{suffix}"
        self.targets: dict[str, int] = {}
        self.targets_motors: int | None = None  # the vibration CNN's version
        # alert rules are kept in the hub's database: each run has its own names
        self.rule_suffix = suffix
        self.stop = threading.Event()
        self.hub: HubService | None = None
        self.alerter: Alerter | None = None
        self.rules: list[AlertRule] = []
        self.mosquitto: MosquittoProcess | None = None
        self.link: LinkCut | None = None
        self.workers: list[FleetWorker] = []
        self.trained: dict[str, models.DemoModel] = {}
        self.story: StoryState | None = None
        self.problems: list[str] = []
        self.status_file = self.dir / "story.txt"
        self.started = time.time()

    # ------------------------------------------------------------------ set-up

    def _running(self) -> _Running:
        """The hub's parts the demo uses.

        Raises:
            HubError: the hub is not (completely) running.
        """
        hub = self.hub
        if (
            hub is None or hub.store is None or hub.registry is None or hub.rollouts is None
            or hub.runner is None or hub.api is None or hub.tokens is None
        ):  # fmt: skip
            raise HubError("the hub is not running")
        return _Running(hub.store, hub.registry, hub.rollouts, hub.runner, hub.api.url, hub.tokens)

    def say(self, text: str) -> None:
        """A progress line (stdout in headless mode; the log otherwise)."""
        log.info("%s", text)
        if self.options.headless:
            print(f"[{time.time() - self.started:6.1f}s] {text}", file=self.out, flush=True)

    def start(self) -> None:
        """Models, broker, hub, alerter, fleet.

        Raises:
            HubError: a part did not start.
            EdgeFleetError: the model kit failed.
        """
        self.say(f"demo directory {self.dir} (run {self.work.run})")
        for kind in ("v1", "v2"):
            self.trained[kind] = models.train(self.dir / "models", kind)
        self.say(
            f"models   v1 and v2 trained (int8 accuracy {self.trained['v1'].accuracy:.1%}, "
            f"{self.trained['v2'].accuracy:.1%})"
        )
        if self.motor_tags:
            self.trained["vibration"] = models.train_vibration(self.dir / "models")
            self.say(
                f"models   {models.VIBRATION_MODEL} trained (1-D CNN on [64, 3] accelerometer "
                f"windows, int8 accuracy {self.trained['vibration'].accuracy:.1%})"
            )
        self.hub = self._start_hub()
        hub = self._running()
        host, port = self._broker_address()
        self.say(f"hub      API {hub.api_url}, MQTT broker {host}:{port} ({self.options.broker})")
        token, _ = hub.tokens.create(f"demo-operator-{self.work.run}", ["deploy"])
        write_atomic(self.dir / "operator.token", token.encode(), 0o600)
        self._abort_leftovers()
        self._push("v1")
        self._start_alerter()
        now = time.time()
        for device, tags in {**self.tags, **self.motor_tags}.items():
            hub.store.set_tags(device, tags, now=now)
        self.link = LinkCut(host, port)
        pumps = [
            DeviceSpec(
                device_id=d,
                tags=self.tags[d],
                data_dir=self.dir / "fleet" / d,
                broker_port=self.link.port if d == self.plan.offline_device else port,
                quick_reconnect=d == self.plan.offline_device,
            )
            for d in self.plan.devices
        ]
        motors = list(self.motor_tags)
        motor_specs = [
            DeviceSpec(
                device_id=d,
                tags=self.motor_tags[d],
                data_dir=self.dir / "fleet" / d,
                broker_port=port,
                feed="vibration",
                drifting=len(motors) > 1 and d == motors[-1],  # a loose sensor mount
            )
            for d in motors
        ]
        groups = worker_groups(pumps, motor_specs, per=self.options.per_worker)
        for seed, group in enumerate(groups):
            self.workers.append(
                FleetWorker(
                    WorkerSpec(
                        devices=tuple(group),
                        trust_file=self.dir / "hub" / "keys" / "trust.json",
                        broker_host=host,
                        window_s=self.timing.window_s,
                        rate_hz=self.options.rate_hz,
                        log_file=self.dir / "demo.log",
                        seed=seed,
                    )
                )
            )
        for w in self.workers:
            w.wait_ready(180)
        self.say(
            f"fleet    {len(self.tags)} agents in {len(self.workers)} processes, "
            f"{self.options.rate_hz:g} readings/s each; cohorts "
            + ", ".join(f"{t}" for t in sorted({t[1] for t in self.tags.values()}))
        )
        if motors:
            self._install_motors()
            loose = ""
            if len(motors) > 1:
                loose = f"; {motors[-1]}'s {LOOSE_AXIS} sensor mount is loose"
            self.say(
                f"motors   {len(motors)} devices get {models.VIBRATION_MODEL} "
                f"(the {MOTORS} tag){loose}"
            )

    def _start_hub(self, attempts: int = 3) -> HubService:
        """The hub on free ports: the API on one the kernel picks, the embedded broker on
        one that was free a moment ago (another is tried if it was taken meanwhile).

        Raises:
            HubError: it did not start.
        """
        base = HubSettings(
            data_dir=self.dir / "hub", api_port=0, rollout_interval_s=1.0, rollup_interval_s=10.0
        )
        if self.options.broker == "mosquitto":
            self.mosquitto = MosquittoProcess(self.dir / "mosquitto").start()
            return HubService(replace(base, broker_url=self.mosquitto.url)).start()
        for attempt in range(attempts):
            settings = replace(base, embedded_broker_port=free_port())
            try:
                return HubService(settings).start()
            except HubError as exc:
                if attempt == attempts - 1 or "broker did not start" not in str(exc):
                    raise
                log.warning("demo: %s; trying another port", exc)
        raise HubError("the hub did not start")  # pragma: no cover (the loop returns or raises)

    def _install_motors(self) -> None:
        """Register the vibration CNN and install it on every motor (not part of the story:
        the second kind of model the console shows, beside the pumps' classifier)."""
        hub = self._running()
        m = self.trained["vibration"]
        pushed = hub.registry.push_model(
            m.model,
            name=models.VIBRATION_MODEL,
            reference=m.reference,
            schema=m.schema,
            lineage=dict(m.lineage),
        )
        self.targets_motors = pushed.version
        t = self.timing
        spec = RolloutSpec(
            id=self.motors_rollout,
            model=models.VIBRATION_MODEL,
            target_version=pushed.version,
            previous_version=None,
            selector=Selector(tags=(MOTORS,)),
            stages=(
                Stage(share=1.0, bake_s=0.0, gates=Gates(max_psi=None, max_latency_ratio=None)),
            ),
            probation=Probation(window_s=t.probation_s, min_predictions=5, max_crashes=2),
            on_insufficient="proceed",
        )
        hub.runner.create(spec, actor="demo")
        self.say(
            f"push     {models.VIBRATION_MODEL} v{pushed.version} registered and signed; "
            f"rollout {spec.id} started"
        )

    def _abort_leftovers(self) -> None:
        """Abort rollouts an earlier run on this directory left active (it was killed)."""
        hub = self._running()
        for stored in hub.rollouts.list(active_only=True):
            rid = stored.rollout.spec.id
            hub.runner.command(rid, "abort", actor="demo", reason="left by an earlier demo run")
            self.say(f"rollout  {rid}: aborted (left active by an earlier run)")

    def _broker_address(self) -> tuple[str, int]:
        if self.mosquitto is not None:
            return "127.0.0.1", self.mosquitto.port
        broker = None if self.hub is None else self.hub.broker
        if broker is None:
            raise HubError("the embedded broker is not running")
        return broker.host, broker.port

    def _start_alerter(self) -> None:
        """One drift rule per production line, on this run's v1."""
        hub = self._running()
        lines = sorted({t[1] for t in self.tags.values()})
        rules = [
            AlertRule(
                name=alert_rule(line) + self.rule_suffix,
                metric="drift",
                comparison=">",
                threshold=0.5,
                sustained_s=self.timing.alert_sustained_s,
                scope=Scope(model=models.MODEL_NAME, version=self.targets["v1"], tag=line),
            )
            for line in lines
        ]
        self.rules = rules
        window = max(600.0, 10 * self.timing.drift_after_s)
        self.alerter = Alerter(hub.store, hub.registry.reference, rules, window_s=window)
        self.alerter.start(max(1.0, self.timing.alert_sustained_s / 3))

    def _push(self, kind: str) -> int:
        """Register the model version of ``kind``; returns its version number."""
        registry = self._running().registry
        if kind == "v3":
            latest = registry.latest(models.MODEL_NAME)
            version = (latest.version if latest else 0) + 1
            path = self.dir / "models" / f"broken-v{version}.efb"
            key_dir = self.dir / "hub" / "keys"
            keys = [load_private_key(p).key for p in sorted(key_dir.glob("key-*.pem"))]
            models.broken_bundle(self.trained["v2"], version, keys, path)
            pushed = registry.add_bundle(path)
        else:
            m = self.trained[kind]
            pushed = registry.push_model(
                m.model,
                name=models.MODEL_NAME,
                reference=m.reference,
                schema=demo_schema(),
                lineage=dict(m.lineage),
            )
        self.targets[kind] = pushed.version
        self.say(f"push     {kind}: {models.MODEL_NAME} v{pushed.version} registered and signed")
        return pushed.version

    # ------------------------------------------------------------------ the story

    def _rollout(self, kind: str) -> None:
        hub = self._running()
        version = self.targets[kind] if kind == "v1" else self._push(kind)
        t = self.timing
        probation = Probation(window_s=t.probation_s, min_predictions=5, max_crashes=2)
        if kind == "v1":
            stages: tuple[Stage, ...] = (
                Stage(share=1.0, bake_s=0.0, gates=Gates(max_psi=None, max_latency_ratio=None)),
            )
            previous = self._fleet_version()
            on_failure: Literal["pause", "rollback"] = "pause"
        else:
            gates = Gates(
                max_psi=0.25,
                # No latency gate: the demo model's invocation takes a few microseconds,
                # and on a shared machine its p95 is scheduler noise (3x seen between
                # two builds of the same network).
                max_latency_ratio=None,
                max_evidence_wait_s=t.evidence_wait_s,
            )
            canary = max(1, len(self.plan.devices) // 4)
            stages = (
                Stage(count=canary, bake_s=t.bake_s, gates=gates),
                Stage(share=1.0, bake_s=t.bake_s / 2, gates=gates),
            )
            previous = self.targets["v1" if kind == "v2" else "v2"]
            on_failure = "rollback"
        spec = RolloutSpec(
            id=self.rollout_ids[kind],
            model=models.MODEL_NAME,
            target_version=version,
            previous_version=previous if previous != version else None,
            selector=Selector(tags=(PUMPS,)),
            stages=stages,
            on_failure=on_failure,
            probation=probation,
            on_insufficient="proceed",
        )
        hub.runner.create(spec, actor="demo")
        self.say(f"rollout  {spec.id}: v{version} to {len(self.plan.devices)} devices started")

    def _fleet_version(self) -> int | None:
        """The version most devices run now (a kept --data directory), or None."""
        hub = self._running()
        found = [
            d.active.version
            for d in hub.store.all_devices()
            if d.active is not None and d.active.name == models.MODEL_NAME
        ]
        return max(set(found), key=found.count) if found else None

    def carry_out(self, action: Action) -> None:
        """Do what the story asks."""
        if isinstance(action, StartRollout):
            self._rollout(action.kind)
        elif isinstance(action, StartDrift | Recalibrate):
            on = isinstance(action, StartDrift)
            for w in self.workers:
                w.drift(action.tag, on)
            self.say(
                f"story    {action.tag}: bearing temperature sensors "
                + ("lose their calibration" if on else "recalibrated")
            )
        elif isinstance(action, CutLink):
            if self.link is not None:
                self.link.cut()
            self.say(f"story    {action.device} loses its network")
        elif isinstance(action, RestoreLink):
            if self.link is not None:
                self.link.restore()
            self.say(f"story    {action.device} has its network back")

    def observe(self) -> Observation:
        """What the hub shows now."""
        hub = self._running()
        rollouts = {}
        for kind in self.targets:
            with contextlib.suppress(HubError):
                rollouts[kind] = hub.rollouts.get(self.rollout_ids[kind]).rollout.state.value
        fired = frozenset(
            a.rule.removesuffix(self.rule_suffix) for a in self._alerts() if a.state == "firing"
        )
        versions: dict[str, int | None] = {}
        online: dict[str, bool] = {}
        stored: dict[str, int] = {}
        for d in hub.store.all_devices():
            if d.id not in self.tags:
                continue
            a = d.active
            versions[d.id] = a.version if a is not None and a.name == models.MODEL_NAME else None
            online[d.id] = d.online
            stored[d.id] = hub.store.contiguous(d.id)
        return Observation(
            time.time(), rollouts, dict(self.targets), fired, versions, online, stored
        )

    def _alerts(self) -> list[AlertRecord]:
        """This run's alert transitions, oldest first."""
        if self.alerter is None:
            return []
        mine = {r.name for r in self.rules}
        found = [a for a in self.alerter.alerts(limit=1000) if a.rule in mine]
        return sorted(found, key=lambda a: a.ts)

    def tick(self) -> None:
        """Observe, advance the story, act, and write the status line."""
        if self.story is None:
            self.story, actions = begin(self.plan, time.time())
        else:
            before = self.story
            self.story, actions = step(self.story, self.plan, self.observe())
            for o in self.story.outcomes[len(before.outcomes) :]:
                self.say(f"outcome  {o.name}: {o.detail}")
            if self.story.failure and not before.failure:
                self.say(f"story    stopped: {self.story.failure}")
        for action in actions:
            self.carry_out(action)
        write_atomic(self.status_file, status_line(self.story, self.plan, time.time()).encode())

    # ------------------------------------------------------------------ running

    def run_headless(self) -> None:
        """Play the story until it ends and ``duration_s`` has passed (or a stop)."""
        duration = self.options.duration_s or 0.0
        last = ""
        while not self.stop.is_set():
            self.tick()
            if self.story is None:
                return
            line = status_line(self.story, self.plan, time.time())
            head = line.split(" · next:")[0]
            if head != last and "in " not in head:
                self.say(line)
                last = head
            if self.story.finished and (
                self.story.failure or time.time() - self.started >= duration
            ):
                return
            self.stop.wait(1.0)

    def run_console(self, out: TextIO, err: TextIO) -> None:
        """The console on the terminal until it quits (or a stop); the story plays."""
        hub = self._running()
        self.tick()
        env = dict(os.environ, **{STORY_ENV: str(self.status_file)})
        env.pop("EDGEFLEET_TOKEN", None)
        console = subprocess.Popen(  # noqa: S603 - this Python, the console command
            [sys.executable, "-c", CONSOLE, "--hub", hub.api_url,
             "--token-file", str(self.dir / "operator.token")],
            stdin=sys.stdin, stdout=out, stderr=err, env=env,
        )  # fmt: skip
        try:
            while console.poll() is None and not self.stop.is_set():
                self.tick()
                self.stop.wait(1.0)
            if console.returncode not in (None, 0):
                self.problems.append(f"the console exited with status {console.returncode}")
        finally:
            if console.poll() is None:
                console.terminate()
                try:
                    console.wait(10)
                except subprocess.TimeoutExpired:
                    console.kill()
                    console.wait(10)

    # ------------------------------------------------------------------ the end

    def summarise(self) -> Summary:
        """Stop feeding, drain every agent, and compare produced with stored."""
        s = Summary(story=self.story, devices=len(self.plan.devices), problems=self.problems)
        if self.link is not None:
            self.link.restore()  # a device still cut off gets to drain too
        counts: dict[str, DeviceCounts] = {}
        s.drained = True
        for w in self.workers:
            try:
                drained, part = w.flush(max(60.0, 4 * self.timing.window_s))
            except HubError as exc:
                s.problems.append(str(exc))
                s.drained = False
                continue
            s.drained = s.drained and drained
            counts.update(part)
        try:
            hub = self._running()
        except HubError:
            return s
        for device, c in counts.items():
            if c.active is not None:
                key = f"v{c.active}"
                if device in self.motor_tags:
                    key = f"{models.VIBRATION_MODEL} {key}"
                s.versions[key] = s.versions.get(key, 0) + 1
        if self.targets_motors is not None:
            on = sum(1 for d in self.motor_tags if counts.get(d, DeviceCounts()).active
                     == self.targets_motors)  # fmt: skip
            if on < len(self.motor_tags):
                s.problems.append(
                    f"{models.VIBRATION_MODEL}: {on} of {len(self.motor_tags)} motors run "
                    f"v{self.targets_motors}"
                )
        for device, c in sorted(counts.items()):
            stored = sum(hi - lo + 1 for lo, hi in hub.store.stored_ranges(device))
            counted = sum(w.n for w in hub.store.windows_for(device=device, since=self.started))
            s.produced += c.produced
            s.stored += stored
            s.served += c.served
            s.counted += counted
        s.motors = self._motor_verdicts(hub)
        ids = [self.rollout_ids[k] for k in ("v1", "v2", "v3") if k in self.targets]
        if self.targets_motors is not None:
            ids.append(self.motors_rollout)
        for rid in ids:
            try:
                r = hub.rollouts.get(rid).rollout
            except HubError:
                continue
            why = r.history[-1].reason if r.history else ""
            why = why if len(why) <= 160 else why[:159] + "…"
            s.rollouts.append((f"{r.spec.id} (v{r.spec.target_version})", r.state.value, why))
        if self.alerter is not None:
            for a in self._alerts():
                when = a.ts - self.started
                s.alerts.append(f"{a.rule} {a.state} at +{when:.0f} s (value {a.value})")
        return s

    def _motor_verdicts(self, hub: _Running) -> list[str]:
        """Each motor's drift verdict on its vibration-CNN windows of this run, one line
        (the loose mount shows on its axis's channel summaries)."""
        if self.targets_motors is None:
            return []
        queries = DriftQueries(hub.store, hub.registry.reference)
        lines = []
        for device in self.motor_tags:
            scope = DriftScope(model=models.VIBRATION_MODEL, version=self.targets_motors,
                               device=device)  # fmt: skip
            try:
                summary, _ = queries.fetch(scope, since=self.started).assess()
            except EdgeFleetError as exc:
                lines.append(f"{device}: cannot tell ({exc})")
                continue
            drifted = f" on {', '.join(summary.drifted)}" if summary.drifted else ""
            lines.append(f"{device}: {summary.verdict}{drifted} (n = {summary.n})")
        return lines

    def close(self) -> None:
        """Stop everything the demo started (idempotent; never raises)."""
        for w in self.workers:
            try:
                w.stop()
            except Exception:  # the rest must stop too
                log.exception("demo: stopping a fleet worker")
        self.workers = []
        if self.link is not None:
            self.link.close()
            self.link = None
        if self.alerter is not None:
            self.alerter.stop()
            self.alerter.close()
            self.alerter = None
        if self.hub is not None:
            self.hub.stop()
            self.hub = None
        if self.mosquitto is not None:
            self.mosquitto.stop()
            self.mosquitto = None


def _on_signals(stop: threading.Event) -> Callable[[], None]:
    """Ctrl-C and SIGTERM set ``stop``; returns a function restoring the old handlers."""

    def handler(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        stop.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for s, h in old.items():
            signal.signal(s, h)

    return restore


def run_demo(options: DemoOptions, out: TextIO, err: TextIO) -> int:
    """Run the demo; returns the exit code (0: every outcome happened, or the operator
    quit the console; 1: it failed).

    Raises:
        DemoDirError: the ``--data`` directory is refused (before anything starts).
        HubError: bad options.
    """
    temporary = options.data is None
    path = options.data or Path(tempfile.mkdtemp(prefix="edgefleet-demo-"))
    try:
        work = open_workdir(path)
    except BaseException:
        if temporary:
            shutil.rmtree(path, ignore_errors=True)
        raise
    demo: Demo | None = None
    try:
        demo = Demo(options, work, out)
        restore = _on_signals(demo.stop)
        log_file = path / "demo.log"
        logging.basicConfig(
            filename=log_file, level=logging.INFO, force=True,
            format="%(asctime)s %(name)s %(levelname)s %(message)s",
        )  # fmt: skip
        logging.getLogger("edgefleet.agent").setLevel(logging.WARNING)
        try:
            with _output_to(log_file, keep_stdout=options.headless) as (tty_out, tty_err):
                demo.out = tty_out
                summary = _play(demo, options, tty_out, tty_err)
        finally:
            restore()
        for line in summary.lines():
            print(line, file=out, flush=True)
        failed = bool(summary.problems or (summary.story and summary.story.failure))
        if not temporary:
            print(f"state kept in {path} (edgefleet demo --data {path} continues)", file=out)
        elif failed:
            temporary = False  # keep it: the log says what went wrong
            print(f"something failed: the log and state are kept in {path}", file=out)
        else:
            print(f"log: {log_file} is removed with the demo directory", file=out)
        if not options.headless and summary.story is not None and not summary.story.finished:
            # the operator quit before the story's end: nothing lost is what counts
            ok = summary.drained and not summary.problems
            return 0 if ok and summary.produced == summary.stored else 1
        return 0 if summary.ok else 1
    finally:
        if demo is not None:
            demo.close()
        work.close()
        if temporary:
            shutil.rmtree(path, ignore_errors=True)


def _play(demo: Demo, options: DemoOptions, out: TextIO, err: TextIO) -> Summary:
    try:
        demo.start()
        if options.headless:
            demo.run_headless()
        else:
            demo.run_console(out, err)
        return demo.summarise()
    except HubError as exc:
        print(f"edgefleet demo: {exc} (log: {demo.dir / 'demo.log'})", file=err, flush=True)
        summary = Summary(story=demo.story, devices=len(demo.plan.devices))
        summary.problems.append(str(exc))
        return summary
    finally:
        demo.close()
