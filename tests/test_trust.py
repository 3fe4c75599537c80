"""Trust roots, threshold signatures and key rotation, named after what they defend against."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from edge_agent.contract.trust import Context, RotationRecord, Signature, TrustRoot, key_id
from edge_agent.errors import TrustError, ValidationError
from hub.signing import sign

PAYLOAD = b'{"hello":"fleet"}'


def test_key_id_is_sha256_of_raw_public_key(signing_keys):
    pub = signing_keys[0].public_key()
    raw = pub.public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert key_id(pub) == hashlib.sha256(raw).hexdigest()


def test_threshold_of_valid_signatures_verifies(trust_2of3, signing_keys):
    sigs = sign(Context.DIRECTIVE, PAYLOAD, signing_keys[:2])
    assert trust_2of3.verify(Context.DIRECTIVE, PAYLOAD, sigs, "doc") == {
        key_id(k.public_key()) for k in signing_keys[:2]
    }


def test_too_few_signatures_for_threshold_refused(trust_2of3, signing_keys):
    sigs = sign(Context.DIRECTIVE, PAYLOAD, signing_keys[:1])
    with pytest.raises(TrustError, match="1 valid of 2 required"):
        trust_2of3.verify(Context.DIRECTIVE, PAYLOAD, sigs, "doc")


def test_same_key_signing_twice_counts_once(trust_2of3, signing_keys):
    sig = sign(Context.DIRECTIVE, PAYLOAD, signing_keys[:1])[0]
    with pytest.raises(TrustError, match="1 valid of 2"):
        trust_2of3.verify(Context.DIRECTIVE, PAYLOAD, [sig, sig], "doc")


def test_unknown_key_refused(trust_1of1):
    stranger = Ed25519PrivateKey.generate()
    sigs = sign(Context.DIRECTIVE, PAYLOAD, [stranger])
    with pytest.raises(TrustError, match="1 by unknown keys"):
        trust_1of1.verify(Context.DIRECTIVE, PAYLOAD, sigs, "doc")


def test_modified_payload_refused(trust_1of1, signing_keys):
    sigs = sign(Context.DIRECTIVE, PAYLOAD, signing_keys[:1])
    with pytest.raises(TrustError, match="1 invalid"):
        trust_1of1.verify(Context.DIRECTIVE, PAYLOAD + b" ", sigs, "doc")


def test_signature_for_another_document_kind_refused(trust_1of1, signing_keys):
    """A manifest signature must not be replayable as a directive (domain separation)."""
    sigs = sign(Context.BUNDLE_MANIFEST, PAYLOAD, signing_keys[:1])
    with pytest.raises(TrustError):
        trust_1of1.verify(Context.DIRECTIVE, PAYLOAD, sigs, "doc")


def test_trust_file_round_trips(tmp_path: Path, trust_2of3):
    path = tmp_path / "trust.json"
    path.write_text(json.dumps(trust_2of3.to_json()))
    loaded = TrustRoot.load(path)
    assert loaded.threshold == 2
    assert set(loaded.keys) == set(trust_2of3.keys)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(extra=1), "unexpected field"),
        (lambda d: d.pop("threshold"), "missing field"),
        (lambda d: d.update(threshold="2"), "expected int"),
        (lambda d: d.update(threshold=4), "threshold 4 needs 1..3"),
        (lambda d: d["keys"][0].update(keyid="0" * 64), "does not match its public key"),
        (lambda d: d["keys"].append(dict(d["keys"][0])), "listed twice"),
        (lambda d: d["keys"][0].update(public="!!"), "not valid base64"),
        (lambda d: d["keys"][0].update(scheme="rsa"), "only 'ed25519'"),
    ],
)
def test_malformed_trust_file_refused(trust_2of3, mutate, message):
    doc = json.loads(json.dumps(trust_2of3.to_json()))
    mutate(doc)
    with pytest.raises(ValidationError, match=message):
        TrustRoot.from_json(doc)


def _rotation(current: TrustRoot, signers, new_keys, threshold=1, version=None):
    new_root = TrustRoot.from_keys(
        [k.public_key() for k in new_keys],
        threshold=threshold,
        version=current.version + 1 if version is None else version,
    )
    payload = RotationRecord.signed_bytes(current.version, new_root)
    return RotationRecord(
        current.version, new_root, tuple(sign(Context.ROTATION, payload, signers))
    )


def test_rotation_signed_by_old_and_new_keys_accepted(trust_2of3, signing_keys):
    new = [Ed25519PrivateKey.generate()]
    record = _rotation(trust_2of3, signing_keys[:2] + new, new)
    parsed = RotationRecord.from_json(json.loads(json.dumps(record.to_json())))
    root = parsed.apply(trust_2of3)
    assert root.version == 2
    assert set(root.keys) == {key_id(new[0].public_key())}


def test_rotation_not_signed_by_old_keys_refused(trust_2of3, signing_keys):
    new = [Ed25519PrivateKey.generate()]
    record = _rotation(trust_2of3, signing_keys[:1] + new, new)
    with pytest.raises(TrustError, match="current keys"):
        record.apply(trust_2of3)


def test_rotation_to_keys_nobody_holds_refused(trust_2of3, signing_keys):
    new = [Ed25519PrivateKey.generate()]
    record = _rotation(trust_2of3, signing_keys[:2], new)
    with pytest.raises(TrustError, match="new keys"):
        record.apply(trust_2of3)


def test_rotation_skipping_a_version_refused(trust_2of3, signing_keys):
    new = [Ed25519PrivateKey.generate()]
    record = _rotation(trust_2of3, signing_keys[:2] + new, new, version=3)
    with pytest.raises(TrustError, match="must be version 2"):
        record.apply(trust_2of3)


def test_replayed_rotation_refused_after_applied(trust_2of3, signing_keys):
    new = [Ed25519PrivateKey.generate()]
    record = _rotation(trust_2of3, signing_keys[:2] + new, new)
    rotated = record.apply(trust_2of3)
    with pytest.raises(TrustError, match="follows trust version 1"):
        record.apply(rotated)


def test_malformed_signature_refused():
    with pytest.raises(ValidationError, match="64 bytes"):
        Signature.from_json({"keyid": "a" * 64, "sig": "AAAA"})


def test_names_with_a_trailing_newline_refused():
    """`$` matches before a final newline; a name must not smuggle a line into a file."""
    from edge_agent.contract.fields import safe_name, sha256_hex

    with pytest.raises(ValidationError):
        safe_name("dev\n", "device_id")
    with pytest.raises(ValidationError):
        sha256_hex({"d": "a" * 64 + "\n"}, "d", "x")
