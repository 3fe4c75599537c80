"""Child process for bench_agent: a real Agent serving a steady prediction rate.

Usage: python -m benchmarks.agent_child CONFIG.toml SECONDS RATE
Prints one JSON line: rss_bytes, cpu_percent (of one core), predictions, errors.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import psutil

from edge_agent.agent import Agent, limit_malloc_arenas
from edge_agent.config import AgentConfig


def main() -> None:
    limit_malloc_arenas()  # as `edgefleet agent run` does
    config = AgentConfig.load(Path(sys.argv[1]))
    seconds, rate = float(sys.argv[2]), float(sys.argv[3])
    agent = Agent(config).start()
    deadline = time.monotonic() + 60
    while agent.active_version is None and time.monotonic() < deadline:
        time.sleep(0.05)  # waiting for the parent's directive; not part of the measurement
    features = agent.predictor.active.model.n_features if agent.predictor.active else 0
    rng = np.random.default_rng(0)
    samples = rng.normal(1.0, 0.1, (1000, features)).astype(np.float32)
    proc = psutil.Process()
    cpu0 = proc.cpu_times()
    start = time.monotonic()
    n = errors = 0
    while (elapsed := time.monotonic() - start) < seconds:
        try:
            agent.predict(samples[n % 1000])
        except Exception:
            errors += 1
        n += 1
        delay = n / rate - elapsed
        if delay > 0:
            time.sleep(delay)
    wall = time.monotonic() - start
    cpu1 = proc.cpu_times()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    result = {
        "rss_bytes": proc.memory_info().rss,
        "cpu_percent": 100.0 * cpu / wall,
        "predictions": n,
        "errors": errors,
        "rate": n / wall,
    }
    agent.stop()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
