"""Rollout to 200 agents at a single 100 % stage: time to all activated, and per-device
latency from directive publish to activation (p50/p99), on Mosquitto and the embedded broker.

Target: 200 devices activated within 15 s on this 2-core machine with Mosquitto. The
agents run in 4 processes of 50 (real agents: download, verify, smoke test, activate).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edge_agent.contract.directive import Probation
from hub.broker import free_port
from hub.bundler import ReferenceData
from hub.modelkit import build_demo
from hub.rollouts import Gates, RolloutSpec, Stage
from hub.service import HubService, HubSettings
from tests.support.mosquitto import Mosquitto

ROOT = Path(__file__).resolve().parents[1]
PROCESSES, PER_PROCESS = 4, 50
PASSWORD = "bench-device-password"


def run_once(
    label: str,
    tmp: Path,
    settings: HubSettings,
    model: bytes,
    ref: ReferenceData,
    host: str,
    port: int,
    password: str | None,
) -> None:
    with HubService(settings) as hub:
        if hub.registry is None or hub.runner is None or hub.store is None:
            raise RuntimeError("hub did not start")
        hub.registry.push_model(model, name="pump", reference=ref)
        trust = settings.data_dir / "keys" / "trust.json"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        children = []
        for p in range(PROCESSES):
            args = [
                sys.executable,
                "-m",
                "benchmarks.fleet_child",
                f"{label}{p}",
                str(PER_PROCESS),
                host,
                str(port),
                str(trust),
                str(tmp / f"{label}-fleet"),
            ]
            if password:
                args.append(password)
            children.append(
                subprocess.Popen(
                    args,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    env=env,
                    cwd=ROOT,
                )
            )
        for child in children:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        total = PROCESSES * PER_PROCESS
        hub.runner.wait_until(lambda: len(hub.store.list_devices(limit=1000)) >= total, 60)
        gates = Gates(
            min_success_share=0.0, max_failure_share=1.0, max_psi=None, max_latency_ratio=None
        )
        spec = RolloutSpec(
            id=f"bench-{label}",
            model="pump",
            target_version=1,
            previous_version=None,
            stages=(Stage(share=1.0, bake_s=0, gates=gates),),
            probation=Probation(window_s=3600, min_predictions=0),
        )
        start = time.time()
        hub.runner.create(spec)

        def all_activated() -> bool:
            seen: dict[str, float] = {}
            after = 0
            while page := hub.store.events(after_id=after, limit=1000):
                for r in page:
                    if r.event.kind.value == "activated":
                        seen[r.event.device_id] = r.event.ts
                after = page[-1].id
            all_activated.seen = seen  # type: ignore[attr-defined]
            return len(seen) >= total

        ok = hub.ingest.wait_until(lambda _: all_activated(), 120)  # type: ignore[union-attr]
        elapsed = time.time() - start
        seen: dict[str, float] = getattr(all_activated, "seen", {})
        published = {
            e.target: e.ts
            for e in hub.audit.entries(limit=1000)  # type: ignore[union-attr]
            if e.action == "directive.publish"
        }
        lat = sorted(seen[d] - published[d] for d in seen if d in published)
        for child in children:
            assert child.stdin is not None
            child.stdin.close()
        for child in children:
            child.wait(60)
        if not lat:
            print(f"   {label}: no activation seen ({len(seen)} of {total})")
            return
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
        print(
            f"   {label:<9}: {len(seen)}/{total} activated in {elapsed:5.1f} s "
            f"(target <= 15 s with Mosquitto){'' if ok else ' INCOMPLETE'}; publish->activated "
            f"p50 {statistics.median(lat):.2f} s, p99 {p99:.2f} s"
        )


def run() -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        build_demo(tmp / "demo", hidden=(32,), seed=7)
        model = (tmp / "demo" / "model-int8.tflite").read_bytes()
        with np.load(tmp / "demo" / "reference.npz") as data:
            ref = ReferenceData(
                np.asarray(data["x"], dtype=np.float64), tuple(f"f{i}" for i in range(10))
            )
        users = {"edgefleet-hub": "hub-pass"}
        users.update(
            {f"mosq{p}-{i:03d}": PASSWORD for p in range(PROCESSES) for i in range(PER_PROCESS)}
        )
        with Mosquitto(tmp / "mosquitto", users) as m:
            settings = HubSettings(
                data_dir=tmp / "hub-mosq",
                api_port=0,
                broker_url=f"mqtt://{m.host}:{m.port}",
                broker_username="edgefleet-hub",
                broker_password="hub-pass",
                rollout_interval_s=0.5,
            )
            run_once("mosq", tmp, settings, model, ref, m.host, m.port, PASSWORD)
        port = free_port()
        settings = HubSettings(
            data_dir=tmp / "hub-emb", api_port=0, embedded_broker_port=port, rollout_interval_s=0.5
        )
        run_once("emb", tmp, settings, model, ref, "127.0.0.1", port, None)
