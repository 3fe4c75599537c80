"""The device's rotation step: a chain of signed records moves its trust root forward.

Pure step (:func:`edge_agent.contract.trust.advance`) and its storage beside the pinned trust
file (:class:`edge_agent.daemon.pinned.PinnedTrust`), named after the fault each defends against.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.contract.trust import Context, RotationChain, RotationRecord, TrustRoot, advance
from edge_agent.daemon.pinned import ROTATIONS_FILE, PinnedTrust
from edge_agent.errors import ValidationError
from hub.signing import sign
from tests.support.rotation import rotation


@pytest.fixture
def v1(signing_keys) -> tuple[TrustRoot, list[Ed25519PrivateKey]]:
    keys = signing_keys[:2]
    return TrustRoot.from_keys([k.public_key() for k in keys], threshold=2), keys


@pytest.fixture
def chain(v1):
    """Two rotations from v1: v1 -> v2 (one new key), v2 -> v3 (two new keys, 2 of 2)."""
    root1, keys1 = v1
    keys2 = [Ed25519PrivateKey.generate()]
    r2 = rotation(root1, keys1, keys2)
    keys3 = [Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()]
    r3 = rotation(r2.new_root, keys2, keys3, threshold=2)
    return r2, r3


def test_device_offline_across_two_rotations_applies_both_in_order(v1, chain):
    root1, _ = v1
    r2, r3 = chain
    for order in ((r2, r3), (r3, r2)):  # the chain's order on the wire does not matter
        step = advance(root1, order)
        assert step.root.version == 3 and step.root.keys.keys() == r3.new_root.keys.keys()
        assert step.adopted == (r2, r3) and step.refused == ""
        assert [r.version for r in step.retired] == [1, 2]


def test_rotation_with_a_forged_signature_is_refused_and_changes_nothing(v1):
    root1, keys1 = v1
    forged = rotation(
        root1, [keys1[0], Ed25519PrivateKey.generate()], [Ed25519PrivateKey.generate()]
    )
    step = advance(root1, [forged])
    assert step.root is root1 and step.adopted == ()
    assert step.refused.startswith("rotation (current keys): not trusted (1 valid of 2 required")
    assert "\n" not in step.refused


def test_rotation_with_a_tampered_signature_is_refused(v1):
    root1, keys1 = v1
    good = rotation(root1, keys1, [Ed25519PrivateKey.generate()])
    first = good.signatures[0]
    tampered = replace(good, signatures=(replace(first, sig=bytes(64)), *good.signatures[1:]))
    step = advance(root1, [tampered])
    assert step.root is root1 and "1 invalid" in step.refused


def test_rotation_not_signed_by_the_new_keys_is_refused(v1):
    """Proof of possession: a root whose keys did not sign could be anyone's keys."""
    root1, keys1 = v1
    new = Ed25519PrivateKey.generate()
    unproven = rotation(root1, keys1, [new])
    unproven = replace(
        unproven,
        signatures=tuple(
            sign(Context.ROTATION, RotationRecord.signed_bytes(1, unproven.new_root), keys1)
        ),
    )
    step = advance(root1, [unproven])
    assert step.root is root1 and step.refused.startswith("rotation (new keys): not trusted")


def test_rotation_that_skips_a_version_is_refused(v1, chain):
    root1, keys1 = v1
    _, r3 = chain
    step = advance(root1, [r3])  # v2 -> v3 without v1 -> v2: it does not follow v1
    assert step.root is root1
    assert step.refused == "rotation: follows trust version 2, but the pinned root is version 1"
    jump = rotation(root1, keys1, [Ed25519PrivateKey.generate()], new_version=3)
    step = advance(root1, [jump])
    assert step.root is root1 and step.refused == "rotation: new root must be version 2, not 3"


def test_replayed_and_old_rotations_are_ignored_without_complaint(v1, chain):
    root1, _ = v1
    r2, r3 = chain
    at3 = advance(root1, [r2, r3]).root
    step = advance(at3, [r2, r3, r2])
    assert step.root is at3 and step.adopted == () and step.refused == ""


def test_records_before_a_bad_one_stand_and_later_ones_are_left_out(v1, chain):
    root1, _ = v1
    r2, r3 = chain
    bad3 = replace(r3, signatures=r3.signatures[:2])  # the old key and 1 of the 2 new
    step = advance(root1, [r2, bad3])
    assert step.root.version == 2 and step.adopted == (r2,)
    assert step.refused.startswith("rotation (new keys): not trusted (1 valid of 2")


