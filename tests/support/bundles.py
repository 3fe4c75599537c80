"""Building real signed bundles for agent tests (and spoiled ones, validly signed)."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np

from edge_agent.contract.canonical import canonical_bytes
from edge_agent.contract.directive import ModelRef
from edge_agent.contract.manifest import MANIFEST, SAMPLES, SIGNATURES
from edge_agent.contract.trust import Context
from hub.bundler import ReferenceData, build_bundle
from hub.signing import sign


def build(
    model: bytes, version: int, keys, out: Path, reference: np.ndarray, name: str = "pump"
) -> Path:
    build_bundle(
        model,
        name=name,
        version=version,
        keys=keys,
        out=out,
        reference=ReferenceData(reference, tuple(f"f{i}" for i in range(reference.shape[1]))),
    )
    return out


def spoil_samples(src: Path, dst: Path, keys) -> Path:
    """Same model, but expected smoke outputs shifted: a validly signed bundle that must
    fail its on-device smoke test."""
    with zipfile.ZipFile(src) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    samples = json.loads(members[SAMPLES])
    samples["expected"] = [[1.0 - v for v in row] for row in samples["expected"]]
    members[SAMPLES] = canonical_bytes(samples)
    manifest = json.loads(members[MANIFEST])
    manifest["members"][SAMPLES] = {
        "sha256": hashlib.sha256(members[SAMPLES]).hexdigest(),
        "size": len(members[SAMPLES]),
    }
    members[MANIFEST] = canonical_bytes(manifest)
    sigs = sign(Context.BUNDLE_MANIFEST, members[MANIFEST], keys)
    members[SIGNATURES] = canonical_bytes([s.to_json() for s in sigs])
    with zipfile.ZipFile(dst, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return dst


def model_ref(path: Path, url: str, name: str = "pump", version: int = 1) -> ModelRef:
    data = path.read_bytes()
    return ModelRef(name, version, hashlib.sha256(data).hexdigest(), len(data), (url,))
