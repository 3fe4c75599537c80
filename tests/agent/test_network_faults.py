"""The agent on a real network: a failed download is retried (also after a restart),
a signed bundle URL never reaches the log, and health tells the truth about the link.

Real agent, real broker (embedded), real HTTP bundle server; the hub is the test double.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import pytest

from edge_agent.daemon.agent import Agent, directive_retry_backoff
from edge_agent.daemon.config import BrokerConfig
from edge_agent.durable import read_json
from hub.broker import EmbeddedBroker
from tests.support.bundle_server import Faults
from tests.support.bundles import model_ref

pytestmark = pytest.mark.timeout(120)


def wait_until(condition, what: str, timeout: float = 60.0) -> None:
    """Poll ``condition`` (the link has no event to await from outside) up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_retry_backoff_grows_with_jitter_and_is_capped():
    for failures in range(1, 30):
        wait = directive_retry_backoff(failures, base_s=5.0)
        step = min(300.0, 5.0 * 2 ** (failures - 1))
        assert step / 2 <= wait <= step
    assert directive_retry_backoff(100, base_s=5.0) <= 300.0


def test_download_that_failed_is_retried_until_the_bundle_arrives(
    hub, agent_config, server, bundles, reference_x
):
    """A hub that answers 503 for a while: the agent reports each failure with the
    retry it plans (as still downloading, never ``failed``), then activates once the
    bundle is served; no restart needed."""
    config = replace(agent_config, download_attempts=1, download_retry_s=0.2)
    dev = config.device_id
    url = server.add(
        "/b/v1.efb", bundles["v1"].read_bytes(), faults=Faults(status=503, status_times=3)
    )
    with Agent(config) as agent:
        d1 = hub.publish_directive(hub.directive(dev, model_ref(bundles["v1"], url)))
        hub.wait_for(hub.event(dev, "activated", d1.seq), what="activation after retries")
        events = hub.devices[dev].events
        retried = [e for e in events if "retrying in" in e.detail]
        assert len(retried) == 3, [e.detail for e in retried]
        assert all(e.kind.value == "downloading" and "503" in e.detail for e in retried)
        assert not [e for e in events if e.kind.value == "failed"]
        assert agent.predict(reference_x[0]).model.version == 1
    assert server.request_count("/b/v1.efb") == 4


def test_failed_download_is_retried_after_a_restart(
    hub, agent_config, server, bundles, reference_x
):
    """The agent stopped while its directive's download kept failing: the next start
    tries again (before, a failed directive was remembered and never retried)."""
    config = replace(agent_config, download_attempts=1, download_retry_s=3600)
    dev = config.device_id
    url = server.add("/b/v1.efb", bundles["v1"].read_bytes(), faults=Faults(status=503))
    with Agent(config):
        d1 = hub.publish_directive(hub.directive(dev, model_ref(bundles["v1"], url)))
        hub.wait_for(
            lambda: any("retrying in" in e.detail for e in hub.devices[dev].events),
            what="first failure",
        )
    server.set_faults("/b/v1.efb")  # the hub is back
    with Agent(config) as agent:
        hub.wait_for(hub.event(dev, "activated", d1.seq), what="activation after restart")
        assert agent.predict(reference_x[0]).model.version == 1


def test_download_corrupted_in_transit_during_a_rollout_is_retried_not_failed(
    hub, agent_config, server, bundles, reference_x
):
    """The soak's seed 2: a proxy flipped bytes of a v2 canary's download; the agent
    reported ``failed`` (retrying) and the hub's gates rolled the healthy v2 back. Now a
    transfer that does not match the directive's hash is a ``downloading`` event with
    the reason and the retry, and the next try activates the bundle."""
    config = replace(agent_config, download_attempts=1, download_retry_s=0.2)
    dev = config.device_id
    good = bundles["v1"].read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0x5A
    url = server.add("/b/v1.efb", bytes(bad))
    with Agent(config) as agent:
        d1 = hub.publish_directive(hub.directive(dev, model_ref(bundles["v1"], url)))
        retrying = hub.wait_for(
            lambda: next((e for e in hub.devices[dev].events if "retrying in" in e.detail), None),
            what="the corrupted transfer reported",
        )
        assert retrying.kind.value == "downloading", retrying
        assert "sha" in retrying.detail.lower() or "digest" in retrying.detail.lower()
        server.add("/b/v1.efb", good)
        hub.wait_for(hub.event(dev, "activated", d1.seq), what="activation after the retry")
        assert agent.predict(reference_x[0]).model.version == 1
    assert not [e for e in hub.devices[dev].events if e.kind.value == "failed"]


def test_bundle_failing_its_smoke_test_is_not_retried(hub, agent_config, server, bundles):
    """A bundle that fails its smoke test fails the same way every time: the agent
    remembers the directive as failed (on disk, across restarts) instead of retrying."""
    config = replace(agent_config, download_retry_s=0.05)
    dev = config.device_id
    url = server.add("/b/v2-bad.efb", bundles["v2-bad"].read_bytes())
    with Agent(config) as agent:
        d1 = hub.publish_directive(hub.directive(dev, model_ref(bundles["v2-bad"], url, version=2)))
        failed = hub.wait_for(hub.event(dev, "failed", d1.seq), what="smoke-test failure")
        assert "retrying" not in failed.detail
        assert read_json(agent.state_path, {})["failed_seq"] == d1.seq


def test_signed_bundle_url_never_reaches_the_log(hub, agent_config, server, bundles, caplog):
    dev = agent_config.device_id
    url = server.add("/b/v1.efb", bundles["v1"].read_bytes())
    signed = f"{url}?expires=9999999999&sig=feedfacecafe0123456789"
    caplog.set_level(logging.DEBUG, logger="httpx")
    caplog.set_level(logging.INFO)
    with Agent(agent_config):
        d1 = hub.publish_directive(hub.directive(dev, model_ref(bundles["v1"], signed)))
        hub.wait_for(hub.event(dev, "activated", d1.seq))
    assert "feedfacecafe" not in caplog.text
    sha = model_ref(bundles["v1"], url).sha256
    assert f"bundle {sha[:16]}" in caplog.text  # the download is logged, by its hash


def test_health_says_offline_while_the_broker_is_down(tmp_path, agent_config):
    broker = EmbeddedBroker().start()
    config = replace(
        agent_config,
        broker=BrokerConfig(host=broker.host, port=broker.port),
        data_dir=tmp_path / "d",
    )
    agent = Agent(config, local_api=False).start()
    try:
        wait_until(lambda: agent.health()["online"], "the first connection")
        broker.stop()
        wait_until(lambda: not agent.health()["online"], "health to say offline")
    finally:
        agent.stop()
