"""Run the benchmarks and print their figures (ratios are measured within one run)."""

from __future__ import annotations

import importlib
import sys
import time

BENCHMARKS = [
    "bench_bundle",
    "bench_predict",
    "bench_agent",
    "bench_hub",
    "bench_drift",
    "bench_accuracy",
    "bench_fidelity",
    "bench_rollout",
    "bench_console",
]


def main(argv: list[str]) -> int:
    names = argv or BENCHMARKS
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        print(f"== {name}: {module.__doc__.strip().splitlines()[0]}")
        start = time.perf_counter()
        module.run()
        print(f"   ({time.perf_counter() - start:.1f} s)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
