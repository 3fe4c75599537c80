"""The model versions the demo's story pushes, built with the model kit.

- v1: the demo model (``edgefleet model demo``), trained on the generator's data;
- v2: the same network trained on newer (more, differently seeded) data;
- v3: v2's model in a bundle whose smoke-test samples expect other outputs (as if it
  had been exported with the wrong output scaling). It is signed with the hub's keys,
  so devices accept it, download it, and refuse to activate it: the smoke test fails.

Beside it the fleet runs a second kind of model (:func:`train_vibration`): the model kit's
int8 1-D CNN over 3-axis accelerometer windows (``vibration-cnn``, a ``[64, 3]`` tensor
input), on the motors' devices.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.contract.canonical import canonical_bytes, parse_json
from edge_agent.contract.input_schema import InputSchema
from edge_agent.contract.manifest import MANIFEST, SAMPLES, SIGNATURES, Manifest, MemberDigest
from edge_agent.contract.samples import SmokeSamples
from edge_agent.contract.trust import Context
from hub.bundler import ReferenceData, build_bundle, load_reference
from hub.errors import HubError
from hub.modelkit.dataset import FEATURES
from hub.modelkit.fleet_models import VIBRATION_MODEL_NAME, build_vibration_cnn, vibration_schema
from hub.modelkit.pump import INT8_MODEL, REFERENCE_DATA, build_demo, demo_schema
from hub.signing import sign

MODEL_NAME = "pump-health"
VIBRATION_MODEL = VIBRATION_MODEL_NAME


@dataclass(frozen=True)
class DemoModel:
    """A trained model: its int8 TFLite bytes and the reference data it was trained on."""

    model: bytes
    reference: ReferenceData
    accuracy: float
    lineage: dict[str, object]
    schema: InputSchema | None = None  # None: the pump-health schema


def _load(directory: Path, accuracy: float, lineage: dict[str, object]) -> DemoModel:
    with np.load(directory / REFERENCE_DATA) as data:
        ref = ReferenceData(
            np.asarray(data["x"], dtype=np.float64),
            FEATURES,
            holdout_x=np.asarray(data["holdout_x"], dtype=np.float64),
            holdout_y=np.asarray(data["holdout_y"], dtype=np.int64),
        )
    return DemoModel((directory / INT8_MODEL).read_bytes(), ref, accuracy, lineage)


def train(directory: Path, kind: str) -> DemoModel:
    """Train the model of ``kind`` (``v1`` or ``v2``) into ``directory/<kind>`` (about a
    second; the same seed gives the same model).

    Raises:
        HubError: an unknown kind.
        EdgeFleetError: the model kit failed (no TFLite runtime...).
        OSError: ``directory`` cannot be written.
    """
    settings = {
        "v1": {"seed": 7, "n_train": 8000},
        "v2": {"seed": 11, "n_train": 12000},  # newer data: more of it, drawn later
    }
    if kind not in settings:
        raise HubError(f"no demo model {kind!r}")
    out = directory / kind
    report = build_demo(out, **settings[kind])  # type: ignore[arg-type]
    lineage: dict[str, object] = {
        "source": "edgefleet demo",
        "data": "newer data" if kind == "v2" else "first data",
        "int8_accuracy": round(report.int8_accuracy, 4),
    }
    return _load(out, report.int8_accuracy, lineage)


def train_vibration(directory: Path) -> DemoModel:
    """Train the vibration CNN into ``directory/vibration`` (about a second; seeded).

    Raises:
        EdgeFleetError: the model kit failed (no TFLite runtime...).
        BuildError: its reference data cannot be read back.
        OSError: ``directory`` cannot be written.
    """
    out = directory / "vibration"
    report = build_vibration_cnn(out)
    lineage: dict[str, object] = {
        "source": "edgefleet demo",
        "data": "synthetic 3-axis vibration windows",
        "int8_accuracy": round(report.value, 4),
    }
    return DemoModel(
        report.model_path.read_bytes(),
        load_reference(report.reference_path),
        report.value,
        lineage,
        schema=vibration_schema(),
    )


def broken_bundle(
    model: DemoModel, version: int, keys: Sequence[Ed25519PrivateKey], out: Path
) -> Path:
    """A signed bundle of ``model`` as ``version`` whose smoke test fails on devices.

    Built as usual, then its smoke-test samples get expected outputs with the classes
    reversed, and the manifest is hashed and signed again with ``keys``.

    Raises:
        BuildError: the model does not build.
        OSError: ``out`` cannot be written.
    """
    build_bundle(
        model.model,
        name=MODEL_NAME,
        version=version,
        reference=model.reference,
        keys=keys,
        out=out,
        schema=demo_schema(),
        lineage={**model.lineage, "note": "exported with the wrong output scaling"},
    )
    with zipfile.ZipFile(out) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    samples = SmokeSamples.from_json(parse_json(members[SAMPLES], SAMPLES))
    wrong = replace(samples, expected=samples.expected[:, ::-1].copy())
    members[SAMPLES] = canonical_bytes(wrong.to_json())
    manifest = Manifest.from_json(parse_json(members[MANIFEST], MANIFEST))
    digests = dict(manifest.members)
    digests[SAMPLES] = MemberDigest(
        hashlib.sha256(members[SAMPLES]).hexdigest(), len(members[SAMPLES])
    )
    manifest_bytes = replace(manifest, members=digests).to_bytes()
    members[MANIFEST] = manifest_bytes
    signatures = sign(Context.BUNDLE_MANIFEST, manifest_bytes, keys)
    members[SIGNATURES] = canonical_bytes([s.to_json() for s in signatures])
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as zf:
        order = [MANIFEST, SIGNATURES, *(n for n in members if n not in (MANIFEST, SIGNATURES))]
        for name in order:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, members[name])
    out.write_bytes(buffer.getvalue())
    return out
