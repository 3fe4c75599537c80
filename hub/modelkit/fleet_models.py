"""Build the model kit's further fleet models, ready to bundle, as :mod:`hub.modelkit.pump`
builds the demo's ``pump-health``.

* :func:`build_vibration_cnn` (``vibration-cnn``): the int8 1-D CNN of :mod:`hub.modelkit.cnn`
  on 3-axis accelerometer windows (:mod:`hub.modelkit.vibration`), a tensor input ``[64, 3]``
  whose schema names the channels ``ax``, ``ay``, ``az``.
* :func:`build_pump_rul` (``pump-rul``): an int8 regression MLP predicting the pump's
  remaining useful life in hours from the ten sensors of :mod:`hub.modelkit.dataset`;
  its schema declares ``output_kind`` ``regression``.

Each writes into a directory ``model-int8.tflite`` (float32 in and out, int8 inside),
``reference.npz`` (what ``hub.bundler.load_reference`` reads: ``x``, the channel or feature
names, and for the classifier held-out ``holdout_x``/``holdout_y`` for the accuracy
calibration), ``test.npz`` and ``schema.json`` (the ``InputSchema`` document ``model push
--schema`` takes), and returns a :class:`FleetModelReport` measured in the installed runtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_agent.contract.canonical import canonical_bytes
from edge_agent.contract.input_schema import FeatureSpec, InputSchema
from edge_agent.inference.runtime import runtime_name
from hub.modelkit.cnn import quantize_cnn, quantize_windows, reference_cnn_forward, train_cnn
from hub.modelkit.dataset import FEATURE_RANGES, FEATURES, make_rul_dataset
from hub.modelkit.inference import run_tflite
from hub.modelkit.pump import (
    INT8_MODEL,
    REFERENCE_DATA,
    SCHEMA,
    TEST_DATA,
    TEST_SEED_OFFSET,
    check_sizes,
)
from hub.modelkit.quantize import RUNTIME_ROUNDING, quantize_input, quantize_net, reference_forward
from hub.modelkit.tflite_writer import write_cnn_int8, write_int8
from hub.modelkit.train import train_regression_mlp
from hub.modelkit.vibration import (
    AXES,
    AXIS_RANGE_G,
    VIBRATION_CLASSES,
    WINDOW,
    make_vibration,
)

VIBRATION_MODEL_NAME = "vibration-cnn"
RUL_MODEL_NAME = "pump-rul"
RUL_LABEL = "rul_hours"
"""The regression output's label: monitored by the hub as ``out.rul_hours``."""


def vibration_schema() -> InputSchema:
    """Input schema of ``vibration-cnn``: windows ``[64, 3]``, channels ``ax ay az`` on axis 1,
    each within the accelerometer's range, and the class labels."""
    return InputSchema(
        features=tuple(FeatureSpec(axis, *AXIS_RANGE_G) for axis in AXES),
        labels=VIBRATION_CLASSES,
        out_of_range="accept",
        nan="refuse",
        shape=(WINDOW, len(AXES)),
        channel_axis=1,
    )


def rul_schema() -> InputSchema:
    """Input schema of ``pump-rul``: the ten pump sensors with their ranges, one regression
    output labelled :data:`RUL_LABEL`."""
    return InputSchema(
        features=tuple(FeatureSpec(n, *FEATURE_RANGES[n]) for n in FEATURES),
        labels=(RUL_LABEL,),
        out_of_range="accept",
        nan="refuse",
        output_kind="regression",
    )


@dataclass(frozen=True)
class FleetModelReport:
    """What a builder wrote and measured by running the written model in the runtime.

    Attributes:
        name: the model's registry name (:data:`VIBRATION_MODEL_NAME`, :data:`RUL_MODEL_NAME`).
        runtime: the TFLite runtime that ran it.
        model_path, reference_path, test_path, schema_path: the files written.
        model_bytes: size of the model file.
        metric: what ``value`` and ``baseline`` measure on the test set: ``"accuracy"`` (share
            of windows classified right; baseline: the most frequent class's share) or
            ``"rmse_hours"`` (root mean squared error; baseline: predicting the training mean).
        value: the model's metric on the test set.
        baseline: the metric of the trivial predictor.
        max_step_diff: largest difference, in int8 output steps, between the model's outputs
            and the NumPy integer reference with the runtime's rounding convention.
    """

    name: str
    runtime: str
    model_path: Path
    reference_path: Path
    test_path: Path
    schema_path: Path
    model_bytes: int
    metric: str
    value: float
    baseline: float
    max_step_diff: int

    def lines(self) -> list[str]:
        """Human-readable summary, one line per item, for a CLI to print."""
        return [
            f"model          {self.name}  {self.model_path}  {self.model_bytes:,} bytes "
            f"(runtime {self.runtime})",
            f"{self.metric:<14} {self.value:.4g} on the test set (trivial predictor: "
            f"{self.baseline:.4g})",
            f"int8 check     max difference from the integer reference: "
            f"{self.max_step_diff} step(s)",
            f"schema         {self.schema_path}",
            f"reference data {self.reference_path}",
            f"test data      {self.test_path}",
        ]


