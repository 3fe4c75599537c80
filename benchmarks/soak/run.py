"""One soak run: the fleet, the hub, the broker, the rollout sequence, faults, invariants.

The run (see the package docstring for the command):

1. a hub (``edgefleet hub serve`` in its own process, so it can be killed -9), a broker
   (Mosquitto with the production configuration, or the hub's embedded one), and
   ``--agents`` real agents in the demo's fleet worker processes, each agent on its own
   data directory, reaching the broker through its worker's :class:`FaultProxy` and the
   hub's bundle downloads through one more;
2. the rollout sequence on the demo's models: v1 to every device, v2 as a canary and
   then everywhere, a broken v3 (its smoke test fails) as a canary that must roll back;
3. faults drawn from ``--seed`` from when v1 is installed until 75 % of ``--duration``,
   one at a time, each logged with its time and parameters; then everything is healed
   and the fleet must converge;
4. the end: every worker closes its windows and waits for the hub's acknowledgements,
   the agents' own ledgers (:mod:`benchmarks.soak.ledger`) are compared with what the
   hub stored, and every invariant is printed with its figure (:mod:`.invariants`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from benchmarks.soak.ledger import Produced, read_produced, set_clock_offset
from benchmarks.soak.parts import HubProcess, ProductionMosquitto, SmallDisk, SoakError
from benchmarks.soak.proxy import FaultProxy
from benchmarks.soak.rogue import Endpoint, Tap, rogue_on_embedded, rogue_on_mosquitto
from edge_agent.contract.directive import Probation
from edge_agent.contract.topics import Channel, topic
from hub.demo import models
from hub.demo.fleet import DeviceCounts, DeviceSpec, FleetWorker, WorkerSpec
from hub.keys import load_private_key
from hub.modelkit.pump import INT8_MODEL, REFERENCE_DATA, demo_schema
from hub.rollouts import Gates, RolloutSpec, Stage

log = logging.getLogger("edgefleet.soak")

#: Every fault the harness can inject.
FAULTS = (
    "kill_agents",
    "kill_hub",
    "restart_broker",
    "partition_broker",
    "delay_broker",
    "partition_http",
    "delay_http",
    "cut_download",
    "corrupt_download",
    "rogue",
    "disk_full_agent",
    "clock_jump_agent",
)
#: What the issue asks for that this harness does not inject yet.
MISSING_FAULTS: tuple[str, ...] = ()


@dataclass(frozen=True)
class SoakConfig:
    """What one run is asked for."""

    seed: int = 1
    duration_s: float = 600.0
    agents: int = 50
    broker: Literal["embedded", "mosquitto"] = "mosquitto"
    out: Path | None = None
    work: Path | None = None  # None: a temporary directory (kept only if the run failed)
    per_worker: int = 5
    rate_hz: float = 2.0
    faults: tuple[str, ...] = FAULTS
    converge_timeout_s: float = 240.0
    clock_jump_s: float = 12 * 3600.0  # the largest clock jump, either way

    @property
    def window_s(self) -> float:
        """The agents' metrics window."""
        return min(10.0, max(2.0, self.duration_s / 30))

    @property
    def bake_s(self) -> float:
        """Each rollout stage's bake."""
        return min(60.0, max(3.0, self.duration_s / 20))

    @property
    def rollout_gap_s(self) -> float:
        """The steady fleet between one rollout's end and the next one's start (so the
        rollouts, and their downloads, spread over the faulty part of the run)."""
        return max(0.0, self.duration_s / 12 - 5)


@dataclass
class FaultRecord:
    """One injected fault, as logged."""

    at_s: float
    kind: str
    detail: str
    healed_at_s: float | None = None


@dataclass
class RunRecord:
    """Everything the run observed (the invariants are computed from it)."""

    config: dict[str, Any] = field(default_factory=dict)
    faults: list[FaultRecord] = field(default_factory=list)
    unexpected_exits: list[str] = field(default_factory=list)
    restarts: dict[str, int] = field(default_factory=dict)
    rollouts: dict[str, dict[str, Any]] = field(default_factory=dict)  # kind -> rollout JSON
    targets: dict[str, int] = field(default_factory=dict)
    shas: dict[int, str] = field(default_factory=dict)  # version -> bundle sha256
    rogue: list[tuple[str, str, str]] = field(default_factory=list)  # broker, attempt, outcome
    rogue_visible: list[tuple[str, bool, str]] = field(default_factory=list)
    broker_losses: int = 0  # rogue messages the embedded broker acknowledged, never delivered
    produced: dict[str, Produced] = field(default_factory=dict)
    stored_seqs: dict[str, int] = field(default_factory=dict)
    stored_predictions: dict[str, int] = field(default_factory=dict)
    duplicate_seqs: dict[str, int] = field(default_factory=dict)
    final_counts: dict[str, DeviceCounts] = field(default_factory=dict)
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)  # hub's view at the end
    events: list[dict[str, Any]] = field(default_factory=list)
    drained: bool = False
    healed_at_s: float | None = None
    converged_at_s: float | None = None
    hub_stop_status: int | None = None
    peak_worker_rss: int = 0
    problems: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    skipped_faults: list[str] = field(default_factory=list)  # kinds this machine cannot do


