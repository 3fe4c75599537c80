"""A hub to try the console on, as an operator would (not a test):

    python -m tests.support.console_hub /tmp/console-hub [--agents 2]

Starts a real hub (embedded broker) holding the seeded fleet of tests/support/fleet.py,
optionally with real agents, writes ``<dir>/admin.token`` and ``<dir>/read.token``
(mode 600), prints the console command, and serves until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from edge_agent.daemon.agent import Agent
from edge_agent.daemon.config import AgentConfig, BrokerConfig
from hub.modelkit.pump import build_demo
from tests.support.fleet import running_fleet


def _predict_forever(fleet, agents, reference: np.ndarray, stop: threading.Event) -> None:
    """Deploy pump v2 to the agents, then predict on reference rows (the last agent's
    first feature shifted, so the fleet drifts), so windows and drift reach the hub."""
    from edgefleet_client import HubClient, HubError

    with HubClient(fleet.url, fleet.tokens["admin"]) as hub:
        for a in agents:
            hub.deploy(a.config.device_id, "pump", 2)
    rng = np.random.default_rng(1)
    while not stop.wait(0.05):
        for i, a in enumerate(agents):
            row = reference[rng.integers(len(reference))].copy()
            if i == len(agents) - 1:
                row[0] += 3 * reference[:, 0].std()
            try:
                a.predict(row)
            except HubError:
                pass
            except Exception:  # no model active yet: keep feeding
                continue


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("directory", type=Path)
    parser.add_argument("--agents", type=int, default=0)
    args = parser.parse_args()
    out: Path = args.directory
    out.mkdir(parents=True, exist_ok=True)
    demo = out / "demo"
    if not (demo / "model-int8.tflite").exists():
        build_demo(demo, hidden=(16,), seed=3)
    with np.load(demo / "reference.npz") as data:
        reference = np.asarray(data["x"], dtype=np.float64)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    hub_dir = out / "hub"
    for old in [hub_dir, *out.glob("agent-*")]:  # a fresh hub: agents start fresh too
        shutil.rmtree(old, ignore_errors=True)
    with running_fleet(
        hub_dir, (demo / "model-int8.tflite").read_bytes(), reference, time.time()
    ) as fleet:
        for scope, token in fleet.tokens.items():
            path = out / f"{scope}.token"
            path.write_text(token)
            os.chmod(path, 0o600)
        agents = []
        broker = fleet.service.broker
        assert broker is not None
        for i in range(args.agents):
            config = AgentConfig(
                device_id=f"agent-{i + 1:02d}",
                data_dir=out / f"agent-{i}",
                trust_file=hub_dir / "keys" / "trust.json",
                broker=BrokerConfig(host=broker.host, port=broker.port),
                window_s=30,
                local_api_port=0,
                state_interval_s=5,
            )
            agents.append(Agent(replace(config)).start())
        if agents:
            feed = threading.Thread(
                target=_predict_forever, args=(fleet, agents, reference, stop), daemon=True
            )
            feed.start()
        info = {"hub": fleet.url, "tokens": {s: str(out / f"{s}.token") for s in fleet.tokens}}
        print(json.dumps(info), flush=True)
        print(f"edgefleet console --hub {fleet.url} --token-file {out / 'admin.token'}", flush=True)
        stop.wait()
        for a in agents:
            a.stop()


if __name__ == "__main__":
    main()
