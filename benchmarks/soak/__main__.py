"""``python -m benchmarks.soak``: one soak run; exit status 0 only if every invariant held."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.soak.invariants import judge, summary, table, write
from benchmarks.soak.parts import SoakError
from benchmarks.soak.run import FAULTS, SoakConfig, remove_work, run_soak


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run, print the table, write the JSON; returns the exit status."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    p.add_argument("--seed", type=int, default=1, help="draws every fault (default 1)")
    p.add_argument("--duration", type=float, default=600.0, help="seconds (default 600)")
    p.add_argument("--agents", type=int, default=50, help="real agents (default 50)")
    p.add_argument("--per-worker", type=int, default=5, help="agents per process (default 5)")
    p.add_argument("--rate", type=float, default=2.0, help="predictions/s per agent (default 2)")
    p.add_argument("--broker", choices=("mosquitto", "embedded"), default="mosquitto")
    p.add_argument(
        "--faults",
        default=",".join(FAULTS),
        help="comma-separated fault kinds (default: all of them)",
    )
    p.add_argument(
        "--clock-jump",
        type=float,
        default=12.0,
        help="hours: the largest clock jump of clock_jump_agent (default 12, inside the "
        "hub's one-day bound for windows ending in the future)",
    )
    p.add_argument("--out", type=Path, default=None, help="write the JSON summary here")
    p.add_argument(
        "--work",
        type=Path,
        default=None,
        help="keep everything in this directory (default: a temporary one, "
        "kept only if the run failed)",
    )
    a = p.parse_args(argv)
    faults = tuple(f for f in a.faults.split(",") if f)
    unknown = sorted(set(faults) - set(FAULTS))
    if unknown:
        p.error(f"--faults: unknown {', '.join(unknown)} (known: {', '.join(FAULTS)})")
    if a.duration < 30:
        p.error("--duration: at least 30 seconds")
    if not 0 < a.clock_jump <= 24 * 365:
        p.error(f"--clock-jump: hours in (0, 8760], got {a.clock_jump}")
    config = SoakConfig(
        seed=a.seed,
        duration_s=a.duration,
        agents=a.agents,
        broker=a.broker,
        out=a.out,
        work=a.work,
        per_worker=a.per_worker,
        rate_hz=a.rate,
        faults=faults,
        clock_jump_s=a.clock_jump * 3600.0,
    )
    try:
        record, work = run_soak(config)
    except SoakError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 2
    from benchmarks.soak.run import Soak  # noqa: F401 - the canary size lives on the run

    canary = max(1, a.agents // 5)
    doc = summary(record, judge(record, canary))
    print(table(doc), flush=True)
    if a.out is not None:
        write(doc, a.out)
    if doc["ok"] and a.work is None:
        remove_work(work)
    else:
        print(f"work directory kept: {work}", flush=True)
    return 0 if doc["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
