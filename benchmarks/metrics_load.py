"""Load generator for bench_hub: publishes metric windows from a separate process.

Usage: python -m benchmarks.metrics_load HOST PORT USER PASS PREFIX DEVICES WINDOWS_EACH
Prints the number of messages published once all are acknowledged by the broker.
"""

from __future__ import annotations

import sys

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.contract.canonical import canonical_bytes
from edge_agent.contract.messages import MetricsMessage
from edge_agent.contract.reference import ReferenceStats
from edge_agent.contract.topics import Channel, topic
from edge_agent.inference.accumulator import WindowAccumulator


def sample_window_json() -> bytes:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 10))
    ref = ReferenceStats.from_data(
        x, rng.dirichlet(np.ones(3), 500), [f"f{j}" for j in range(10)], ("a", "b", "c")
    )
    acc = WindowAccumulator(ref, "pump", 1, clock=lambda: 0.0)
    acc.record(x[:60], rng.dirichlet(np.ones(3), 60), 0.001)
    window = acc.close(now=60.0)
    assert window is not None
    return canonical_bytes([window.to_json()])


def main() -> None:
    host, port, user, password, prefix = sys.argv[1:6]
    devices, each = int(sys.argv[6]), int(sys.argv[7])
    body = sample_window_json()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"load-{prefix}", protocol=mqtt.MQTTv311
    )
    if user != "-":
        client.username_pw_set(user, password)
    client.max_inflight_messages_set(200)
    client.max_queued_messages_set(0)
    client.connect(host, int(port))
    client.loop_start()
    infos = []
    for seq in range(1, each + 1):
        for d in range(devices):
            device = f"{prefix}-{d}"
            payload = MetricsMessage.splice(device, seq, seq, body)
            infos.append(client.publish(topic(device, Channel.METRICS), payload, qos=1))
    for info in infos:
        info.wait_for_publish(120)
    client.loop_stop()
    client.disconnect()
    print(len(infos), flush=True)


if __name__ == "__main__":
    main()