def device_ids(n: int) -> list[str]:
    """``soak-001`` ..."""
    return [f"soak-{i + 1:03d}" for i in range(n)]


class Soak:
    """One run (see the module docstring). :meth:`run` returns its record."""

    def __init__(self, config: SoakConfig, work: Path) -> None:
        """Plan the run in ``work``."""
        self.c = config
        self.dir = work
        self.rng = random.Random(config.seed)
        self.rec = RunRecord(
            config={
                "seed": config.seed,
                "duration_s": config.duration_s,
                "agents": config.agents,
                "broker": config.broker,
                "per_worker": config.per_worker,
                "rate_hz": config.rate_hz,
                "window_s": config.window_s,
                "bake_s": config.bake_s,
                "faults": list(config.faults),
                "clock_jump_s": config.clock_jump_s,
            }
        )
        self.ids = device_ids(config.agents)
        self.started = time.monotonic()
        self.hub: HubProcess | None = None
        self.mosq: ProductionMosquitto | None = None
        self.http_proxy: FaultProxy | None = None
        self.broker_proxies: list[FaultProxy] = []
        self.worker_specs: list[WorkerSpec] = []
        self.workers: list[FleetWorker] = []
        self.tap: Tap | None = None
        self.passwords: dict[str, str] = {}
        self.trained: dict[str, models.DemoModel] = {}
        self.phase = "install"
        self.rollout_stage: dict[str, int] = {}
        self.pending_kill_at: float | None = None
        self.deck: list[str] = []
        self.next_rollout_at = 0.0
        self.started_rollouts: set[str] = set()
        self._events_before = 0
        self.small_disk: SmallDisk | None = None
        self.faults = list(config.faults)  # less any this machine cannot inject

    # ------------------------------------------------------------------ helpers

    def now(self) -> float:
        """Seconds since the run started."""
        return round(time.monotonic() - self.started, 2)

    def say(self, text: str) -> None:
        """A progress line on stdout."""
        print(f"[{self.now():7.1f}s] {text}", flush=True)
        log.info("%s", text)

    def api(self, method: str, path: str, **kw: Any) -> Any:
        """Call the hub's API (retried while the hub restarts).

        Raises:
            SoakError: it kept failing for 60 s, or answered an error.
        """
        assert self.hub is not None
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.request(
                    method,
                    f"{self.hub.api_url}{path}",
                    timeout=30,
                    headers={"Authorization": f"Bearer {self.hub.token}"},
                    **kw,
                )
            except httpx.HTTPError as exc:
                if time.monotonic() > deadline:
                    raise SoakError(f"{method} {path}: {exc}") from exc
                time.sleep(0.5)  # the hub is restarting: try again
                continue
            if r.status_code >= 400:
                raise SoakError(f"{method} {path}: {r.status_code} {r.text[:300]}")
            return r.json() if r.content else None

    # ------------------------------------------------------------------ set-up

    def start(self) -> None:
        """Models, broker, hub, proxies, fleet; waits until every device is online.

        Raises:
            SoakError: a part did not start.
        """
        c = self.c
        for kind in ("v1", "v2"):
            self.trained[kind] = models.train(self.dir / "models", kind)
        data = self.dir / "hub"
        self.http_proxy = FaultProxy("127.0.0.1", 1, name="http")
        public = f"http://127.0.0.1:{self.http_proxy.port}"
        if c.broker == "mosquitto":
            # the hub's data first (keys for the enrolment bundles), then the broker
            self.hub = HubProcess(data, public, self.dir / "hub.log")
            self.mosq = ProductionMosquitto(self.dir / "mqtt", data)
            self.passwords = self.mosq.enroll(self.ids, self.dir / "enrolled")
            self.mosq.start()
            self.hub.broker_url = self.mosq.hub_url
            self.hub.password_file = self.mosq.password_file
            self.hub.broker_port = None
            device_port = self.mosq.device_port
        else:
            self.hub = HubProcess(data, public, self.dir / "hub.log")
            assert self.hub.broker_port is not None
            device_port = self.hub.broker_port
        self.http_proxy.target = ("127.0.0.1", self.hub.api_port)
        self.hub.start()
        self.say(f"hub      {self.hub.api_url} ({c.broker} broker); downloads via {public}")
        self.tap = Tap(self._hub_endpoint(), metrics_of=tuple(self.ids[:2]))
        if "disk_full_agent" in self.faults:
            # the device whose data directory is a small filesystem the harness fills
            # (not one of the rogue client's two victims)
            disk_device = self.rng.choice(self.ids[2:])
            try:
                self.small_disk = SmallDisk(self.dir / "fleet" / disk_device)
                self.say(f"disk     {disk_device}'s data directory is a 32 MiB tmpfs")
            except SoakError as exc:  # not root: this run cannot fill a disk
                self.faults.remove("disk_full_agent")
                self.rec.skipped_faults.append("disk_full_agent")
                self.say(f"disk     disk_full_agent skipped: {exc}")
        per = max(1, c.per_worker)
        ca = self.mosq.tls.ca if self.mosq is not None else None
        for w, i in enumerate(range(0, len(self.ids), per)):
            proxy = FaultProxy("127.0.0.1", device_port, name=f"broker-{w}")
            self.broker_proxies.append(proxy)
            devices = tuple(
                DeviceSpec(
                    device_id=d,
                    tags=("soak",),
                    data_dir=self.dir / "fleet" / d,
                    broker_port=proxy.port,
                    quick_reconnect=True,
                    username=d if self.mosq else None,
                    password=self.passwords.get(d),
                    ca_file=ca,
                )
                for d in self.ids[i : i + per]
            )
            self.worker_specs.append(
                WorkerSpec(
                    devices=devices,
                    trust_file=data / "keys" / "trust.json",
                    broker_host="127.0.0.1",
                    window_s=c.window_s,
                    rate_hz=c.rate_hz,
                    log_file=self.dir / "fleet.log",
                    seed=c.seed * 100 + w,
                    setup="benchmarks.soak.ledger:install",
                )
            )
        self.workers = [FleetWorker(s) for s in self.worker_specs]
        for wk in self.workers:
            try:
                wk.wait_ready(240)
            except Exception as exc:
                raise SoakError(str(exc)) from exc
        self.say(f"fleet    {len(self.ids)} agents in {len(self.workers)} worker processes")
        self._await(lambda: self._online() >= len(self.ids), 180, "every device online")

    def _hub_endpoint(self) -> Endpoint:
        if self.mosq is not None:
            return Endpoint(
                "127.0.0.1",
                self.mosq.proc.port,
                "edgefleet-hub",
                self.mosq.password_file.read_text().strip(),
            )
        assert self.hub is not None and self.hub.broker_port is not None
        return Endpoint("127.0.0.1", self.hub.broker_port)

    def _devices(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        after = None
        while True:
            params: dict[str, Any] = {"limit": 500}
            if after:
                params["after"] = after
            page = self.api("GET", "/v1/devices", params=params)
            for d in page["devices"]:
                out[d["id"]] = d
            after = page.get("next")
            if not after:
                return out

    def _online(self) -> int:
        return sum(1 for d in self._devices().values() if d["online"] and d["id"] in self.ids)

    def _await(self, cond: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise SoakError(f"waited {timeout:.0f} s for {what}")
            self._watch()
            time.sleep(1.0)  # polling the hub's API

    # ------------------------------------------------------------------ rollouts

    def _push(self, kind: str) -> int:
        if kind == "v3":
            version = max(self.rec.targets.values()) + 1
            path = self.dir / "models" / f"broken-v{version}.efb"
            key_dir = self.dir / "hub" / "keys"
            keys = [load_private_key(p).key for p in sorted(key_dir.glob("key-*.pem"))]
            models.broken_bundle(self.trained["v2"], version, keys, path)
            doc = self.api("POST", "/v1/bundles", content=path.read_bytes())
        else:
            d = self.dir / "models" / kind
            files = {
                "model": ("model.tflite", (d / INT8_MODEL).read_bytes()),
                "reference": ("reference.npz", (d / REFERENCE_DATA).read_bytes()),
                "schema": ("schema.json", json.dumps(demo_schema().to_json()).encode()),
            }
            doc = self.api(
                "POST",
                f"/v1/models/{models.MODEL_NAME}/push",
                files=files,
                data={"lineage": json.dumps(self.trained[kind].lineage)},
            )
        self.rec.targets[kind] = int(doc["version"])
        self.rec.shas[int(doc["version"])] = str(doc["sha256"])
        return int(doc["version"])

    def canary_size(self) -> int:
        """Devices in the v2 and v3 canary stages."""
        return max(1, len(self.ids) // 5)

    def _start_rollout(self, kind: str) -> None:
        version = self._push(kind)
        probation = Probation(window_s=max(3.0, self.c.window_s), min_predictions=3, max_crashes=2)
        if kind == "v1":
            gates = Gates(max_psi=None, max_latency_ratio=None)
            stages: tuple[Stage, ...] = (Stage(share=1.0, bake_s=0.0, gates=gates),)
            previous, on_failure = None, "pause"
        else:
            gates = Gates(
                max_psi=0.25, max_latency_ratio=None, max_evidence_wait_s=2 * self.c.bake_s
            )
            stages = (
                Stage(count=self.canary_size(), bake_s=self.c.bake_s, gates=gates),
                Stage(share=1.0, bake_s=self.c.bake_s / 2, gates=gates),
            )
            previous = self.rec.targets["v1" if kind == "v2" else "v2"]
            on_failure = "rollback"
        spec = RolloutSpec(
            id=f"soak-{kind}",
            model=models.MODEL_NAME,
            target_version=version,
            previous_version=previous,
            stages=stages,
            on_failure=on_failure,  # type: ignore[arg-type]
            probation=probation,
            on_insufficient="proceed",
        )
        self.api("POST", "/v1/rollouts", json=spec.to_json())
        self.started_rollouts.add(kind)
        self.say(f"rollout  soak-{kind}: v{version} started")

    def _rollout(self, kind: str) -> dict[str, Any]:
        doc: dict[str, Any] = self.api("GET", f"/v1/rollouts/soak-{kind}")
        self.rec.rollouts[kind] = doc
        return doc

    def _all_on(self, kind: str) -> bool:
        target = self.rec.targets[kind]
        devices = self._devices()
        return all(
            (a := devices.get(d, {}).get("active")) is not None and a.get("version") == target
            for d in self.ids
        )

    def drive(self) -> None:
        """Advance the rollout sequence by one look at the hub."""
        order = {"install": "v1", "canary": "v2", "broken": "v3"}
        if self.phase not in order:
            return
        kind = order[self.phase]
        if kind not in self.started_rollouts:  # the next rollout waits for its turn
            if time.monotonic() < self.next_rollout_at:
                return
            self._start_rollout(kind)
        doc = self._rollout(kind)
        state, stage = doc["state"], int(doc["stage"])
        if self.rollout_stage.get(kind, -1) != stage and state == "running":
            self.rollout_stage[kind] = stage
            if "kill_agents" in self.faults:  # kill -9 while it downloads and activates
                self.pending_kill_at = time.monotonic() + self.rng.uniform(0.5, 3.0)
        if kind == "v1" and state == "completed" and self._all_on("v1"):
            self.say("rollout  soak-v1 completed: every device on v1")
            self.phase = "canary"
            self.next_rollout_at = time.monotonic() + self.c.rollout_gap_s
        elif kind == "v2" and state == "completed" and self._all_on("v2"):
            self.say("rollout  soak-v2 completed: every device on v2")
            self.phase = "broken"
            self.next_rollout_at = time.monotonic() + self.c.rollout_gap_s
        elif kind == "v3" and state == "rolled_back":
            self.say(f"rollout  soak-v3 rolled back ({doc['history'][-1]['reason'][:120]})")
            self.phase = "done"
        elif (
            state in ("rolled_back", "aborted", "paused", "completed")
            and kind != "v3"
            and (state != "completed")
        ):
            self.rec.problems.append(f"rollout soak-{kind} ended {state}")
            self.say(f"rollout  soak-{kind} ended {state}: the sequence stops")
            self.phase = "failed"
        elif kind == "v3" and state in ("completed", "aborted", "paused"):
            self.rec.problems.append(f"rollout soak-v3 (broken) ended {state}")
            self.phase = "failed"

    # ------------------------------------------------------------------ watching

    def _watch(self) -> None:
        """Note any process that ended without the harness killing it (and restart it)."""
        if self.hub is not None and (code := self.hub.died()) is not None:
            self.rec.unexpected_exits.append(f"hub exited with {code} at {self.now()} s")
            self.say(f"PROBLEM  the hub exited with {code}; restarting it")
            self.hub.proc = None
            self.hub.start()
        if self.mosq is not None and (code := self.mosq.died()) is not None:
            self.rec.unexpected_exits.append(f"mosquitto exited with {code} at {self.now()} s")
            self.mosq.restart()
        for i, w in enumerate(self.workers):
            if not w.process.is_alive():
                self.rec.unexpected_exits.append(
                    f"fleet worker {i} exited with {w.process.exitcode} at {self.now()} s"
                )
                self.say(f"PROBLEM  fleet worker {i} exited with {w.process.exitcode}")
                self._restart_worker(i)
        self._sample_rss()

    def _sample_rss(self) -> None:
        try:
            import psutil
        except ImportError:
            return
        for w in self.workers:
            with contextlib.suppress(psutil.Error, TypeError):
                rss = int(psutil.Process(w.process.pid).memory_info().rss)
                self.rec.peak_worker_rss = max(self.rec.peak_worker_rss, rss)

    def _restart_worker(self, i: int) -> None:
        with contextlib.suppress(Exception):
            self.workers[i].stop(5)
        w = FleetWorker(self.worker_specs[i])
        w.wait_ready(240)
        self.workers[i] = w
        self.rec.restarts["fleet worker"] = self.rec.restarts.get("fleet worker", 0) + 1

    # ------------------------------------------------------------------ faults

    def _fault(self, kind: str, detail: str) -> FaultRecord:
        f = FaultRecord(self.now(), kind, detail)
        self.rec.faults.append(f)
        self.say(f"fault    {kind}: {detail}")
        return f

    def _hold(self) -> float:
        return self.rng.uniform(1.5, max(2.0, min(20.0, self.c.duration_s / 25)))

    def _kill_worker(self, i: int, why: str) -> None:
        w = self.workers[i]
        f = self._fault(
            "kill_agents",
            f"kill -9 fleet worker {i} (pid {w.process.pid}, "
            f"{len(self.worker_specs[i].devices)} agents){why}",
        )
        if w.process.pid is not None and w.process.is_alive():
            os.kill(w.process.pid, signal.SIGKILL)
        w.process.join(30)
        time.sleep(self.rng.uniform(0.5, 3.0))  # the fault: the device is down a while
        w2 = FleetWorker(self.worker_specs[i])
        w2.wait_ready(240)
        self.workers[i] = w2
        self.rec.restarts["fleet worker"] = self.rec.restarts.get("fleet worker", 0) + 1
        f.healed_at_s = self.now()

    def _not_injected(self) -> set[str]:
        return set(self.faults) - {f.kind for f in self.rec.faults}

    def _every_kind_injected(self) -> bool:
        return not self._not_injected()

    def _draw(self) -> str:
        """The next fault: every kind once per shuffled round (seeded)."""
        if not self.deck:
            self.deck = list(self.faults)
            self.rng.shuffle(self.deck)
        return self.deck.pop()

    def inject(self, kind: str) -> None:
        """Inject one fault of ``kind`` and heal it (blocking while it lasts)."""
        assert self.hub is not None and self.http_proxy is not None
        rng = self.rng
        if kind == "kill_agents":
            self._kill_worker(rng.randrange(len(self.workers)), "")
        elif kind == "kill_hub":
            f = self._fault("kill_hub", "kill -9 the hub, restart on the same data directory")
            self.hub.kill9()
            time.sleep(rng.uniform(0.5, 3.0))  # the fault: the hub is down a while
            self.hub.start()
            self.rec.restarts["hub"] = self.rec.restarts.get("hub", 0) + 1
            f.healed_at_s = self.now()
        elif kind == "restart_broker":
            if self.mosq is not None:
                f = self._fault("restart_broker", "mosquitto SIGTERM, start on the same ports")
                self.mosq.restart()
                self.rec.restarts["mosquitto"] = self.rec.restarts.get("mosquitto", 0) + 1
            else:
                f = self._fault(
                    "restart_broker",
                    "the embedded broker: SIGTERM the hub (broker inside), restart it",
                )
                code = self.hub.stop()
                if code != 0:
                    self.rec.unexpected_exits.append(f"hub SIGTERM exit status {code}")
                self.hub.start()
                self.rec.restarts["hub"] = self.rec.restarts.get("hub", 0) + 1
            f.healed_at_s = self.now()
        elif kind in ("partition_broker", "delay_broker"):
            i = rng.randrange(len(self.broker_proxies))
            p = self.broker_proxies[i]
            hold = self._hold()
            if kind == "partition_broker":
                f = self._fault(kind, f"worker {i}'s agents cut from the broker for {hold:.1f} s")
                p.set_mode("drop")
            else:
                delay = rng.uniform(0.05, 0.5)
                f = self._fault(
                    kind,
                    f"worker {i}'s broker link delayed {delay:.2f} s per chunk for {hold:.1f} s",
                )
                p.set_mode("delay", delay_s=delay)
            time.sleep(hold)  # the fault lasts this long
            p.set_mode("pass")
            f.healed_at_s = self.now()
        elif kind in ("partition_http", "delay_http", "cut_download", "corrupt_download"):
            hold = self._hold()
            p = self.http_proxy
            if kind == "partition_http":
                f = self._fault(kind, f"bundle downloads refused for {hold:.1f} s")
                p.set_mode("drop")
            elif kind == "delay_http":
                delay = rng.uniform(0.05, 0.5)
                f = self._fault(kind, f"downloads delayed {delay:.2f} s per chunk, {hold:.1f} s")
                p.set_mode("delay", delay_s=delay)
            elif kind == "cut_download":
                after = rng.randrange(300, 40000)
                f = self._fault(kind, f"downloads cut after {after} bytes for {hold:.1f} s")
                p.set_mode("cut", cut_after=after)
            else:
                every = rng.randrange(500, 5000)
                f = self._fault(kind, f"one byte in {every} of downloads flipped, {hold:.1f} s")
                p.set_mode("corrupt", corrupt_every=every)
            time.sleep(hold)  # the fault lasts this long
            p.set_mode("pass")
            f.healed_at_s = self.now()
        elif kind == "rogue":
            self._rogue()
        elif kind == "disk_full_agent":
            self._disk_full()
        elif kind == "clock_jump_agent":
            self._clock_jump()

    def _fleet_log_count(self, needle: str) -> int:
        """Lines of the fleet's log holding ``needle``."""
        try:
            text = (self.dir / "fleet.log").read_text(errors="replace")
        except OSError:
            return 0
        return sum(1 for line in text.splitlines() if needle in line)

    def _disk_full(self) -> None:
        """One agent's filesystem full for a while (at least three windows), then emptied."""
        assert self.small_disk is not None
        disk = self.small_disk
        device = disk.dir.name
        hold = max(self._hold(), 3.5 * self.c.window_s)
        needle = f"/{device}/outbox.db: cannot store the window"
        before = self._fleet_log_count(needle)
        f = self._fault("disk_full_agent", f"{device}'s filesystem full for {hold:.1f} s")
        took = disk.fill()
        time.sleep(hold)  # the fault lasts this long
        disk.free()
        refused = self._fleet_log_count(needle) - before
        f.detail += f" ({took / 2**20:.1f} MiB filler; {refused} outbox append(s) refused)"
        f.healed_at_s = self.now()

    def _clock_jump(self) -> None:
        """One agent's wall clock jumps forward or back by up to ``clock_jump_s`` (default
        12 hours, inside the hub's one-day plausibility bound), runs off for a while, then
        jumps back to time."""
        device = self.rng.choice(self.ids)
        top = max(60.0, self.c.clock_jump_s)
        offset = self.rng.choice((-1, 1)) * self.rng.uniform(min(60.0, top / 2), top)
        hold = max(self._hold(), 2.5 * self.c.window_s)
        f = self._fault(
            "clock_jump_agent",
            f"{device}'s clock jumps {offset:+.0f} s for {hold:.1f} s, then back",
        )
        set_clock_offset(self.dir / "fleet" / device, offset)
        time.sleep(hold)  # the fault lasts this long
        set_clock_offset(self.dir / "fleet" / device, None)
        f.healed_at_s = self.now()

    def _rogue(self) -> None:
        assert self.tap is not None and self.hub is not None
        # the roles alternate: the hub audits one refusal per device and kind a minute
        rounds = sum(1 for f in self.rec.faults if f.kind == "rogue")
        victim, other = (self.ids[0], self.ids[1]) if rounds % 2 == 0 else self.ids[1::-1]
        replay = self.tap.earlier_directive(victim)
        vm, om = self.tap.metrics_of(victim), self.tap.metrics_of(other)
        if replay is None or vm is None or om is None:
            self.deck.insert(0, "rogue")  # nothing to replay yet: later in this round
            return
        self._await(
            lambda: all(self._devices().get(d, {}).get("online") for d in (victim, other)),
            120,
            f"{victim} and {other} online before the rogue client",
        )
        if self.mosq is not None:
            f = self._fault("rogue", f"{other}'s credentials against {victim}'s topics")
            ep = Endpoint(
                "127.0.0.1",
                self.mosq.device_port,
                other,
                self.passwords[other],
                self.mosq.tls.ca,
                v5=True,
            )
            result = rogue_on_mosquitto(ep, victim, replay, vm)
            for what, outcome in result.attempts:
                self.rec.rogue.append(("mosquitto", what, outcome))
                refused = "not authori" in outcome.lower() and "READ ALLOWED" not in outcome
                self.rec.rogue_visible.append((what, refused, f"broker: {outcome}"))
        else:
            f = self._fault(
                "rogue",
                f"anonymous: malformed, mismatched and replayed messages on {victim}'s topics",
            )
            before = self._counters()
            self._events_before = self._last_event_id()
            audit_before = max((int(e["id"]) for e in self._audit_after(0)), default=0)
            tap = self.tap
            seen_before = {
                (n, p): tap.times_seen(n, p) for n, p in [
                    (topic(victim, Channel.METRICS), b"{not json"),
                    (topic(victim, Channel.METRICS), om),
                    (topic(victim, Channel.METRICS), vm),
                    (topic(victim, Channel.DESIRED), replay),
                ]
            }  # fmt: skip
            result = rogue_on_embedded(self._hub_endpoint(), victim, other, replay, vm, om)
            for what, outcome in result.attempts:
                self.rec.rogue.append(("embedded", what, outcome))
            first = len(self.rec.rogue_visible)
            self._rogue_seen(before, audit_before, victim)
            # what the broker never delivered (the tap, subscribed to those topics, did
            # not get it either) was lost by the broker, not let through by the hub
            names = {
                "malformed metrics": 0, "mismatched metrics": 1, "replayed metrics": 2,
                "replayed directive": 3,
            }  # fmt: skip
            for i, (what, ok, _how) in enumerate(self.rec.rogue_visible):
                if i < first or ok or what not in names:
                    continue
                _, name, payload = result.sent[names[what]]
                if tap.times_seen(name, payload) <= seen_before.get((name, payload), 0):
                    self.rec.rogue_visible[i] = (what, True, "lost by the embedded broker: "
                                                 "not delivered to any subscriber")  # fmt: skip
                    self.rec.broker_losses += 1
        f.healed_at_s = self.now()

    def _counters(self) -> dict[str, float]:
        assert self.hub is not None
        r = httpx.get(
            f"{self.hub.api_url}/metrics",
            timeout=30,
            headers={"Authorization": f"Bearer {self.hub.token}"},
        )
        out: dict[str, float] = {}
        for line in r.text.splitlines():
            if line.startswith("edgefleet_ingest_") and "{" not in line:
                name, _, value = line.partition(" ")
                with contextlib.suppress(ValueError):
                    out[name] = float(value)
        return out

    def _last_event_id(self) -> int:
        events = self._events_after(0)
        return max((int(e["id"]) for e in events), default=0)

    def _events_after(self, after: int, device: str | None = None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            params: dict[str, Any] = {"after_id": after, "limit": 500}
            if device:
                params["device"] = device
            page = self.api("GET", "/v1/events", params=params)["events"]
            out.extend(page)
            if len(page) < 500:
                return out
            after = int(page[-1]["id"])

    def _audit_after(self, after: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            page = self.api("GET", "/v1/audit", params={"after_id": after, "limit": 1000})
            out.extend(page["entries"])
            if len(page["entries"]) < 1000:
                return out
            after = int(page["entries"][-1]["id"])

    def _rogue_seen(self, before: dict[str, float], audit_before: int, victim: str) -> None:
        """Wait (30 s at most) until each embedded-broker rogue message shows at the hub:
        refusals in the audit log (``ingest.refused``) or the agent's events, the replayed
        metrics as a duplicate (stored once)."""
        kinds = {"malformed metrics": "malformed", "mismatched metrics": "device_mismatch"}
        deadline = time.monotonic() + 30
        seen: dict[str, str] = {}
        while time.monotonic() < deadline and len(seen) < 4:
            for e in self._audit_after(audit_before):
                if e["action"] == "ingest.refused" and e["target"] == victim:
                    for what, kind in kinds.items():
                        if e["details"].get("kind") == kind:
                            seen[what] = f"hub audit ingest.refused: {e['details']['reason'][:80]}"
            name = "edgefleet_ingest_duplicates_total"
            if self._counters().get(name, 0) > before.get(name, 0):
                seen["replayed metrics"] = "stored once: hub counter duplicates"
            for e in self._events_after(self._events_before, victim):
                if e["kind"] == "refused":
                    seen["replayed directive"] = f"agent event refused: {e['detail'][:100]}"
            time.sleep(0.5)  # polling the hub
        for what in (*kinds, "replayed metrics", "replayed directive"):
            self.rec.rogue_visible.append((what, what in seen, seen.get(what, "not seen")))

    def heal_all(self) -> None:
        """Every proxy back to relaying faithfully."""
        for p in [*self.broker_proxies, *([self.http_proxy] if self.http_proxy else [])]:
            p.set_mode("pass")

    # ------------------------------------------------------------------ the run

    def run(self) -> RunRecord:
        """The whole run; never raises for a failed invariant (the record says)."""
        c = self.c
        try:
            self.start()
            self._start_rollout("v1")
            fault_end = self.started + 0.75 * c.duration_s
            self.say("faults   begin")
            while True:
                self._watch()
                self.drive()
                if self.phase == "failed":
                    break
                now = time.monotonic()
                # faults until 75 % of --duration, and at least once each kind
                injecting = now < fault_end or not self._every_kind_injected()
                if now >= fault_end + c.converge_timeout_s:
                    self.rec.problems.append(
                        f"stopped in phase {self.phase}, faults not injected: "
                        + ", ".join(sorted(self._not_injected()))
                    )
                    break
                if self.pending_kill_at is not None and now >= self.pending_kill_at:
                    self.pending_kill_at = None
                    if injecting:
                        self._kill_worker(
                            self.rng.randrange(len(self.workers)),
                            " during a rollout stage's downloads",
                        )
                elif injecting:
                    self.inject(self._draw())
                    time.sleep(self.rng.uniform(0.5, max(1.0, c.duration_s / 40)))  # a calm gap
                elif self.phase == "done":
                    break
                time.sleep(0.5)  # the loop's pace: one look at the hub
            self.heal_all()
            self.rec.healed_at_s = self.now()
            self.say("faults   end: everything healed; waiting for the fleet to converge")
            self._converge()
            left = self.started + c.duration_s - time.monotonic()
            if left > 0:
                self.say(f"steady   {left:.0f} s more, fault-free, to the end of --duration")
                end = time.monotonic() + left
                while time.monotonic() < end:
                    self._watch()
                    time.sleep(1.0)  # nothing to do but watch
            self._finish()
        except SoakError as exc:
            self.rec.problems.append(str(exc))
            self.say(f"PROBLEM  {exc}")
        finally:
            self.close()
            self.rec.elapsed_s = self.now()
        return self.rec

    def _converge(self) -> None:
        """Wait until every device runs v2 with its verified bundle and the hub stored
        every sequence its ledger had at the heal."""
        mark = {d: self._produced(d).last_seq for d in self.ids}
        v2 = self.rec.targets.get("v2")
        deadline = time.monotonic() + self.c.converge_timeout_s
        while time.monotonic() < deadline:
            self._watch()
            devices = self._devices()
            ok = True
            for d in self.ids:
                dev = devices.get(d, {})
                a = dev.get("active") or {}
                if a.get("version") != v2 or not dev.get("online"):
                    ok = False
                    break
            if ok:
                for d in self.ids:
                    if self.api("GET", f"/v1/devices/{d}")["metrics_seq"] < mark[d]:
                        ok = False
                        break
            if ok:
                self.rec.converged_at_s = self.now()
                self.say(
                    f"converged {self.rec.converged_at_s - (self.rec.healed_at_s or 0):.1f} "
                    "s after the last fault was healed"
                )
                return
            time.sleep(1.0)  # polling the hub
        self.rec.problems.append("the fleet did not converge in time")

    def _produced(self, device: str) -> Produced:
        return read_produced(self.dir / "fleet" / device / "outbox.db")

    def _finish(self) -> None:
        """Drain every agent, stop the fleet, read ledgers, stop the hub, read its store."""
        self.rec.drained = True
        for w in self.workers:
            try:
                drained, counts = w.flush(120.0)
            except Exception as exc:
                self.rec.problems.append(f"flush: {exc}")
                self.rec.drained = False
                continue
            self.rec.drained = self.rec.drained and drained
            self.rec.final_counts.update(counts)
        for kind in ("v1", "v2", "v3"):
            with contextlib.suppress(SoakError):
                self._rollout(kind)
        self.rec.devices = self._devices()
        self.rec.events = self._events_after(0)
        for w in self.workers:
            w.stop()
        self.workers = []
        for d in self.ids:
            self.rec.produced[d] = self._produced(d)
        assert self.hub is not None
        self.rec.hub_stop_status = self.hub.stop()
        from hub.store import Store

        with Store(self.dir / "hub" / "hub.db") as store:
            for d in self.ids:
                ranges = store.stored_ranges(d)
                self.rec.stored_seqs[d] = sum(hi - lo + 1 for lo, hi in ranges)
                self.rec.stored_predictions[d] = sum(w.n for w in store.windows_for(device=d))
                seqs = [s for lo, hi in ranges for s in range(lo, hi + 1)]
                self.rec.duplicate_seqs[d] = len(seqs) - len(set(seqs))

    def close(self) -> None:
        """Stop everything the run started (idempotent)."""
        for w in self.workers:
            with contextlib.suppress(Exception):
                w.stop(30)
        self.workers = []
        if self.tap is not None:
            with contextlib.suppress(Exception):
                self.tap.close()
            self.tap = None
        if self.hub is not None:
            self.hub.stop()
        if self.mosq is not None:
            self.mosq.stop()
        for p in [*self.broker_proxies, *([self.http_proxy] if self.http_proxy else [])]:
            p.close()
        self.broker_proxies, self.http_proxy = [], None
        if self.small_disk is not None:
            with contextlib.suppress(OSError):
                self.small_disk.close()
            self.small_disk = None


def run_soak(config: SoakConfig) -> tuple[RunRecord, Path]:
    """Run one soak; returns its record and its work directory.

    Raises:
        SoakError: bad options.
    """
    if config.agents < 3:
        raise SoakError(f"--agents: at least 3, got {config.agents}")
    work = config.work or Path(tempfile.mkdtemp(prefix="edgefleet-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        filename=work / "soak.log",
        level=logging.INFO,
        force=True,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    rec = Soak(config, work).run()
    return rec, work


def remove_work(work: Path) -> None:
    """Remove a temporary work directory."""
    shutil.rmtree(work, ignore_errors=True)
