"""Building signed bundles: reference statistics, smoke-test samples, manifest, signatures.

The hub runs the model once over the reference data (to learn the tensors, the
reference class distribution and confidence histogram, and the smoke-test outputs),
then writes the archive atomically.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent import __version__ as agent_version
from edge_agent.contract.bundle import is_tflite
from edge_agent.contract.calibration import Calibration
from edge_agent.contract.canonical import canonical_bytes
from edge_agent.contract.fields import is_safe_name
from edge_agent.contract.histogram import count, with_cut
from edge_agent.contract.input_schema import OUTPUT_PREFIX, FeatureSpec, InputSchema, OutputKind
from edge_agent.contract.manifest import (
    INPUT_SCHEMA,
    MANIFEST,
    MODEL,
    REFERENCE,
    SAMPLES,
    SIGNATURES,
    Manifest,
    MemberDigest,
)
from edge_agent.contract.reference import DEFAULT_CONFIDENCE_EDGES, ReferenceStats
from edge_agent.contract.samples import SmokeSamples
from edge_agent.contract.trust import Context
from edge_agent.errors import EdgeFleetError
from edge_agent.inference.model import LoadedModel
from hub.errors import BuildError
from hub.signing import sign

DEFAULT_BINS: Final = 10
QUANTIZED_SMOKE_STEPS: Final = 32
CONFIDENCE_EDGES: Final = DEFAULT_CONFIDENCE_EDGES
_ZIP_EPOCH: Final = (1980, 1, 1, 0, 0, 0)
log = logging.getLogger("edgefleet.hub")


@dataclass(frozen=True)
class ReferenceData:
    """Reference inputs (``[n, features]`` float, or ``[n, *sample_shape]`` for a tensor
    input) and the feature names (for a tensor: the channel names, of its last axis
    unless a schema says otherwise); optionally
    labelled held-out data (``holdout_x [m, ...]``, ``holdout_y [m]`` class
    indices) to fit the confidence calibration map on (see
    :mod:`edge_agent.contract.calibration`). Without held-out data the bundle has no map and
    the hub reports no label-free accuracy estimate for it."""

    x: np.ndarray
    names: tuple[str, ...]
    holdout_x: np.ndarray | None = None
    holdout_y: np.ndarray | None = None


def load_reference(path: Path) -> ReferenceData:
    """Load reference inputs from ``.npz`` (array ``x`` of ``[samples, features]`` or
    ``[samples, *input_shape]``, optional ``feature_names`` or ``channel_names`` (of the
    last axis), and optional labelled held-out data ``holdout_x``/``holdout_y`` for
    calibration) or CSV.

    A CSV file has a header row of feature names and one numeric row per sample.

    Raises:
        BuildError: unknown format, missing array, non-numeric or empty data.
    """
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                if "x" not in data:
                    raise BuildError(f"{path}: no array named 'x'")
                x = np.asarray(data["x"], dtype=np.float64)
                key = "feature_names" if x.ndim == 2 else "channel_names"
                prefix = "f" if x.ndim == 2 else "c"
                names = (
                    tuple(str(n) for n in data[key])
                    if key in data
                    else tuple(f"{prefix}{i}" for i in range(x.shape[-1] if x.ndim >= 2 else 0))
                )
                holdout = _holdout(path, data)
        elif path.suffix == ".csv":
            with path.open(newline="") as f:
                rows = list(csv.reader(f))
            if len(rows) < 2:
                raise BuildError(f"{path}: need a header row and at least one data row")
            names = tuple(rows[0])
            x = np.asarray([[float(v) for v in row] for row in rows[1:]], dtype=np.float64)
            holdout = None
        else:
            raise BuildError(f"{path}: reference data must be .npz or .csv")
    except (OSError, ValueError) as exc:
        raise BuildError(f"{path}: cannot read reference data ({exc})") from exc
    if x.ndim < 2 or x.shape[0] == 0 or len(names) != x.shape[-1]:
        raise BuildError(
            f"{path}: reference data must be [samples, features] with one name each, or "
            "[samples, *input_shape] with one name per channel of the last axis"
        )
    if holdout is None:
        return ReferenceData(x, names)
    return ReferenceData(x, names, holdout[0], holdout[1])


def _holdout(path: Path, data: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """``holdout_x``/``holdout_y`` of an ``.npz``, both or neither.

    Raises:
        BuildError: only one of them, or labels that are not integers.
    """
    present = [k in data for k in ("holdout_x", "holdout_y")]
    if not any(present):
        return None
    if not all(present):
        raise BuildError(f"{path}: holdout_x and holdout_y come together")
    y = np.asarray(data["holdout_y"])
    if y.dtype.kind not in "iu":
        raise BuildError(f"{path}: holdout_y must hold integer class indices")
    return np.asarray(data["holdout_x"], dtype=np.float64), y.astype(np.int64)


def fit_calibration(
    model: LoadedModel,
    reference: ReferenceData,
    edges: Sequence[float],
    schema: InputSchema | None = None,
) -> Calibration | None:
    """The confidence calibration map from the reference's held-out data (None without).

    Raises:
        BuildError: the held-out data does not fit the model (width, length, labels
            outside the model's outputs) or the model returns NaN on it.
    """
    hx, hy = reference.holdout_x, reference.holdout_y
    if hx is None or hy is None:
        return None
    if hx.shape[1:] != model.sample_shape or hy.shape != (hx.shape[0],):
        dims = ", ".join(str(d) for d in model.sample_shape)
        raise BuildError(
            f"held-out data must be [samples, {dims}] with one label each, got "
            f"{list(hx.shape)} and {list(hy.shape)}"
        )
    if hx.shape[0] == 0 or hy.min() < 0 or hy.max() >= model.n_outputs:
        raise BuildError(f"held-out labels must be class indices 0..{model.n_outputs - 1}")
    x32 = hx.astype(np.float32)
    probs = model.predict(x32).astype(np.float64)
    if not np.all(np.isfinite(probs)):
        raise BuildError("the model returned NaN or infinity on the held-out data")
    seen = x32.astype(np.float64) if schema is None else schema.summarize(x32)
    try:
        return Calibration.fit(edges, probs, hy, seen.reshape(seen.shape[0], -1))
    except EdgeFleetError as exc:
        raise BuildError(str(exc)) from exc


def compute_reference(
    model: LoadedModel,
    x: np.ndarray,
    names: Sequence[str],
    labels: Sequence[str],
    n_bins: int,
    discrete: Sequence[bool] | None = None,
    schema: InputSchema | None = None,
) -> ReferenceStats:
    """Reference statistics of ``x`` and the model's outputs on it (see
    :meth:`ReferenceStats.from_data`). ``x`` is rounded to float32 first, as every
    device's inputs are before they are counted, so a reference value and the same
    value on a device land in the same bin. For a tensor input (``schema`` not
    tabular), and for outputs that are not classes, the statistics are of what a
    device counts (:meth:`InputSchema.monitor`: per-channel summaries, then the
    outputs), named ``schema.monitored_names``."""
    x32 = np.asarray(x, dtype=np.float32)
    probs = model.predict(x32)
    if schema is not None and (not schema.is_tabular or schema.outputs_monitored):
        seen = schema.monitor(x32, probs)
        flags = list(discrete or [False] * len(names)) if schema.is_tabular else []
        flags += [False] * (seen.shape[1] - len(flags))
        stats = ReferenceStats.from_data(
            seen,
            probs,
            schema.monitored_names,
            labels,
            n_bins,
            CONFIDENCE_EDGES,
            flags,
            output_kind=schema.kind,
        )
        cut = schema.output_cut
        if cut is not None:
            stats = _cut_outputs(stats, seen, cut)
        if schema.is_tabular:
            return stats
        values = schema.channels_last(x32).astype(np.float64)
        return stats.with_channels(schema.names, values, n_bins)
    return ReferenceStats.from_data(
        x32.astype(np.float64), probs, names, labels, n_bins, CONFIDENCE_EDGES, discrete
    )


def _cut_outputs(stats: ReferenceStats, seen: np.ndarray, cut: float) -> ReferenceStats:
    """``stats`` with ``cut`` an edge of every output feature (``out.*``, the last
    columns of ``seen``), so the hub's exceedance rates are exact counts."""
    features = list(stats.features)
    first = len(features) - sum(f.name.startswith(OUTPUT_PREFIX) for f in features)
    for j in range(first, len(features)):
        edges = with_cut(np.asarray(features[j].edges), cut)
        features[j] = replace(
            features[j],
            edges=tuple(float(e) for e in edges),
            counts=tuple(int(c) for c in count(edges, seen[:, j])),
        )
    return replace(stats, features=tuple(features), output_cut=cut)


