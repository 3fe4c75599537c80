"""CPU per window of each process in a Mosquitto ingest run, as bench_hub runs it.

Usage: python -m benchmarks.ingest_cpu [RUNS]

Prints, per run, the rate and the CPU time (user + system, from /proc) per stored
window of the hub's process (the ingest worker), its relay process and the broker, and
of the load generators. Mosquitto must be installed. Linux only.
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import bench_hub
from hub.ingest import Ingest
from hub.mqtt_relay import tune_gc_for_ingest
from hub.store import Store
from tests.support.mosquitto import Mosquitto

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """The process's user + system CPU time so far, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def run_once(tmp: Path, run: int) -> None:
    """One ingest run on a fresh Mosquitto; prints its figures."""
    total = bench_hub.PROCESSES * bench_hub.DEVICES * bench_hub.EACH
    with Mosquitto(tmp / f"mosquitto{run}", {"edgefleet-hub": "h"}) as m:
        store = Store(tmp / f"cpu{run}.db")
        ingest = Ingest(store, m.host, m.port, "edgefleet-hub", "h", client_id=f"cpu-{run}").start()
        assert ingest._relay is not None and m.proc is not None
        pids = {"worker": os.getpid(), "relay": ingest._relay.pid, "broker": m.proc.pid}
        before = {k: cpu_s(p) for k, p in pids.items()}
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        load = bench_hub.load(m.host, m.port, "edgefleet-hub", "h", "hub")
        ingest.wait_until(lambda c: c["stored"] >= total, 300)
        elapsed = time.perf_counter() - start
        after = {k: cpu_s(p) for k, p in pids.items()}
        for p in load:
            p.wait(60)
        done = resource.getrusage(resource.RUSAGE_CHILDREN)
        stored = ingest.counters()["stored"]
        ingest.stop()
        store.close()
    per = {k: (after[k] - before[k]) / stored * 1e6 for k in pids}
    loadgen = (done.ru_utime + done.ru_stime - children.ru_utime - children.ru_stime) / stored * 1e6
    print(
        f"   run {run}: {stored / elapsed:6.0f} windows/s; CPU per window: worker "
        f"{per['worker']:5.1f} us, relay {per['relay']:5.1f} us, broker {per['broker']:5.1f}"
        f" us, load generators {loadgen:5.1f} us",
        flush=True,
    )


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    tune_gc_for_ingest()  # as `hub serve` does
    with tempfile.TemporaryDirectory() as d:
        for run in range(runs):
            run_once(Path(d), run)


if __name__ == "__main__":
    main()