def test_chain_round_trips_and_malformed_chain_is_refused_in_one_line(chain):
    data = RotationChain(chain).to_bytes()
    assert RotationChain.from_bytes(data).records == chain
    doc = json.loads(data)
    doc["records"][0]["trust"]["version"] = "2"
    with pytest.raises(ValidationError, match=r"records\[0\]\.trust\.version") as info:
        RotationChain.from_bytes(json.dumps(doc).encode())
    assert "\n" not in str(info.value)
    with pytest.raises(ValidationError, match="format"):
        RotationChain.from_bytes(b'{"format": "edgefleet-rotations/2", "records": []}')
    with pytest.raises(ValidationError, match="bytes is over"):
        RotationChain.from_bytes(b" " * (1 << 20) + b"{}")


# --- PinnedTrust: the adopted chain, stored beside the pin -----------------------------------


@pytest.fixture
def pin(tmp_path, v1) -> Path:
    path = tmp_path / "trust.json"
    path.write_text(json.dumps(v1[0].to_json()))
    return path


def test_adopted_rotations_are_stored_and_survive_a_restart(tmp_path, pin, chain):
    pinned = PinnedTrust.load(pin, tmp_path)
    step = pinned.adopt(RotationChain(chain))
    assert pinned.root.version == 3 and step.adopted == chain
    again = PinnedTrust.load(pin, tmp_path)
    assert again.root.to_json() == pinned.root.to_json()
    assert [r.version for r in again.retired] == [1, 2]
    assert json.loads(pin.read_text())["version"] == 1  # the pin itself is only read


def test_stored_chain_is_verified_again_so_the_data_directory_cannot_pin_a_key(tmp_path, pin, v1):
    """Someone who can write the data directory but holds no root key gains nothing."""
    root1, _ = v1
    mallory = Ed25519PrivateKey.generate()
    forged = rotation(root1, [mallory], [mallory])
    (tmp_path / ROTATIONS_FILE).write_bytes(RotationChain((forged,)).to_bytes())
    assert PinnedTrust.load(pin, tmp_path).root.to_json() == root1.to_json()
    (tmp_path / ROTATIONS_FILE).write_bytes(b"{not json")
    assert PinnedTrust.load(pin, tmp_path).root.to_json() == root1.to_json()


@pytest.mark.parametrize("fail", ["fsync", "rename"])
def test_interrupted_store_leaves_the_old_chain_and_the_old_root(
    tmp_path, pin, chain, monkeypatch, fail
):
    """The chain file is replaced atomically: a crash leaves the old one or the new one."""
    import os

    pinned = PinnedTrust.load(pin, tmp_path)
    pinned.adopt(RotationChain(chain[:1]))
    stored = (tmp_path / ROTATIONS_FILE).read_bytes()

    def crash(*args: object) -> None:
        raise OSError(5, "Input/output error (simulated)")

    monkeypatch.setattr(os, "fsync" if fail == "fsync" else "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        pinned.adopt(RotationChain(chain))
    monkeypatch.undo()
    assert pinned.root.version == 2  # not adopted in memory either
    assert (tmp_path / ROTATIONS_FILE).read_bytes() == stored
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert PinnedTrust.load(pin, tmp_path).root.version == 2
    pinned.adopt(RotationChain(chain))  # the retained chain comes again: now it sticks
    assert PinnedTrust.load(pin, tmp_path).root.version == 3


def test_a_newer_pin_wins_over_stored_rotations_it_already_includes(tmp_path, pin, chain):
    """Re-enrolled with the current trust file: the stored records are old, not refused."""
    pinned = PinnedTrust.load(pin, tmp_path)
    pinned.adopt(RotationChain(chain))
    pin.write_text(json.dumps(chain[1].new_root.to_json()))
    again = PinnedTrust.load(pin, tmp_path)
    assert again.root.version == 3 and again.retired == ()


def test_trust_is_one_fleet_topic_not_a_device_channel():
    """A device may subscribe to the fleet's chain; nothing under a device id poses as it."""
    from edge_agent.contract.topics import TRUST_TOPIC, Channel, parse_topic, topic

    assert topic("pump-1", Channel.TRUST) == TRUST_TOPIC == "edgefleet/v1/trust"
    with pytest.raises(ValidationError, match="unknown channel 'trust'"):
        parse_topic("edgefleet/v1/devices/pump-1/trust")