def infer_output_kind(probs: np.ndarray) -> tuple[OutputKind, str]:
    """The output kind of a model from its outputs on the reference, and why, in a few
    words: rows of two or more probabilities summing to 1 are ``classification``, two
    or more values in [0, 1] that do not sum to 1 ``multilabel``, one value in [0, 1] a
    ``score``, anything else ``regression``."""
    k = probs.shape[1]
    unit = bool(np.all((probs >= 0.0) & (probs <= 1.0)))
    if k >= 2 and unit and np.allclose(probs.sum(axis=1), 1.0, atol=0.05):
        return "classification", f"{k} outputs in [0, 1] summing to 1 on every reference row"
    if k >= 2 and unit:
        return "multilabel", f"{k} outputs in [0, 1] that do not sum to 1"
    if unit:
        return "score", "one output in [0, 1]"
    return "regression", f"{k} output(s) outside [0, 1] on the reference"


def smoke_samples(model: LoadedModel, x: np.ndarray, n: int) -> SmokeSamples:
    """Pick ``n`` evenly spread reference rows and record the model's outputs for them.

    Float outputs must match within 1e-4. Quantized outputs get 32 output steps (the
    step of an int8 output, or 1/256 of the outputs' range on the reference behind a
    DEQUANTIZE, at least 1/256):
    the two TFLite runtimes round requantization differently (see
    ``hub.modelkit.quantize.RUNTIME_ROUNDING``), and softmax turns a one-step
    difference in a logit into up to ~22 steps of probability.
    """
    idx = np.unique(np.linspace(0, x.shape[0] - 1, num=min(n, x.shape[0])).astype(int))
    inputs = x[idx].astype(np.float32)
    expected = model.predict(inputs)
    if model.is_quantized():
        # An int8 output has its own step. Behind a DEQUANTIZE (float I/O) the step is
        # hidden: int8 softmax has steps of 1/256, and any other output spans its range
        # in at most 256 steps.
        span = float(np.ptp(model.predict(x.astype(np.float32)))) if x.shape[0] > 1 else 0.0
        atol = (model.output_step() or max(1 / 256, span / 256)) * QUANTIZED_SMOKE_STEPS
    else:
        atol = 1e-4
    return SmokeSamples(inputs.astype(np.float64), expected.astype(np.float64), float(atol))


