"""Ed25519 through libcrypto (ctypes) agrees with the cryptography package, case by case."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.contract import ed25519
from edge_agent.contract.ed25519 import PublicKey

BACKENDS = [ed25519._Cryptography()]
LIB = ed25519._find_libcrypto()
if LIB is not None:
    BACKENDS.append(LIB)
# the group order L: S + L is the same signature in a non-canonical encoding
L = 2**252 + 27742317777372353535851937790883648493


def _raw(key: Ed25519PrivateKey) -> bytes:
    return PublicKey.of(key.public_key()).raw


def test_libcrypto_is_found_here():
    """This machine's Python maps OpenSSL: the daemon must not need cryptography."""
    assert LIB is not None and ed25519.backend_name() == "libcrypto"


@given(message=st.binary(max_size=512), flip=st.integers(0, 64 * 8 - 1))
@settings(max_examples=60, deadline=None)
def test_backends_agree_on_good_and_tampered_signatures(message, flip):
    key = Ed25519PrivateKey.generate()
    raw, sig = _raw(key), key.sign(message)
    tampered = bytearray(sig)
    tampered[flip // 8] ^= 1 << (flip % 8)
    other = _raw(Ed25519PrivateKey.generate())
    for backend in BACKENDS:
        assert backend.verify(raw, sig, message), backend.name
        assert not backend.verify(raw, bytes(tampered), message), backend.name
        assert not backend.verify(raw, sig, message + b"x"), backend.name
        assert not backend.verify(other, sig, message), backend.name


def test_non_canonical_signature_refused_by_both():
    key = Ed25519PrivateKey.generate()
    sig = key.sign(b"directive")
    s = int.from_bytes(sig[32:], "little") + L
    malleated = sig[:32] + s.to_bytes(32, "little")
    for backend in BACKENDS:
        assert backend.verify(_raw(key), sig, b"directive")
        assert not backend.verify(_raw(key), malleated, b"directive"), backend.name


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_wrong_key_length_refused(length):
    with pytest.raises(ValueError, match="32 bytes"):
        PublicKey(b"\x01" * length)


def test_wrong_signature_length_refused():
    key = Ed25519PrivateKey.generate()
    sig = key.sign(b"m")
    assert not PublicKey.of(key.public_key()).verify(sig[:63], b"m")
    assert not PublicKey.of(key.public_key()).verify(sig + b"\x00", b"m")


def test_trust_root_verifies_with_the_fallback_too(monkeypatch, signing_keys):
    from edge_agent.contract.trust import Context, TrustRoot
    from hub.signing import sign

    root = TrustRoot.from_keys([k.public_key() for k in signing_keys[:2]], 2)
    sigs = sign(Context.DIRECTIVE, b"payload", signing_keys[:2])
    monkeypatch.setattr(ed25519, "_chosen", ed25519._Cryptography())
    assert len(root.verify(Context.DIRECTIVE, b"payload", sigs, "doc")) == 2
