"""Faults the agent must survive: kill -9 at bad moments, crashes on probation, a broker that
goes away, a hub whose HTTP is down. The daemon runs as a real `edgefleet agent run` process
(:mod:`tests.support.agent_process`); local apps reach it through its loopback HTTP API.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from edge_agent.contract.directive import Probation
from edge_agent.contract.trust import TrustRoot
from edge_agent.daemon.slots import Pointer, SlotStore
from hub.broker import EmbeddedBroker
from tests.support.agent_process import Daemon, poll, write_toml
from tests.support.bundle_server import refused_url
from tests.support.bundles import model_ref
from tests.support.hub_double import HubDouble

# runtime: the daemon runs on whichever TFLite runtime this environment has (make pytest-tflite)
pytestmark = [pytest.mark.timeout(180), pytest.mark.runtime]
WAIT = 60.0  # generous: the machine may be busy


@pytest.fixture
def toml(agent_config, tmp_path) -> Path:
    c = agent_config
    return write_toml(
        tmp_path / "agent.toml",
        device_id=c.device_id,
        data_dir=c.data_dir,
        trust_file=c.trust_file,
        broker=(c.broker.host, c.broker.port),
    )


@pytest.fixture
def daemon(toml):
    d = Daemon(toml)
    yield d
    d.close()


def pointer(data_dir: Path, trust: TrustRoot) -> Pointer:
    return SlotStore(data_dir, trust).pointer()


def active_slot_verifies(data_dir: Path, trust: TrustRoot) -> int:
    """The version the pointer names as active, after verifying its bundle again."""
    store = SlotStore(data_dir, trust)
    p = store.pointer()
    assert p.active is not None, "no active model"
    store.load(p.active)  # raises if the slot is missing or does not verify
    return p.active.version


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("kill_at", ["staged", "verified", "switched"])
def test_kill_during_activation_keeps_a_verified_model(
    daemon, agent_config, hub, server, bundles, trust_2of3, reference_x, kill_at
):
    """kill -9 at three distinct steps of activating v2 over a running v1: the model on disk
    is v1 before the pointer switch and v2 after it, verified either way, and the restarted
    agent converges on v2 (resuming from what the kill left)."""
    dev, data = agent_config.device_id, agent_config.data_dir
    v2_sha = sha256(bundles["v2"])
    daemon.start(crash_at=(kill_at, v2_sha))  # crashes at that step of v2 only
    d1 = hub.publish_directive(
        hub.directive(
            dev, model_ref(bundles["v1"], server.add("/b/v1.efb", bundles["v1"].read_bytes()))
        )
    )
    hub.wait_for(hub.event(dev, "probation_passed", d1.seq), WAIT, "v1 passed probation")
    ref2 = model_ref(bundles["v2"], server.add("/b/v2.efb", bundles["v2"].read_bytes()), version=2)
    d2 = hub.publish_directive(hub.directive(dev, ref2))
    daemon.wait_crashed()

    p = pointer(data, trust_2of3)
    staged = data / "downloads" / f"{v2_sha}.efb"
    in_slots = [f for f in (data / "slots").iterdir() if f.name.endswith(f"{v2_sha[:12]}.efb")]
    if kill_at == "staged":  # downloaded and digest-checked, not verified nor installed
        assert staged.exists() and not in_slots
        assert active_slot_verifies(data, trust_2of3) == 1 and p.probation is None
    elif kill_at == "verified":  # verified into slots/, not switched to
        assert not staged.exists() and in_slots
        assert active_slot_verifies(data, trust_2of3) == 1 and p.probation is None
    else:  # switched: v2 active on probation, v1 kept as previous
        assert active_slot_verifies(data, trust_2of3) == 2
        assert p.previous is not None and p.previous.version == 1
        assert p.probation is not None and p.probation.directive_seq == d2.seq
        assert p.probation.crashes == 0 and p.running

    daemon.start()  # the restarted agent converges on the retained directive
    hub.wait_for(hub.event(dev, "probation_passed", d2.seq), WAIT, "v2 passed probation")
    assert daemon.predict(reference_x[0].tolist())["model"]["version"] == 2
    if kill_at == "switched":  # the kill counted as a crash on probation, below the limit
        assert not hub.event(dev, "rolled_back", d2.seq)()
    daemon.stop()
    assert active_slot_verifies(data, trust_2of3) == 2
    after = pointer(data, trust_2of3)
    assert after.probation is None and not after.running  # passed, and a clean stop
    assert not staged.exists()


def test_two_crashes_on_probation_roll_back_to_previous(
    daemon, agent_config, hub, server, bundles, trust_2of3, reference_x
):
    dev, data = agent_config.device_id, agent_config.data_dir
    daemon.start()
    d1 = hub.publish_directive(
        hub.directive(
            dev, model_ref(bundles["v1"], server.add("/b/v1.efb", bundles["v1"].read_bytes()))
        )
    )
    hub.wait_for(hub.event(dev, "probation_passed", d1.seq), WAIT, "v1 passed probation")
    gates = Probation(window_s=3600, min_predictions=10, max_crashes=2)
    ref2 = model_ref(bundles["v2"], server.add("/b/v2.efb", bundles["v2"].read_bytes()), version=2)
    d2 = hub.publish_directive(hub.directive(dev, ref2, probation=gates))
    hub.wait_for(hub.event(dev, "activated", d2.seq), WAIT, "v2 activated")
    daemon.kill()  # crash 1 while v2 is on probation
    # States the killed process published just before dying may still be on their way:
    # only a state stamped after the restart comes from the new process, and that
    # process publishes its first state once it has counted the crash.
    restarted = time.time()
    daemon.start()
    back = hub.wait_for(
        lambda: next((s for s in hub.devices[dev].states if s.online and s.ts >= restarted), None),
        WAIT,
        "the restarted agent online after crash 1",
    )
    assert back.active.version == 2 and back.probation == "running"
    p = pointer(data, trust_2of3)
    assert p.probation is not None and p.probation.crashes == 1
    daemon.kill()  # crash 2
    daemon.start()
    rolled = hub.wait_for(hub.event(dev, "rolled_back", d2.seq), WAIT, "rollback after 2 crashes")
    assert "2 crashes" in rolled.detail
    assert rolled.model is not None and rolled.model.version == 2  # what failed
    hub.wait_for(
        lambda: (
            (last := [s for s in hub.devices[dev].states if s.online][-1]).active
            and last.active.version == 1
        ),
        WAIT,
        "online on v1 again",
    )
    assert daemon.predict(reference_x[0].tolist())["model"]["version"] == 1
    daemon.stop()
    p = pointer(data, trust_2of3)
    assert p.active is not None and p.active.version == 1 and p.probation is None


def test_broker_gone_and_back_loses_no_window(
    tmp_path, trust_file, signing_keys, server, bundles, reference_x
):
    """The broker dies while the daemon serves: predictions go on, the windows closed
    meanwhile wait in the outbox, and once the broker is back the daemon reconnects by
    itself and delivers them: every prediction is counted at the hub."""
    broker = EmbeddedBroker().start()
    host, port = broker.host, broker.port
    hub = HubDouble(host, port, signing_keys[:2])
    dev = "dev-broker"
    toml = write_toml(
        tmp_path / "agent.toml",
        device_id=dev,
        data_dir=tmp_path / "data",
        trust_file=trust_file,
        broker=(host, port),
        window_s=1,  # windows close on their own, broker or not
        resend_after_s=2,
    )
    daemon = Daemon(toml).start()
    try:
        d1 = hub.publish_directive(
            hub.directive(
                dev, model_ref(bundles["v1"], server.add("/b/v1.efb", bundles["v1"].read_bytes()))
            )
        )
        hub.wait_for(hub.event(dev, "activated", d1.seq), WAIT, "v1 activated")
        hub.close()
        broker.stop()  # the broker dies
        for row in reference_x[:30]:
            assert daemon.predict(row.tolist())["model"]["version"] == 1  # still serving
        poll(lambda: daemon.health()["buffer"]["depth"] >= 1, "a window kept while offline")
        broker = EmbeddedBroker(host, port).start()  # back, with nothing retained
        hub = HubDouble(host, port, signing_keys[:2])

        def counted() -> int:
            return sum(w.n for m in hub.devices[dev].windows.values() for w in m.windows)

        hub.wait_for(lambda: counted() >= 30, WAIT, "the 30 predictions at the hub")
        poll(lambda: daemon.health()["buffer"]["depth"] == 0, "the outbox emptied by the ack")
        assert counted() == 30
        daemon.stop()
    finally:
        daemon.close()
        hub.close()
        broker.stop()


def test_hub_http_down_reports_one_line_and_keeps_serving(
    agent_config, tmp_path, hub, server, bundles, reference_x
):
    c = agent_config
    dev = c.device_id
    toml = write_toml(
        tmp_path / "agent.toml",
        device_id=dev,
        data_dir=c.data_dir,
        trust_file=c.trust_file,
        broker=(c.broker.host, c.broker.port),
        attempts=2,
    )
    daemon = Daemon(toml).start()
    try:
        d1 = hub.publish_directive(
            hub.directive(
                dev, model_ref(bundles["v1"], server.add("/b/v1.efb", bundles["v1"].read_bytes()))
            )
        )
        hub.wait_for(hub.event(dev, "activated", d1.seq), WAIT, "v1 activated")
        with refused_url("/b/v2.efb") as url:
            ref2 = model_ref(bundles["v2"], url, version=2)
            d2 = hub.publish_directive(hub.directive(dev, ref2))
            failed = hub.wait_for(
                lambda: next(
                    (
                        e
                        for e in hub.devices[dev].events
                        if e.directive_seq == d2.seq and "retrying in" in e.detail
                    ),
                    None,
                ),
                WAIT,
                "failed download (retried)",
            )
        assert "\n" not in failed.detail and "refused" in failed.detail.lower()
        assert "after 2 attempts" in failed.detail and failed.kind.value == "downloading"
        assert daemon.predict(reference_x[0].tolist())["model"]["version"] == 1
        assert daemon.health()["active"]["version"] == 1
        daemon.stop()
    finally:
        daemon.close()
