"""Faults the agent must survive: kill -9 at bad moments, crashes on probation, a broker that
goes away, a hub whose HTTP is down. The daemon runs as a real `edgefleet agent run` process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from edge_agent.agent import Agent
from edge_agent.config import AgentConfig, BrokerConfig
from edge_agent.directive import Probation
from edge_agent.slots import SlotStore
from edge_agent.trust import TrustRoot
from hub.broker import EmbeddedBroker
from tests.support.bundles import model_ref
from tests.support.hub_double import HubDouble

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[2]


def write_toml(config: AgentConfig, path: Path) -> Path:
    path.write_text(
        f'device_id = "{config.device_id}"\ndata_dir = "{config.data_dir}"\n'
        f'trust_file = "{config.trust_file}"\n'
        f'[broker]\nurl = "mqtt://{config.broker.host}:{config.broker.port}"\n'
        f"[monitoring]\nwindow_s = 3600\nstate_interval_s = 3600\n[local_api]\nport = 0\n"
    )
    return path


class Daemon:
    """`edgefleet agent run` in a child process, killed with SIGKILL when the test says."""

    def __init__(self, toml: Path) -> None:
        self.toml = toml
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent.cli", "agent", "run", "--config", str(self.toml)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)


@pytest.fixture
def daemon(agent_config, tmp_path):
    d = Daemon(write_toml(agent_config, tmp_path / "agent.toml"))
    yield d
    d.stop()


def active_slot_verifies(config: AgentConfig, trust: TrustRoot) -> int:
    """The version the pointer names as active, after verifying its bundle again."""
    store = SlotStore(config.data_dir, trust)
    pointer = store.pointer()
    assert pointer.active is not None, "no active model after the kill"
    store.load(pointer.active)  # raises if the slot is missing or does not verify
    return pointer.active.version


@pytest.mark.parametrize("kill_on", ["received", "verified", "activated"])
def test_kill_during_activation_keeps_a_verified_model(
    daemon, agent_config, hub, server, bundles, trust_2of3, kill_on
):
    dev = agent_config.device_id
    daemon.start()
    d1 = hub.publish_directive(
        hub.directive(
            dev, model_ref(bundles["v1"], server.add("/b/v1.efb", bundles["v1"].read_bytes()))
        )
    )
    hub.wait_for(hub.event(dev, "probation_passed", d1.seq), what="v1 passed probation")
    ref2 = model_ref(bundles["v2"], server.add("/b/v2.efb", bundles["v2"].read_bytes()), version=2)
    d2 = hub.publish_directive(hub.directive(dev, ref2))
    hub.wait_for(hub.event(dev, kill_on, d2.seq), what=kill_on)
    daemon.kill()  # kill -9 right after the agent reported this step
    assert active_slot_verifies(agent_config, trust_2of3) in (1, 2)
    daemon.start()  # the restarted agent converges on the retained directive
    hub.wait_for(
        lambda: any(s.active and s.active.version == 2 for s in hub.devices[dev].states),
        what="converged on v2",
    )
    daemon.stop()
    assert active_slot_verifies(agent_config, trust_2of3) == 2


def test_two_crashes_on_probation_roll_back_to_previous(daemon, agent_config, hub, server, bundles):
    dev = agent_config.device_id
    daemon.start()
    d1 = hub.publish_directive(
        hub.directive(
            dev, model_ref(bundles["v1"], server.add("/b/v1.efb", bundles["v1"].read_bytes()))
        )
    )
    hub.wait_for(hub.event(dev, "probation_passed", d1.seq))
    gates = Probation(window_s=3600, min_predictions=10, max_crashes=2)
    ref2 = model_ref(bundles["v2"], server.add("/b/v2.efb", bundles["v2"].read_bytes()), version=2)
    d2 = hub.publish_directive(hub.directive(dev, ref2, probation=gates))
    hub.wait_for(hub.event(dev, "activated", d2.seq))
    daemon.kill()  # crash 1 while v2 is on probation
    states_before = len(hub.devices[dev].states)
    daemon.start()
    hub.wait_for(
        lambda: len(hub.devices[dev].states) > states_before and hub.devices[dev].states[-1].online,
        what="back online after crash 1",
    )
    assert hub.devices[dev].states[-1].active.version == 2
    daemon.kill()  # crash 2
    daemon.start()
    rolled = hub.wait_for(hub.event(dev, "rolled_back", d2.seq), what="rollback after 2 crashes")
    assert "2 crashes" in rolled.detail
    hub.wait_for(
        lambda: (
            (last := [s for s in hub.devices[dev].states if s.online][-1]).active
            and last.active.version == 1
        ),
        what="online on v1 again",
    )


def test_broker_gone_and_back_loses_no_window(
    tmp_path, trust_file, signing_keys, server, bundles, reference_x
):
    port_broker = EmbeddedBroker().start()
    host, port = port_broker.host, port_broker.port
    hub = HubDouble(host, port, signing_keys[:2])
    config = AgentConfig(
        device_id="dev-broker",
        data_dir=tmp_path / "data",
        trust_file=trust_file,
        broker=BrokerConfig(host=host, port=port),
        window_s=3600,
        local_api_port=0,
        state_interval_s=3600,
        resend_after_s=2.0,
    )
    agent = Agent(config, local_api=False).start()
    try:
        d1 = hub.publish_directive(
            hub.directive(
                "dev-broker",
                model_ref(bundles["v1"], server.add("/b/v1.efb", bundles["v1"].read_bytes())),
            )
        )
        hub.wait_for(hub.event("dev-broker", "activated", d1.seq))
        port_broker.stop()  # the broker dies
        for row in reference_x[:30]:
            assert agent.predict(row).model.version == 1  # still serving
        assert agent.close_window()
        assert agent.outbox.depth() == 1  # kept, not sent
        port_broker = EmbeddedBroker(host, port).start()  # back, with nothing retained
        assert agent.wait_for_drain(60), "window delivered after the broker returned"
        (window,) = next(iter(hub.devices["dev-broker"].windows.values())).windows
        assert window.n == 30
    finally:
        agent.stop()
        hub.close()
        port_broker.stop()


def test_hub_http_down_reports_one_line_and_keeps_serving(
    agent_config, hub, server, bundles, reference_x
):
    from tests.support.bundle_server import refused_url

    config = replace(agent_config, download_attempts=2)
    dev = config.device_id
    with Agent(config) as agent:
        d1 = hub.publish_directive(
            hub.directive(
                dev, model_ref(bundles["v1"], server.add("/b/v1.efb", bundles["v1"].read_bytes()))
            )
        )
        hub.wait_for(hub.event(dev, "activated", d1.seq))
        with refused_url("/b/v2.efb") as url:
            ref2 = model_ref(bundles["v2"], url, version=2)
            d2 = hub.publish_directive(hub.directive(dev, ref2))
            failed = hub.wait_for(hub.event(dev, "failed", d2.seq), what="failed download")
        assert "\n" not in failed.detail and "refused" in failed.detail.lower()
        assert agent.predict(reference_x[0]).model.version == 1
