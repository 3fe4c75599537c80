"""The demo job behind ``make demo``.

For now (until the fleet demo exists): create keys, train the demo model, build a
signed int8 bundle, tamper with a copy, and show that verification accepts the one
and refuses the other.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edge_agent.bundle import verify_bundle
from edge_agent.errors import BundleError
from edge_agent.input_schema import FeatureSpec, InputSchema
from edge_agent.trust import TrustRoot
from hub.bundler import ReferenceData, build_bundle
from hub.keys import init_keys, load_private_key
from hub.modelkit.dataset import CLASSES, FEATURE_RANGES, FEATURES
from hub.modelkit.demo import build_demo


def demo_schema() -> InputSchema:
    """The input schema of the demo model (physical sensor ranges)."""
    return InputSchema(
        features=tuple(FeatureSpec(n, *FEATURE_RANGES[n]) for n in FEATURES),
        labels=CLASSES,
        out_of_range="accept",
        nan="refuse",
    )


def run_demo(directory: Path) -> Iterator[str]:
    """Run the demo in ``directory``, yielding one line of output per step.

    Raises:
        EdgeFleetError: a step failed unexpectedly.
    """
    directory.mkdir(parents=True, exist_ok=True)
    key_dir = directory / "keys"
    if (key_dir / "trust.json").exists():
        yield f"keys     reusing {key_dir}"
        key_path = sorted(key_dir.glob("key-*.pem"))[0]
    else:
        _, files = init_keys(key_dir)
        key_path = files[0].path
        yield f"keys     created {key_path} and {key_dir / 'trust.json'}"
    trust = TrustRoot.load(key_dir / "trust.json")
    report = build_demo(directory / "model")
    yield from report.lines()
    with np.load(directory / "model" / "reference.npz") as data:
        reference = ReferenceData(np.asarray(data["x"], dtype=np.float64), FEATURES)
    bundle_path = directory / "demo-v1.efb"
    manifest = build_bundle(
        (directory / "model" / "model-int8.tflite").read_bytes(),
        name="pump-health",
        version=1,
        reference=reference,
        keys=[load_private_key(key_path).key],
        out=bundle_path,
        schema=demo_schema(),
        lineage={"source": "edgefleet demo", "int8_accuracy": report.int8_accuracy},
    )
    yield f"bundle   {bundle_path} ({bundle_path.stat().st_size} bytes, {manifest.name} v1)"
    verified = verify_bundle(bundle_path, trust)
    yield f"verify   OK: signed by {len(verified.signers)} trusted key(s), all members match"
    tampered = directory / "demo-v1-tampered.efb"
    shutil.copyfile(bundle_path, tampered)
    data = bytearray(tampered.read_bytes())
    data[data.index(b"TFL3") + 64] ^= 0xFF
    tampered.write_bytes(bytes(data))
    try:
        verify_bundle(tampered, trust)
    except BundleError as exc:
        yield f"tamper   refused as expected: {exc}"
    else:
        raise BundleError("a tampered bundle verified; this is a bug")
