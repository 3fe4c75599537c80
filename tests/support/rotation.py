"""Rotation records for tests: any keys may sign, so tests can make bad ones too."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.contract.trust import Context, RotationRecord, TrustRoot
from hub.signing import sign


def rotation(
    current: TrustRoot,
    current_keys: list[Ed25519PrivateKey],
    new_keys: list[Ed25519PrivateKey],
    *,
    threshold: int = 1,
    previous_version: int | None = None,
    new_version: int | None = None,
) -> RotationRecord:
    """A record rotating ``current`` to ``new_keys``, signed by the keys given."""
    previous = current.version if previous_version is None else previous_version
    new_root = TrustRoot.from_keys(
        [k.public_key() for k in new_keys],
        threshold=threshold,
        version=previous + 1 if new_version is None else new_version,
    )
    payload = RotationRecord.signed_bytes(previous, new_root)
    signatures = sign(Context.ROTATION, payload, current_keys + new_keys)
    return RotationRecord(previous, new_root, tuple(signatures))
