"""Agent daemon: RSS and CPU serving 100 predictions/s; draining a day of buffered windows.

Targets: RSS <= 64 MB with the demo model loaded at 100 predictions/s, CPU <= 5 % of
one core; 1,440 buffered windows (a day offline at 60 s) drained to the hub test
double over a loopback broker in <= 5 s (embedded amqtt broker and Mosquitto).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.contract.bundle import verify_bundle
from edge_agent.contract.trust import TrustRoot
from edge_agent.daemon.agent import Agent
from edge_agent.daemon.config import AgentConfig, BrokerConfig
from edge_agent.daemon.outbox import Outbox
from edge_agent.inference.accumulator import WindowAccumulator
from hub.broker import EmbeddedBroker
from hub.modelkit import build_demo
from tests.support.bundle_server import BundleServer
from tests.support.bundles import build, model_ref
from tests.support.hub_double import HubDouble
from tests.support.mosquitto import Mosquitto

ROOT = Path(__file__).resolve().parents[1]
DAY = 1440


def write_config(
    path: Path,
    device: str,
    data: Path,
    trust: Path,
    host: str,
    port: int,
    user: str | None = None,
    password: str | None = None,
) -> None:
    auth = f'username = "{user}"\npassword = "{password}"\n' if user else ""
    path.write_text(
        f'device_id = "{device}"\ndata_dir = "{data}"\ntrust_file = "{trust}"\n'
        f'[broker]\nurl = "mqtt://{host}:{port}"\n{auth}'
        f"[monitoring]\nwindow_s = 60\nstate_interval_s = 30\n[local_api]\nport = 0\n"
    )


#: The second environment (``make .venv-tflite/.installed``): tflite-runtime, as a
#: Raspberry Pi installs ``edgefleet[agent-tflite]``.
TFLITE_PYTHON = ROOT / ".venv-tflite" / "bin" / "python"


def runtimes() -> list[tuple[str, Path | None, str]]:
    """(label, interpreter or None when absent, EDGEFLEET_TFLITE_RUNTIME) for each runtime."""
    return [
        ("ai-edge-litert", Path(sys.executable), "ai-edge-litert"),
        ("tflite-runtime", TFLITE_PYTHON if TFLITE_PYTHON.exists() else None, "tflite-runtime"),
    ]


def daemon_footprint(
    tmp: Path,
    broker: EmbeddedBroker,
    keys,
    trust_path: Path,
    bundle: Path,
    label: str,
    python: Path,
    runtime: str,
) -> None:
    device = f"bench-rss-{runtime}"
    config = tmp / f"agent-{runtime}.toml"
    write_config(config, device, tmp / f"rss-data-{runtime}", trust_path, broker.host, broker.port)
    hub = HubDouble(broker.host, broker.port, keys)
    with BundleServer() as server:
        url = server.add("/b/demo.efb", bundle.read_bytes())
        env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGEFLEET_TFLITE_RUNTIME": runtime}
        child = subprocess.Popen(
            [str(python), "-m", "benchmarks.agent_child", str(config), "20", "100"],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        hub.wait_for(lambda: hub.devices[device].states, 30, "the child agent online")
        hub.publish_directive(hub.directive(device, model_ref(bundle, url)))
        out, _ = child.communicate(timeout=120)
    hub.close()
    result = json.loads(out.strip().splitlines()[-1])
    mb = 2**20
    print(
        f"   daemon on {label:<14} at {result['rate']:.0f} predictions/s: "
        f"RSS {result['rss_bytes'] / mb:.1f} MB (target <= 64 MB; "
        f"PSS {result['pss_bytes'] / mb:.1f}, USS {result['uss_bytes'] / mb:.1f}), "
        f"CPU {result['cpu_percent']:.1f} % of one core (target <= 5 %), "
        f"{result['errors']} errors"
    )


def fill_outbox(data_dir: Path, bundle: Path, trust: TrustRoot, n: int) -> None:
    reference = verify_bundle(bundle, trust).reference()
    rng = np.random.default_rng(0)
    acc = WindowAccumulator(reference, "pump", 1, clock=lambda: 0.0)
    x = rng.normal(1.0, 0.2, (n, len(reference.features)))
    p = rng.dirichlet(np.ones(len(reference.labels)), n)
    data_dir.mkdir(parents=True, exist_ok=True)
    with Outbox(data_dir / "outbox.db", budget_bytes=64 << 20) as outbox:
        for i in range(n):
            acc.record(x[i], p[i], 0.001)
            window = acc.close(now=60.0 * (i + 1))
            assert window is not None
            outbox.append(window)


def drain(
    label: str,
    tmp: Path,
    host: str,
    port: int,
    keys,
    trust_path: Path,
    trust: TrustRoot,
    bundle: Path,
    hub_auth: tuple[str, str] | None = None,
    device_auth: tuple[str, str] | None = None,
) -> None:
    device = f"drain-{label.split()[0].lower()}"
    data = tmp / device
    fill_outbox(data, bundle, trust, DAY)
    hub = HubDouble(
        host, port, keys, **({"username": hub_auth[0], "password": hub_auth[1]} if hub_auth else {})
    )
    config = AgentConfig(
        device_id=device,
        data_dir=data,
        trust_file=trust_path,
        broker=BrokerConfig(
            host=host,
            port=port,
            username=device_auth[0] if device_auth else None,
            password=device_auth[1] if device_auth else None,
        ),
        window_s=3600,
        local_api_port=-1,
        state_interval_s=3600,
    )
    agent = Agent(config, local_api=False)
    start = time.perf_counter()
    agent.start()
    hub.wait_for(lambda: len(hub.seqs_stored(device)) >= DAY, 120, "all windows stored")
    stored = time.perf_counter() - start
    assert agent.wait_for_drain(60), "outbox emptied"
    emptied = time.perf_counter() - start
    agent.stop()
    hub.close()
    print(
        f"   drain {DAY} windows via {label:<9}: all stored by the hub double in {stored:5.2f} s, "
        f"outbox empty after {emptied:5.2f} s (target <= 5 s)"
    )


def run() -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        keys = [Ed25519PrivateKey.generate()]
        trust = TrustRoot.from_keys([k.public_key() for k in keys], 1)
        trust_path = tmp / "trust.json"
        trust_path.write_text(json.dumps(trust.to_json()))
        build_demo(tmp / "demo", hidden=(32,), seed=7)
        with np.load(tmp / "demo" / "reference.npz") as data:
            ref = np.asarray(data["x"], dtype=np.float64)
        bundle = build(
            (tmp / "demo" / "model-int8.tflite").read_bytes(), 1, keys, tmp / "demo.efb", ref
        )
        with EmbeddedBroker() as broker:
            for label, python, runtime in runtimes():
                if python is None:
                    print(f"   daemon on {label}: skipped ({TFLITE_PYTHON} absent)")
                    continue
                daemon_footprint(tmp, broker, keys, trust_path, bundle, label, python, runtime)
            drain(
                "embedded (amqtt)", tmp, broker.host, broker.port, keys, trust_path, trust, bundle
            )
        users = {"edgefleet-hub": "h", "drain-mosquitto": "d"}
        with Mosquitto(tmp / "mosquitto", users) as m:
            drain(
                "mosquitto",
                tmp,
                m.host,
                m.port,
                keys,
                trust_path,
                trust,
                bundle,
                ("edgefleet-hub", "h"),
                ("drain-mosquitto", "d"),
            )
