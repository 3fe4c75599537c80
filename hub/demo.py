"""The demo job behind ``make demo``.

For now (until the fleet demo exists): create keys, train the demo model, build a
signed int8 bundle, tamper with a copy, and show that verification accepts the one
and refuses the other.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edge_agent.bundle import verify_bundle
from edge_agent.errors import BundleError
from edge_agent.input_schema import FeatureSpec, InputSchema
from edge_agent.trust import TrustRoot
from hub.bundler import ReferenceData, build_bundle
from hub.keys import init_keys, load_private_key
from hub.modelkit.dataset import CLASSES, FEATURE_RANGES, FEATURES
from hub.modelkit.demo import build_demo


def demo_schema() -> InputSchema:
    """The input schema of the demo model (physical sensor ranges)."""
    return InputSchema(
        features=tuple(FeatureSpec(n, *FEATURE_RANGES[n]) for n in FEATURES),
        labels=CLASSES,
        out_of_range="accept",
        nan="refuse",
    )


def run_demo(directory: Path) -> Iterator[str]:
    """Run the demo in ``directory``, yielding one line of output per step.

    Raises:
        EdgeFleetError: a step failed unexpectedly.
    """
    directory.mkdir(parents=True, exist_ok=True)
    key_dir = directory / "keys"
    if (key_dir / "trust.json").exists():
        yield f"keys     reusing {key_dir}"
        key_path = sorted(key_dir.glob("key-*.pem"))[0]
    else:
        _, files = init_keys(key_dir)
        key_path = files[0].path
        yield f"keys     created {key_path} and {key_dir / 'trust.json'}"
    trust = TrustRoot.load(key_dir / "trust.json")
    report = build_demo(directory / "model")
    yield from report.lines()
    with np.load(directory / "model" / "reference.npz") as data:
        reference = ReferenceData(np.asarray(data["x"], dtype=np.float64), FEATURES)
    bundle_path = directory / "demo-v1.efb"
    manifest = build_bundle(
        (directory / "model" / "model-int8.tflite").read_bytes(),
        name="pump-health",
        version=1,
        reference=reference,
        keys=[load_private_key(key_path).key],
        out=bundle_path,
        schema=demo_schema(),
        lineage={"source": "edgefleet demo", "int8_accuracy": report.int8_accuracy},
    )
    yield f"bundle   {bundle_path} ({bundle_path.stat().st_size} bytes, {manifest.name} v1)"
    verified = verify_bundle(bundle_path, trust)
    yield f"verify   OK: signed by {len(verified.signers)} trusted key(s), all members match"
    tampered = directory / "demo-v1-tampered.efb"
    shutil.copyfile(bundle_path, tampered)
    data = bytearray(tampered.read_bytes())
    data[data.index(b"TFL3") + 64] ^= 0xFF
    tampered.write_bytes(bytes(data))
    try:
        verify_bundle(tampered, trust)
    except BundleError as exc:
        yield f"tamper   refused as expected: {exc}"
    else:
        raise BundleError("a tampered bundle verified; this is a bug")
    yield from run_agent_demo(directory, bundle_path, key_path)


def run_agent_demo(directory: Path, bundle_path: Path, key_path: Path) -> Iterator[str]:
    """Roll the demo bundle out to one agent over the embedded broker, then predict.

    Until the hub service exists, this function plays the hub's part by hand: it signs
    a directive, serves the bundle over HTTP, and listens to what the agent reports.

    Raises:
        EdgeFleetError: a step failed unexpectedly.
    """
    import functools
    import http.server
    import queue
    import threading
    import time

    import httpx
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from edge_agent.agent import Agent
    from edge_agent.config import AgentConfig, BrokerConfig
    from edge_agent.directive import Directive, ModelRef, Probation, SignedDirective
    from edge_agent.messages import Event, MetricsMessage
    from edge_agent.topics import Channel, topic
    from edge_agent.trust import Context
    from hub.broker import EmbeddedBroker
    from hub.signing import sign

    device = "pump-001"
    shutil.rmtree(directory / "agent", ignore_errors=True)  # a fresh device on every run

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    handler = functools.partial(QuietHandler, directory=str(bundle_path.parent))
    http_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=http_server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{http_server.server_address[1]}/{bundle_path.name}"
    inbox: queue.Queue[tuple[Channel, bytes]] = queue.Queue()
    with EmbeddedBroker() as broker:
        yield f"broker   embedded MQTT broker on {broker.url}"
        hub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="demo-hub")
        hub.on_message = lambda c, u, m: inbox.put(
            (Channel(m.topic.rsplit("/", 1)[1]), bytes(m.payload))
        )
        hub.connect(broker.host, broker.port)
        hub.loop_start()
        hub.subscribe([(topic(device, Channel.EVENTS), 1), (topic(device, Channel.METRICS), 1)])
        config = AgentConfig(
            device_id=device,
            data_dir=directory / "agent",
            trust_file=directory / "keys" / "trust.json",
            broker=BrokerConfig(host=broker.host, port=broker.port),
            window_s=3600,
            local_api_port=0,
        )
        agent = Agent(config).start()
        try:
            yield f"agent    {device} started; local API on http://127.0.0.1:{agent.local_api.port}"  # type: ignore[union-attr]
            digest = hashlib.sha256(bundle_path.read_bytes()).hexdigest()
            now = int(time.time())
            directive = Directive(
                device_id=device,
                seq=now,
                issued_at=now,
                expires_at=now + 3600,
                model=ModelRef("pump-health", 1, digest, bundle_path.stat().st_size, (url,)),
                probation=Probation(window_s=1.0, min_predictions=5),
            )
            signatures = sign(
                Context.DIRECTIVE, directive.signed_bytes(), [load_private_key(key_path).key]
            )
            payload = SignedDirective(directive, tuple(signatures)).to_bytes()
            hub.publish(topic(device, Channel.DESIRED), payload, qos=1, retain=True)
            yield f"directive signed, retained on {topic(device, Channel.DESIRED)}"
            with np.load(directory / "model" / "test.npz") as data:
                test_x = np.asarray(data["x"], dtype=np.float32)
            deadline = time.monotonic() + 60
            predicted = False
            while time.monotonic() < deadline:
                try:
                    channel, body = inbox.get(timeout=1.0)
                except queue.Empty:
                    continue
                if channel is Channel.EVENTS:
                    event = Event.from_bytes(body)
                    yield f"event    {event.kind.value:<16} {event.detail}"
                    if event.kind.value == "activated" and not predicted:
                        predicted = True
                        api = f"http://127.0.0.1:{agent.local_api.port}/v1/predict"  # type: ignore[union-attr]
                        for row in test_x[:20]:
                            httpx.post(api, json={"inputs": row.tolist()})
                        answer = httpx.post(api, json={"inputs": test_x[:3].tolist()}).json()
                        yield f"predict  POST /v1/predict -> classes {answer['classes']}"
                    if event.kind.value in ("probation_passed", "rolled_back", "failed"):
                        agent.close_window()
                elif channel is Channel.METRICS:
                    m = MetricsMessage.from_bytes(body)
                    w = m.windows[0]
                    yield (
                        f"metrics  window seq {m.seq_lo}: {w.n} predictions, classes "
                        f"{dict(zip(CLASSES, w.class_counts, strict=False))}, "
                        f"no raw data sent"
                    )
                    break
        finally:
            agent.stop()
            hub.loop_stop()
            http_server.shutdown()
