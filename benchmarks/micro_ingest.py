"""CPU per metrics window on the hub's ingest path, stage by stage (process CPU time).

Usage: python -m benchmarks.micro_ingest [--windows N] [--repeat R] [--profile STAGE]

Feeds N payloads built as :mod:`benchmarks.metrics_load` builds them (one window each,
devices interleaved, sequences rising) through the functions the ingest uses:

- ``pickle``: the relay's side of the pipe (pickling the batches);
- ``unpickle``: the worker's side of the pipe;
- ``parse``: :func:`hub.ingest.parse_message` (parse and validate);
- ``store``: :meth:`hub.store.Store.store_metrics_batch` on already parsed messages;
- ``process``: :meth:`hub.ingest.Ingest.process` (parse, validate, store, acks).

CPU time (``time.process_time``) is robust to other load on the machine; each stage
runs ``R`` times (a fresh database each time) and the best is printed, in µs per window.
``--profile STAGE`` prints the top of cProfile for one stage instead.
"""

from __future__ import annotations

import argparse
import cProfile
import pickle
import pstats
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.metrics_load import sample_window_json
from edge_agent.contract.messages import MetricsMessage
from edge_agent.contract.topics import Channel, topic
from hub.ingest import Ingest, parse_message
from hub.mqtt_relay import tune_gc_for_ingest
from hub.store import Store

BATCH = 500
DEVICES = 200


def payloads(n: int) -> list[tuple[str, bytes]]:
    """``n`` (topic, payload) pairs as the load generator publishes them."""
    body = sample_window_json()
    out = []
    seq = 0
    while len(out) < n:
        seq += 1
        for d in range(min(DEVICES, n - len(out))):
            device = f"load{d % 2}-{d // 2}"
            out.append(
                (
                    topic(device, Channel.METRICS),
                    MetricsMessage.splice(device, seq, seq, body),
                )
            )
    return out


def batches(items: list[Any]) -> list[list[Any]]:
    """``items`` cut into batches of :data:`BATCH`."""
    return [items[i : i + BATCH] for i in range(0, len(items), BATCH)]


class _Pipe:
    """Stands in for the relay's connection: pickles what is sent, as the real one does."""

    def send(self, message: Any) -> None:
        pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)


def stage_pickle(msgs: list[tuple[str, bytes]], tmp: Path) -> Callable[[], None]:
    """The relay's side of the pipe: pickling the batches (its hand-off between threads
    costs wake-ups, which only a real run shows: benchmarks.ingest_cpu)."""
    cut = batches(msgs)

    def run() -> None:
        pipe = _Pipe()
        for b in cut:
            pipe.send(("batch", b))

    return run


def stage_unpickle(msgs: list[tuple[str, bytes]], tmp: Path) -> Callable[[], None]:
    """The worker's side of the pipe."""
    blobs = [pickle.dumps(("batch", b), protocol=pickle.HIGHEST_PROTOCOL) for b in batches(msgs)]

    def run() -> None:
        for blob in blobs:
            pickle.loads(blob)

    return run


def stage_parse(msgs: list[tuple[str, bytes]], tmp: Path) -> Callable[[], None]:
    """parse_message on every payload."""

    def run() -> None:
        for t, p in msgs:
            parse_message(t, p)

    return run


def stage_store(msgs: list[tuple[str, bytes]], tmp: Path) -> Callable[[], None]:
    """store_metrics_batch on parsed messages, a fresh database per run."""
    parsed = [parse_message(t, p).message for t, p in msgs]
    assert all(isinstance(m, MetricsMessage) for m in parsed)
    runs = iter(range(1_000_000))

    def run() -> None:
        store = Store(tmp / f"store{next(runs)}.db")
        try:
            for b in batches(parsed):
                store.store_metrics_batch(b)  # type: ignore[arg-type]
        finally:
            store.close()

    return run


def stage_process(msgs: list[tuple[str, bytes]], tmp: Path) -> Callable[[], None]:
    """Ingest.process on batches, a fresh database per run, acks pickled as if sent."""
    runs = iter(range(1_000_000))
    cut = batches(msgs)

    def run() -> None:
        store = Store(tmp / f"process{next(runs)}.db")
        ingest = Ingest(store, "127.0.0.1", 1)
        ingest._conn = _Pipe()  # type: ignore[assignment]
        try:
            for b in cut:
                ingest.process(b)
            counts = ingest.counters()
            assert counts["stored"] == len(msgs), counts
        finally:
            store.close()

    return run


STAGES: dict[str, Callable[[list[tuple[str, bytes]], Path], Callable[[], None]]] = {
    "pickle": stage_pickle,
    "unpickle": stage_unpickle,
    "parse": stage_parse,
    "store": stage_store,
    "process": stage_process,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", choices=sorted(STAGES))
    parser.add_argument("--stages", default=",".join(STAGES))
    args = parser.parse_args()
    tune_gc_for_ingest()  # as both ingest processes do
    msgs = payloads(args.windows)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if args.profile:
            run = STAGES[args.profile](msgs, tmp)
            run()  # warm up
            prof = cProfile.Profile()
            prof.runcall(run)
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
            return
        for name in args.stages.split(","):
            run = STAGES[name](msgs, tmp)
            run()  # warm up
            best = float("inf")
            for _ in range(args.repeat):
                start = time.process_time()
                run()
                best = min(best, time.process_time() - start)
            print(f"{name:<9} {best / len(msgs) * 1e6:7.1f} us/window", flush=True)


if __name__ == "__main__":
    main()
