"""Child process for bench_agent: a real Agent serving a steady prediction rate.

Usage: python -m benchmarks.agent_child CONFIG.toml SECONDS RATE
Prints one JSON line: rss_bytes, pss_bytes, uss_bytes, cpu_percent (of one core),
predictions, errors. With ``EDGEFLEET_BENCH_SMAPS=1`` it also prints, on stderr, the
largest resident mappings (from ``/proc/self/smaps``) to see where the RSS goes.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import psutil

from edge_agent.daemon.agent import Agent, limit_malloc_arenas
from edge_agent.daemon.config import AgentConfig


def smaps_breakdown(top: int = 25) -> list[tuple[int, str]]:
    """Resident kB per mapped file (anonymous mappings grouped as ``[anon]``), largest first."""
    sizes: dict[str, int] = {}
    name = "[anon]"
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split(None, 1)[0]
            if "-" in head and not head.endswith(":"):
                parts = line.split(None, 5)
                name = parts[5].strip() if len(parts) > 5 else "[anon]"
            elif head == "Rss:":
                sizes[name] = sizes.get(name, 0) + int(line.split()[1])
    return sorted(((kb, n) for n, kb in sizes.items()), reverse=True)[:top]


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
    memory = proc.memory_full_info()
    result = {
        "rss_bytes": memory.rss,
        "pss_bytes": getattr(memory, "pss", 0),
        "uss_bytes": getattr(memory, "uss", 0),
        "cpu_percent": 100.0 * cpu / wall,
        "predictions": n,
        "errors": errors,
        "rate": n / wall,
    }
    if os.environ.get("EDGEFLEET_BENCH_SMAPS"):
        for kb, name in smaps_breakdown():
            print(f"{kb / 1024:7.1f} MB  {name}", file=sys.stderr)
        tops = sorted({m.split(".")[0] for m in sys.modules if not m.startswith("_")})
        print("modules:", " ".join(tops), file=sys.stderr)
    agent.stop()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