def build_vibration_cnn(
    out_dir: Path,
    *,
    seed: int = 7,
    n_train: int = 3000,
    n_test: int = 2000,
    n_reference: int = 1000,
    epochs: int = 12,
) -> FleetModelReport:
    """Train the vibration CNN, quantize it, write the model and data files into ``out_dir``.

    Writes ``model-int8.tflite`` (raw float32 windows in g, float32 probabilities),
    ``reference.npz`` (``x`` ``[n_reference, 64, 3]`` sampled from the training windows, also
    the calibration set; ``y``; ``channel_names``; ``classes``; ``holdout_x``/``holdout_y``
    = the test windows), ``test.npz`` (``x``, ``y``) and ``schema.json``
    (:func:`vibration_schema`), creating ``out_dir`` if needed and overwriting those files.

    Raises:
        InvalidDataError: sizes are not positive or ``n_reference`` exceeds ``n_train``.
        RuntimeUnavailableError: no TFLite runtime is installed.
        ModelLoadError: the runtime refused the written model.
        OSError: ``out_dir`` cannot be created or written.
    """
    check_sizes(n_train, n_test, n_reference)
    train = make_vibration(n_train, seed)
    test = make_vibration(n_test, seed + TEST_SEED_OFFSET)
    net = train_cnn(train.x, train.y, seed=seed, epochs=epochs)
    chosen = np.sort(np.random.default_rng(seed).choice(n_train, n_reference, replace=False))
    reference_x, reference_y = train.x[chosen], train.y[chosen]
    qnet = quantize_cnn(net, reference_x)
    model = write_cnn_int8(qnet, io_dtype="float32")
    paths = _write(
        out_dir,
        model,
        vibration_schema(),
        reference={
            "x": reference_x,
            "y": reference_y,
            "channel_names": np.array(AXES),
            "classes": np.array(VIBRATION_CLASSES),
            "holdout_x": test.x,
            "holdout_y": test.y,
        },
        test={"x": test.x, "y": test.y},
    )
    runtime = runtime_name()
    probabilities = run_tflite(model, test.x)
    expected = reference_cnn_forward(
        qnet, quantize_windows(qnet, test.x), rounding=RUNTIME_ROUNDING.get(runtime, "double")
    )
    steps = np.rint(probabilities * 256.0).astype(np.int64) - 128
    return FleetModelReport(
        name=VIBRATION_MODEL_NAME,
        runtime=runtime,
        **paths,
        model_bytes=len(model),
        metric="accuracy",
        value=float(np.mean(np.argmax(probabilities, axis=1) == test.y)),
        baseline=float(np.bincount(test.y).max() / n_test),
        max_step_diff=int(np.abs(steps - expected.astype(np.int64)).max()),
    )


def build_pump_rul(
    out_dir: Path,
    *,
    hidden: tuple[int, ...] = (32,),
    seed: int = 7,
    n_train: int = 8000,
    n_test: int = 4000,
    n_reference: int = 1000,
    epochs: int = 30,
) -> FleetModelReport:
    """Train the remaining-useful-life regressor, quantize it, write it and its data files.

    Writes ``model-int8.tflite`` (raw float32 sensor values in, float32 hours out),
    ``reference.npz`` (``x`` sampled from the training rows, also the calibration set;
    ``rul``; ``feature_names``; no held-out labels: the accuracy calibration is for
    classifiers), ``test.npz`` (``x``, ``rul``) and ``schema.json`` (:func:`rul_schema`),
    creating ``out_dir`` if needed and overwriting those files.

    Raises:
        InvalidDataError: sizes are not positive or ``n_reference`` exceeds ``n_train``.
        RuntimeUnavailableError: no TFLite runtime is installed.
        ModelLoadError: the runtime refused the written model.
        OSError: ``out_dir`` cannot be created or written.
    """
    check_sizes(n_train, n_test, n_reference)
    train = make_rul_dataset(n_train, seed)
    test = make_rul_dataset(n_test, seed + TEST_SEED_OFFSET)
    net = train_regression_mlp(train.x, train.rul, hidden, seed=seed, epochs=epochs)
    chosen = np.sort(np.random.default_rng(seed).choice(n_train, n_reference, replace=False))
    reference_x = train.x[chosen]
    qnet = quantize_net(net, reference_x)
    model = write_int8(qnet, io_dtype="float32")
    paths = _write(
        out_dir,
        model,
        rul_schema(),
        reference={"x": reference_x, "rul": train.rul[chosen], "feature_names": np.array(FEATURES)},
        test={"x": test.x, "rul": test.rul},
    )
    runtime = runtime_name()
    hours = run_tflite(model, test.x)[:, 0].astype(np.float64)
    expected = reference_forward(
        qnet, quantize_input(qnet, test.x), rounding=RUNTIME_ROUNDING.get(runtime, "double")
    )[:, 0]
    steps = np.rint(hours / qnet.output.scale).astype(np.int64) + qnet.output.zero_point
    target = test.rul.astype(np.float64)
    return FleetModelReport(
        name=RUL_MODEL_NAME,
        runtime=runtime,
        **paths,
        model_bytes=len(model),
        metric="rmse_hours",
        value=float(np.sqrt(np.mean((hours - target) ** 2))),
        baseline=float(np.sqrt(np.mean((float(train.rul.mean()) - target) ** 2))),
        max_step_diff=int(np.abs(steps - expected.astype(np.int64)).max()),
    )


def _write(
    out_dir: Path,
    model: bytes,
    schema: InputSchema,
    *,
    reference: dict[str, np.ndarray],
    test: dict[str, np.ndarray],
) -> dict[str, Path]:
    """Write the four files; returns their paths by :class:`FleetModelReport` field."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "model_path": out_dir / INT8_MODEL,
        "reference_path": out_dir / REFERENCE_DATA,
        "test_path": out_dir / TEST_DATA,
        "schema_path": out_dir / SCHEMA,
    }
    paths["model_path"].write_bytes(model)
    np.savez(paths["reference_path"], **reference)  # type: ignore[arg-type]
    np.savez(paths["test_path"], **test)  # type: ignore[arg-type]
    paths["schema_path"].write_bytes(canonical_bytes(schema.to_json()))
    return paths
