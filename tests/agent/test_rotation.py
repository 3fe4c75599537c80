"""Key rotation reaching real agents: a retained rotation chain on a real broker.

The agent adopts the chain the hub publishes on ``edgefleet/v1/trust``; from then on
it follows only what the new keys signed. Tests wait for the events the agent
publishes (through the hub double), never on sleeps. An untrusted directive's ``refused``
event carries no seq (nothing in it is trusted), so each test expects only one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.contract.topics import Channel
from edge_agent.contract.trust import RotationChain
from edge_agent.daemon.agent import Agent
from edge_agent.daemon.pinned import ROTATIONS_FILE
from hub.broker import EmbeddedBroker
from tests.support.bundles import build, model_ref
from tests.support.rotation import rotation

pytestmark = [pytest.mark.timeout(60), pytest.mark.runtime]


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    """This module's own broker: a retained rotation must not reach other modules' agents."""
    with EmbeddedBroker() as b:
        yield b


@pytest.fixture(autouse=True)
def no_retained_rotation(hub) -> Iterator[None]:
    yield
    hub.publish_raw("-", Channel.TRUST, b"")  # clears the retained chain for the next test


@pytest.fixture(scope="module")
def new_keys() -> list[Ed25519PrivateKey]:
    return [Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()]


@pytest.fixture(scope="module")
def new_bundle(tmp_path_factory, demo_dir, reference_x, new_keys) -> Path:
    """Version 4, signed only by the new keys."""
    out = tmp_path_factory.mktemp("new-bundles") / "v4.efb"
    return build((demo_dir / "model-int8.tflite").read_bytes(), 4, new_keys, out, reference_x)


def serve(server, path: Path, version: int):
    return model_ref(path, server.add(f"/b/{path.name}", path.read_bytes()), version=version)


def publish_rotations(hub, *records) -> None:
    hub.publish_raw("-", Channel.TRUST, RotationChain(records).to_bytes())


def test_agent_adopts_a_rotation_then_refuses_retired_keys_and_follows_the_new_ones(
    agent_config, hub, server, bundles, new_keys, new_bundle, trust_2of3, signing_keys,
    reference_x,
):  # fmt: skip
    dev = agent_config.device_id
    with Agent(agent_config) as agent:
        d1 = hub.publish_directive(hub.directive(dev, serve(server, bundles["v1"], 1)))
        hub.wait_for(hub.event(dev, "activated", d1.seq), what="v1 activated (old keys)")
        publish_rotations(hub, rotation(trust_2of3, signing_keys[:2], new_keys, threshold=2))
        rotated = hub.wait_for(hub.event(dev, "trust_rotated"), what="trust_rotated event")
        assert rotated.detail == "trust version 1 -> 2 (2 of 2)"
        assert agent.trust.version == 2
        assert (agent_config.data_dir / ROTATIONS_FILE).exists()
        # a directive signed only by the retired keys
        hub.publish_directive(hub.directive(dev, serve(server, bundles["v2"], 2)))
        refused = hub.wait_for(hub.event(dev, "refused"), what="retired-key directive")
        assert "(untrusted)" in refused.detail
        # a bundle signed only by the retired keys, named by a directive the new keys signed
        d2 = hub.publish_directive(
            hub.directive(dev, serve(server, bundles["v2"], 2)), keys=new_keys
        )
        failed = hub.wait_for(hub.event(dev, "failed", d2.seq), what="retired-key bundle")
        assert "bundle manifest: not trusted" in failed.detail
        # signed by the new keys throughout: followed
        d4 = hub.publish_directive(hub.directive(dev, serve(server, new_bundle, 4)), keys=new_keys)
        hub.wait_for(hub.event(dev, "activated", d4.seq), what="v4 activated (new keys)")
        assert agent.predict(reference_x[0]).model.version == 4


def test_restarted_agent_keeps_the_rotated_trust_and_the_models_it_held_before(
    agent_config, hub, server, bundles, new_keys, new_bundle, trust_2of3, signing_keys,
    reference_x,
):  # fmt: skip
    dev = agent_config.device_id
    v1 = serve(server, bundles["v1"], 1)
    with Agent(agent_config):
        d1 = hub.publish_directive(hub.directive(dev, v1))
        hub.wait_for(hub.event(dev, "activated", d1.seq))
        publish_rotations(hub, rotation(trust_2of3, signing_keys[:2], new_keys, threshold=2))
        hub.wait_for(hub.event(dev, "trust_rotated"))
        d4 = hub.publish_directive(hub.directive(dev, serve(server, new_bundle, 4)), keys=new_keys)
        hub.wait_for(hub.event(dev, "activated", d4.seq))
    with Agent(agent_config) as again:
        assert again.trust.version == 2
        assert again.active_version.version == 4
        hub.publish_directive(hub.directive(dev, serve(server, bundles["v2"], 2)))
        hub.wait_for(hub.event(dev, "refused"), what="retired keys refused after restart")
        # v1 was installed under the retired keys: the device still holds it and may go back
        back = hub.publish_directive(hub.directive(dev, v1, downgrade=True), keys=new_keys)
        hub.wait_for(hub.event(dev, "activated", back.seq), what="rollback to the held v1")
        assert again.predict(reference_x[0]).model.version == 1
    assert hub.kinds(dev).count("trust_rotated") == 1  # the retained chain again: ignored


def test_agent_offline_across_two_rotations_catches_up_from_the_retained_chain(
    agent_config, hub, server, new_keys, new_bundle, trust_2of3, signing_keys
):
    dev = agent_config.device_id
    middle = [Ed25519PrivateKey.generate()]
    r2 = rotation(trust_2of3, signing_keys[:2], middle)
    r3 = rotation(r2.new_root, middle, new_keys, threshold=2)
    publish_rotations(hub, r2, r3)  # both happened while the device was off
    with Agent(agent_config) as agent:
        rotated = hub.wait_for(hub.event(dev, "trust_rotated"))
        assert rotated.detail == "trust version 1 -> 3 (2 of 2)"
        assert agent.trust.version == 3
        hub.publish_directive(hub.directive(dev, serve(server, new_bundle, 4)), keys=middle)
        hub.wait_for(hub.event(dev, "refused"), what="the middle keys are retired")
        d4 = hub.publish_directive(hub.directive(dev, serve(server, new_bundle, 4)), keys=new_keys)
        hub.wait_for(hub.event(dev, "activated", d4.seq))


def test_rotation_with_a_forged_signature_is_refused_with_a_reason_and_changes_nothing(
    agent_config, hub, server, bundles, trust_2of3, signing_keys
):
    dev = agent_config.device_id
    mallory = Ed25519PrivateKey.generate()
    with Agent(agent_config) as agent:
        publish_rotations(hub, rotation(trust_2of3, [signing_keys[0], mallory], [mallory]))
        refused = hub.wait_for(hub.event(dev, "refused"), what="forged rotation refused")
        assert refused.detail.startswith("rotation (current keys): not trusted (1 valid of 2")
        assert agent.trust.version == 1
        assert not (agent_config.data_dir / ROTATIONS_FILE).exists()
        d1 = hub.publish_directive(hub.directive(dev, serve(server, bundles["v1"], 1)))
        hub.wait_for(hub.event(dev, "activated", d1.seq), what="the current keys still trusted")
    assert "trust_rotated" not in hub.kinds(dev)


def test_directive_from_the_new_keys_arriving_before_the_rotation_is_followed_once_adopted(
    agent_config, hub, server, new_keys, new_bundle, trust_2of3, signing_keys
):
    dev = agent_config.device_id
    with Agent(agent_config):
        d4 = hub.publish_directive(hub.directive(dev, serve(server, new_bundle, 4)), keys=new_keys)
        hub.wait_for(hub.event(dev, "refused"), what="not trusted yet")
        publish_rotations(hub, rotation(trust_2of3, signing_keys[:2], new_keys, threshold=2))
        hub.wait_for(hub.event(dev, "activated", d4.seq), what="followed after the rotation")
