"""Hub: ingest rate vs a bare paho subscriber on the same broker; device-list API latency.

Targets: ingest (stored and acknowledged) >= 0.5x the rate a bare paho subscriber
receives, with the load from separate processes, on the embedded broker and on
Mosquitto (a 100,000-device fleet at 60 s windows sends ~1,700 windows/s);
GET /v1/devices?limit=100 over 10,000 devices: p95 <= 50 ms on loopback.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.contract.messages import Health, ModelVersion, State
from edge_agent.contract.topics import Channel, fleet_filter
from hub.api import ApiServer, HubContext, create_app
from hub.broker import EmbeddedBroker
from hub.ingest import Ingest
from hub.mqtt_relay import tune_gc_for_ingest
from hub.store import Store
from hub.tokens import TokenStore
from tests.support.mosquitto import Mosquitto

ROOT = Path(__file__).resolve().parents[1]
PROCESSES, DEVICES, EACH = 2, 100, 100  # 2 x 100 x 100 = 20,000 windows per run


def load(host: str, port: int, user: str, password: str, tag: str) -> list[subprocess.Popen]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.metrics_load",
                host,
                str(port),
                user,
                password,
                f"{tag}{i}",
                str(DEVICES),
                str(EACH),
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        for i in range(PROCESSES)
    ]


def bare_rate(host: str, port: int, user: str, password: str) -> float:
    total = PROCESSES * DEVICES * EACH
    got = 0
    done = threading.Event()
    first: list[float] = []

    def on_message(client, userdata, message) -> None:
        nonlocal got
        if not first:
            first.append(time.perf_counter())
        got += 1
        if got >= total:
            done.set()

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bare-sub", protocol=mqtt.MQTTv311)
    if user != "-":
        sub.username_pw_set(user, password)
    sub.on_message = on_message
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.connect(host, port)
    sub.loop_start()
    sub.subscribe(fleet_filter(Channel.METRICS), qos=1)
    subscribed.wait(10)
    start = time.perf_counter()
    procs = load(host, port, user, password, "bare")
    done.wait(300)
    elapsed = time.perf_counter() - start
    for p in procs:
        p.wait(60)
    sub.loop_stop()
    sub.disconnect()
    return got / elapsed


def ingest_rate(host: str, port: int, user: str, password: str, db: Path) -> float:
    total = PROCESSES * DEVICES * EACH
    tune_gc_for_ingest()  # as `hub serve` does
    store = Store(db)
    ingest = Ingest(
        store,
        host,
        port,
        username=None if user == "-" else user,
        password=None if user == "-" else password,
        client_id=f"bench-ingest-{db.stem}",
    ).start()
    start = time.perf_counter()
    procs = load(host, port, user, password, "hub")
    ok = ingest.wait_until(lambda c: c["stored"] >= total, 300)
    elapsed = time.perf_counter() - start
    for p in procs:
        p.wait(60)
    stored = ingest.counters()["stored"]
    ingest.stop()
    store.close()
    if not ok:
        print(f"   (ingest stored only {stored} of {total})")
    return stored / elapsed


def ingest_bench(label: str, host: str, port: int, user: str, password: str, tmp: Path) -> None:
    bare = bare_rate(host, port, user, password)
    hub = ingest_rate(host, port, user, password, tmp / f"{label}.db")
    print(
        f"   ingest via {label:<9}: bare paho subscriber {bare:7.0f} windows/s, hub stored+acked "
        f"{hub:7.0f} windows/s, ratio {hub / bare:4.2f} (target >= 0.5)"
    )


def device_list_bench(tmp: Path) -> None:
    db = tmp / "devices.db"
    store = Store(db)
    tokens = TokenStore(db)
    token, _ = tokens.create("bench", ["read"])
    for i in range(10_000):
        store.record_state(
            State(
                device_id=f"dev-{i:05d}",
                online=True,
                ts=1.0,
                active=ModelVersion("pump", 1),
                health=Health(),
            ),
            now=1.0,
        )
    with ApiServer(create_app(HubContext(tokens=tokens, store=store))) as server:
        headers = {"Authorization": f"Bearer {token}"}
        times = []
        with httpx.Client(base_url=server.url, headers=headers) as client:
            for i in range(300):
                start = time.perf_counter()
                r = client.get(
                    "/v1/devices", params={"limit": 100, "after": f"dev-{(i * 97) % 9900:05d}"}
                )
                times.append(time.perf_counter() - start)
                assert r.status_code == 200 and len(r.json()["devices"]) == 100
    times.sort()
    p95 = times[int(0.95 * len(times))] * 1000
    print(
        f"   GET /v1/devices?limit=100 over 10,000 devices: p50 "
        f"{statistics.median(times) * 1000:.1f} ms, p95 {p95:.1f} ms (target <= 50 ms)"
    )
    store.close()
    tokens.close()


def run() -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        device_list_bench(tmp)
        with EmbeddedBroker() as broker:
            ingest_bench("embedded", broker.host, broker.port, "-", "-", tmp)
        with Mosquitto(tmp / "mosquitto", {"edgefleet-hub": "h"}) as m:
            ingest_bench("mosquitto", m.host, m.port, "edgefleet-hub", "h", tmp)