def build_bundle(
    model_bytes: bytes,
    *,
    name: str,
    version: int,
    reference: ReferenceData,
    keys: Sequence[Ed25519PrivateKey],
    out: Path,
    schema: InputSchema | None = None,
    lineage: dict[str, Any] | None = None,
    n_bins: int = DEFAULT_BINS,
    n_samples: int = 16,
    created_at: datetime | None = None,
) -> Manifest:
    """Build and sign a bundle, writing it atomically to ``out``.

    Raises:
        BuildError: the model is not a loadable TFLite model, or the reference
            data or schema do not fit the model's input.
        ValidationError: ``name`` or ``version`` are invalid, or a feature the schema
            declares discrete has too many distinct reference values.
        OSError: ``out`` cannot be written.
    """
    if not keys:
        raise BuildError("at least one signing key is needed")
    if not is_tflite(model_bytes[:8]):
        raise BuildError("the model is not a TFLite flatbuffer (no TFL3 identifier)")
    try:
        model = LoadedModel(model_bytes)
    except EdgeFleetError as exc:
        raise BuildError(str(exc)) from exc
    tabular = len(model.sample_shape) == 1
    if tabular and reference.x.ndim == 2 and reference.x.shape[1] != model.n_features:
        raise BuildError(
            f"reference data has {reference.x.shape[1]} features, the model takes "
            f"{model.n_features}"
        )
    if reference.x.shape[1:] != model.sample_shape:
        dims = ", ".join(str(d) for d in model.sample_shape)
        raise BuildError(
            f"reference data is {list(reference.x.shape)}, the model takes [batch, {dims}]"
        )
    defaulted = schema is None
    if schema is None:
        try:
            schema = InputSchema(
                features=tuple(FeatureSpec(n) for n in reference.names),
                shape=() if tabular else model.sample_shape,
                channel_axis=0 if tabular else len(model.sample_shape) - 1,
            )
        except EdgeFleetError as exc:
            raise BuildError(f"reference names do not fit the model's input: {exc}") from exc
    if tabular and schema.is_tabular and len(schema.features) != model.n_features:
        raise BuildError(
            f"schema lists {len(schema.features)} features, the model takes {model.n_features}"
        )
    if schema.sample_shape != model.sample_shape:
        raise BuildError(
            f"schema describes samples of shape {list(schema.sample_shape)}, the model "
            f"takes {list(model.sample_shape)}"
        )
    if schema.output_kind is None:
        kind, why = infer_output_kind(model.predict(reference.x.astype(np.float32)))
        log.info(
            "%s v%d: output kind inferred as %s (%s); declare output_kind in the schema to "
            "change it",
            name,
            version,
            kind,
            why,
        )
        if kind != "classification":
            schema = replace(schema, output_kind=kind)
    default = "class" if schema.kind in ("classification", "multilabel") else "output"
    labels = schema.labels or tuple(f"{default}_{i}" for i in range(model.n_outputs))
    if len(labels) != model.n_outputs:
        raise BuildError(
            f"schema has {len(labels)} labels, the model has {model.n_outputs} outputs"
        )
    if defaulted or schema.outputs_monitored:
        schema = replace(schema, labels=labels)
    if schema.outputs_monitored:
        bad = [label for label in labels if not is_safe_name(f"{OUTPUT_PREFIX}{label}")]
        if bad:
            raise BuildError(
                f"a {schema.kind} model's labels name its monitored outputs and must be "
                f"safe names (A-Z a-z 0-9 . _ -): {', '.join(repr(b) for b in bad)}"
            )
        names = schema.monitored_names
        if len(set(names)) != len(names):
            raise BuildError(f"monitored names collide: {', '.join(sorted(names))}")
    discrete = [f.discrete for f in schema.features]
    stats = compute_reference(model, reference.x, schema.names, labels, n_bins, discrete, schema)
    calibration = fit_calibration(model, reference, CONFIDENCE_EDGES, schema)
    if calibration is not None:
        stats = stats.with_calibration(calibration)
    members = {
        MODEL: model_bytes,
        REFERENCE: canonical_bytes(stats.to_json()),
        INPUT_SCHEMA: canonical_bytes(schema.to_json()),
        SAMPLES: canonical_bytes(smoke_samples(model, reference.x, n_samples).to_json()),
    }
    manifest = Manifest(
        name=name,
        version=version,
        created_at=(created_at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        min_agent_version=agent_version,
        members={
            n: MemberDigest(hashlib.sha256(b).hexdigest(), len(b)) for n, b in members.items()
        },
        inputs=(model.input,),
        outputs=(model.output,),
        lineage=lineage or {},
    )
    Manifest.from_json(manifest.to_json())  # the same checks a device runs
    manifest_bytes = manifest.to_bytes()
    signatures = sign(Context.BUNDLE_MANIFEST, manifest_bytes, keys)
    archive = {
        MANIFEST: manifest_bytes,
        SIGNATURES: canonical_bytes([s.to_json() for s in signatures]),
        **members,
    }
    _write_archive(out, archive)
    return manifest


def _write_archive(out: Path, members: dict[str, bytes]) -> None:
    """Write the members as stored ZIP entries to a temp file, fsync, then rename."""
    tmp = out.with_name(f".{out.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
                for member, data in members.items():
                    info = zipfile.ZipInfo(member, date_time=_ZIP_EPOCH)
                    info.external_attr = 0o644 << 16
                    zf.writestr(info, data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
