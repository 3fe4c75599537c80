"""Flake hunt: run the integration tests several times in a row with every core loaded.

``make flake-check`` runs this. Each repetition is one pytest run of the integration
tests (the files that start brokers, agents, hubs and HTTP servers) while one busy-loop
process per core competes for the CPU, as on a shared CI machine. At the end it prints
every test that failed in any repetition, with the repetitions it failed in, and exits 1
if there was one.

Usage::

    python -m tests.flake_check [--runs N] [--burners K] [pytest args or paths ...]

Failures are read from each run's JUnit XML report, so a crash that kills pytest itself
shows as a failed run too.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

#: The tests that start real processes, brokers and servers: where timing matters.
INTEGRATION = (
    "tests/agent/test_agent.py",
    "tests/agent/test_agent_hub.py",
    "tests/agent/test_checkpoint.py",
    "tests/agent/test_download.py",
    "tests/agent/test_faults.py",
    "tests/agent/test_hotpath.py",
    "tests/agent/test_mosquitto.py",
    "tests/agent/test_network_faults.py",
    "tests/agent/test_rotation.py",
    "tests/hub",
    "tests/client",
    "tests/tui",
    "tests/test_cli.py",
    "tests/demo/test_demo_run.py",
)


def _burn() -> None:
    """Keep one core busy until terminated."""
    while True:
        pass


def _failures(report: Path) -> list[str]:
    """Return the node ids of the failed or errored test cases in a JUnit XML report."""
    root = ET.parse(report).getroot()
    failed: list[str] = []
    for case in root.iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(f"{case.get('classname')}::{case.get('name')}")
    return failed


def main(argv: list[str] | None = None) -> int:
    """Run the repetitions; return 0 when no test failed in any of them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=int(os.environ.get("FLAKE_RUNS", "5")))
    parser.add_argument("--burners", type=int, default=os.cpu_count() or 2)
    parser.add_argument("pytest_args", nargs="*", help="paths or pytest options")
    args = parser.parse_args(argv)
    targets = args.pytest_args or list(INTEGRATION)

    burners = [multiprocessing.Process(target=_burn, daemon=True) for _ in range(args.burners)]
    for proc in burners:
        proc.start()
    failed: dict[str, list[int]] = defaultdict(list)
    broken_runs: list[int] = []
    durations: list[float] = []
    try:
        with tempfile.TemporaryDirectory(prefix="flake-check-") as tmp:
            for run in range(1, args.runs + 1):
                report = Path(tmp) / f"run-{run}.xml"
                cmd = [
                    sys.executable,
                    "-m",
                    "pytest",
                    "-q",
                    "-p",
                    "no:cacheprovider",
                    f"--junitxml={report}",
                    *targets,
                ]
                print(
                    f"flake-check: run {run}/{args.runs} with {args.burners} CPU burners",
                    flush=True,
                )
                start = time.monotonic()
                code = subprocess.call(cmd)
                durations.append(time.monotonic() - start)
                names = _failures(report) if report.exists() else []
                for name in names:
                    failed[name].append(run)
                if code not in (0, 1) or (code == 1 and not names):
                    broken_runs.append(run)
    finally:
        for proc in burners:
            proc.terminate()
        for proc in burners:
            proc.join()

    print()
    print(
        f"flake-check: {args.runs} runs of {' '.join(targets)} under {args.burners} "
        f"CPU burners, {min(durations):.0f}-{max(durations):.0f} s each"
    )
    if broken_runs:
        print(f"flake-check: pytest itself failed in runs {broken_runs}")
    if not failed:
        print("flake-check: no test failed in any run")
    for name, runs in sorted(failed.items()):
        print(f"FLAKY {name}: failed in run(s) {runs} of {args.runs}")
    return 1 if failed or broken_runs else 0


if __name__ == "__main__":
    sys.exit(main())
