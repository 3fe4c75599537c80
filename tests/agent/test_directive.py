"""Directive acceptance, named after the attacks it refuses. Pure: no broker, no clock."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.contract.canonical import canonical_bytes
from edge_agent.contract.directive import (
    Directive,
    DirectiveRefusedError,
    ModelRef,
    Refusal,
    SignedDirective,
    accept_directive,
)
from edge_agent.contract.trust import Context, TrustRoot
from hub.signing import sign

NOW = 1_800_000_000


def directive(**overrides) -> Directive:
    fields = {
        "device_id": "dev-1",
        "seq": 5,
        "issued_at": NOW - 10,
        "expires_at": NOW + 3600,
        "model": ModelRef("pump", 3, "ab" * 32, 1234, ("http://127.0.0.1:1/b.efb",)),
    }
    fields.update(overrides)
    return Directive(**fields)


def signed(d: Directive, keys) -> bytes:
    return SignedDirective(d, tuple(sign(Context.DIRECTIVE, d.signed_bytes(), keys))).to_bytes()


def accept(payload: bytes, trust: TrustRoot, **kw):
    args = {"device_id": "dev-1", "now": NOW, "last_seq": 4, "installed_version": 2}
    args.update(kw)
    return accept_directive(payload, trust=trust, **args)


def refused(reason: Refusal, payload: bytes, trust: TrustRoot, **kw) -> str:
    with pytest.raises(DirectiveRefusedError) as info:
        accept(payload, trust, **kw)
    assert info.value.reason is reason
    assert "\n" not in str(info.value)
    return str(info.value)


def test_valid_directive_accepted(trust_2of3, signing_keys):
    d = directive()
    assert accept(signed(d, signing_keys[:2]), trust_2of3) == d


def test_directive_round_trips_through_json():
    d = directive(mode="shadow", downgrade=True, rollout="r-1")
    assert Directive.from_json(json.loads(canonical_bytes(d.to_json()))) == d


def test_replayed_directive_refused(trust_2of3, signing_keys):
    payload = signed(directive(seq=4), signing_keys[:2])
    assert "not above the last accepted seq 4" in refused(Refusal.REPLAY, payload, trust_2of3)


def test_expired_directive_refused_freeze_attack(trust_2of3, signing_keys):
    payload = signed(directive(expires_at=NOW - 1), signing_keys[:2])
    refused(Refusal.EXPIRED, payload, trust_2of3)


def test_directive_for_another_device_refused(trust_2of3, signing_keys):
    payload = signed(directive(device_id="dev-2"), signing_keys[:2])
    refused(Refusal.WRONG_DEVICE, payload, trust_2of3)


def test_unsigned_downgrade_refused(trust_2of3, signing_keys):
    payload = signed(
        directive(model=ModelRef("pump", 1, "cd" * 32, 10, ("http://h/x",))), signing_keys[:2]
    )
    refused(Refusal.DOWNGRADE, payload, trust_2of3)


def test_signed_downgrade_accepted(trust_2of3, signing_keys):
    d = directive(model=ModelRef("pump", 1, "cd" * 32, 10, ("http://h/x",)), downgrade=True)
    assert accept(signed(d, signing_keys[:2]), trust_2of3).model.version == 1


def test_downgrade_flag_cannot_be_added_after_signing(trust_2of3, signing_keys):
    d = directive(model=ModelRef("pump", 1, "cd" * 32, 10, ("http://h/x",)))
    envelope = json.loads(signed(d, signing_keys[:2]))
    envelope["directive"]["downgrade"] = True
    refused(Refusal.UNTRUSTED, canonical_bytes(envelope), trust_2of3)


def test_directive_with_too_few_signatures_refused(trust_2of3, signing_keys):
    refused(Refusal.UNTRUSTED, signed(directive(), signing_keys[:1]), trust_2of3)


def test_directive_signed_by_unknown_key_refused(trust_2of3):
    strangers = [Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()]
    refused(Refusal.UNTRUSTED, signed(directive(), strangers), trust_2of3)


def test_bundle_manifest_signature_not_accepted_as_directive(trust_2of3, signing_keys):
    d = directive()
    sigs = sign(Context.BUNDLE_MANIFEST, d.signed_bytes(), signing_keys[:2])
    refused(Refusal.UNTRUSTED, SignedDirective(d, tuple(sigs)).to_bytes(), trust_2of3)


@pytest.mark.parametrize(
    "payload",
    [b"", b"not json", b"[]", b'{"directive": {}}', b"\xff\xfe", b'{"signatures": []}'],
)
def test_malformed_directive_refused(trust_2of3, payload):
    refused(Refusal.MALFORMED, payload, trust_2of3)


def test_oversized_directive_refused_before_parsing(trust_2of3):
    refused(Refusal.TOO_LARGE, b"{" + b" " * (70 << 10) + b"}", trust_2of3)


def test_signed_but_malformed_directive_refused(trust_2of3, signing_keys):
    doc = directive().to_json()
    doc["mode"] = "yolo"
    sigs = sign(Context.DIRECTIVE, canonical_bytes(doc), signing_keys[:2])
    payload = canonical_bytes({"directive": doc, "signatures": [s.to_json() for s in sigs]})
    refused(Refusal.MALFORMED, payload, trust_2of3)


def test_clock_far_behind_still_accepts_fresh_directive(trust_2of3, signing_keys):
    """A device whose clock reset to 1970 still follows a fresh directive (seq guards replay)."""
    assert accept(signed(directive(), signing_keys[:2]), trust_2of3, now=0).seq == 5


def test_clock_jumped_past_expiry_refuses_but_says_why(trust_2of3, signing_keys):
    message = refused(
        Refusal.EXPIRED, signed(directive(), signing_keys[:2]), trust_2of3, now=NOW + 10**6
    )
    assert "expired" in message
