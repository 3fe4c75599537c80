"""Signing with the hub's private keys (verification is the contract's:
``edge_agent.contract.trust``)."""

from __future__ import annotations

from collections.abc import Iterable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.contract.trust import Signature, key_id


def sign(context: bytes, payload: bytes, keys: Iterable[Ed25519PrivateKey]) -> list[Signature]:
    """Sign ``context + payload`` with each key (one signature per distinct key)."""
    signatures: dict[str, Signature] = {}
    for key in keys:
        kid = key_id(key.public_key())
        signatures.setdefault(kid, Signature(kid, key.sign(context + payload)))
    return list(signatures.values())
