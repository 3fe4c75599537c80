"""Build the demo models: train, quantize, write both TFLite files, and measure them in a runtime.

The int8 model in the demo takes raw float32 sensor values and returns float32 probabilities,
the same contract as the float model, so a device app swaps one file for the other without
changing its code (standardization, QUANTIZE and DEQUANTIZE happen inside the model). An
int8-io variant is available from :func:`hub.modelkit.write_int8` for integer-only pipelines.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_agent.contract.canonical import canonical_bytes
from edge_agent.contract.input_schema import FeatureSpec, InputSchema
from edge_agent.inference.runtime import runtime_name
from hub.modelkit.dataset import CLASSES, FEATURE_RANGES, FEATURES, make_dataset
from hub.modelkit.errors import InvalidDataError
from hub.modelkit.inference import run_tflite
from hub.modelkit.quantize import RUNTIME_ROUNDING, quantize_input, quantize_net, reference_forward
from hub.modelkit.tflite_writer import write_float, write_int8
from hub.modelkit.train import train_mlp

FLOAT_MODEL = "model-float.tflite"
INT8_MODEL = "model-int8.tflite"
REFERENCE_DATA = "reference.npz"
TEST_DATA = "test.npz"
SCHEMA = "schema.json"


def demo_schema() -> InputSchema:
    """The input schema of the demo model: sensor names, physical ranges, class labels."""
    return InputSchema(
        features=tuple(FeatureSpec(n, *FEATURE_RANGES[n]) for n in FEATURES),
        labels=CLASSES,
        out_of_range="accept",
        nan="refuse",
    )


#: The test set's seed is the training seed plus this (shared by every model kit builder).
TEST_SEED_OFFSET = 1_000_003


def check_sizes(n_train: int, n_test: int, n_reference: int) -> None:
    """Refuse data sizes a builder cannot use.

    Raises:
        InvalidDataError: a size is below 1, or ``n_reference`` exceeds ``n_train``.
    """
    if min(n_train, n_test, n_reference) < 1 or n_reference > n_train:
        raise InvalidDataError(
            f"need n_train, n_test, n_reference >= 1 and n_reference <= n_train, got "
            f"{n_train}, {n_test}, {n_reference}"
        )


@dataclass(frozen=True)
class DemoReport:
    """What :func:`build_demo` wrote and measured.

    Accuracies are shares in ``[0, 1]`` measured by running the written files in the TFLite
    runtime on the test set. ``int8_max_step_diff`` is the largest difference, in output steps
    of 1/256, between the int8 file's outputs and :func:`hub.modelkit.reference_forward` with
    the runtime's rounding convention.
    """

    runtime: str
    hidden: tuple[int, ...]
    seed: int
    n_train: int
    n_test: int
    float_path: Path
    int8_path: Path
    reference_path: Path
    test_path: Path
    float_bytes: int
    int8_bytes: int
    float_accuracy: float
    int8_accuracy: float
    int8_max_step_diff: int

    @property
    def size_ratio(self) -> float:
        """Int8 file size over float file size."""
        return self.int8_bytes / self.float_bytes

    def lines(self) -> list[str]:
        """Human-readable summary, one line per item, for a CLI to print."""
        return [
            f"runtime        {self.runtime}",
            f"network        MLP hidden={self.hidden} on {len(FEATURES)} features, "
            f"{len(CLASSES)} classes (seed {self.seed}, {self.n_train} training rows)",
            f"float32 model  {self.float_path}  {self.float_bytes:,} bytes  "
            f"accuracy {self.float_accuracy:.2%}",
            f"int8 model     {self.int8_path}  {self.int8_bytes:,} bytes  "
            f"accuracy {self.int8_accuracy:.2%}  ({self.size_ratio:.2f}x the float size)",
            f"int8 check     max difference from the integer reference: "
            f"{self.int8_max_step_diff} step(s) of 1/256",
            f"reference data {self.reference_path}",
            f"test data      {self.test_path}  ({self.n_test} rows)",
        ]


def build_demo(
    out_dir: Path,
    *,
    hidden: tuple[int, ...] = (32,),
    seed: int = 7,
    n_train: int = 8000,
    n_test: int = 4000,
    n_reference: int = 1000,
    epochs: int = 30,
) -> DemoReport:
    """Train the demo MLP, write both models and the data files into ``out_dir``, measure them.

    Writes ``model-float.tflite``, ``model-int8.tflite`` (float32 in/out, int8 inside),
    ``reference.npz`` (``x``, ``y``, ``features``, ``classes``: a sample of the training data,
    also the quantization calibration set; and ``holdout_x``/``holdout_y``, the test data,
    from which the bundler fits the accuracy calibration map), ``test.npz`` (``x``, ``y``)
    and ``schema.json`` (feature names and ranges, class labels: what ``model push
    --schema`` takes), creating ``out_dir`` if needed and overwriting those files.

    Raises:
        InvalidDataError: sizes are not positive or ``n_reference`` exceeds ``n_train``.
        RuntimeUnavailableError: no TFLite runtime is installed.
        ModelLoadError: the runtime refused a written model.
        OSError: ``out_dir`` cannot be created or written.
    """
    check_sizes(n_train, n_test, n_reference)
    train = make_dataset(n_train, seed)
    test = make_dataset(n_test, seed + TEST_SEED_OFFSET)
    net = train_mlp(train.x, train.y, hidden, seed=seed, epochs=epochs)
    sample = np.random.default_rng(seed).choice(n_train, size=n_reference, replace=False)
    reference_x, reference_y = train.x[np.sort(sample)], train.y[np.sort(sample)]
    qnet = quantize_net(net, reference_x)
    float_model = write_float(net)
    int8_model = write_int8(qnet, io_dtype="float32")

    out_dir.mkdir(parents=True, exist_ok=True)
    float_path = out_dir / FLOAT_MODEL
    int8_path = out_dir / INT8_MODEL
    reference_path = out_dir / REFERENCE_DATA
    test_path = out_dir / TEST_DATA
    float_path.write_bytes(float_model)
    int8_path.write_bytes(int8_model)
    np.savez(
        reference_path,
        x=reference_x,
        y=reference_y,
        features=np.array(FEATURES),
        classes=np.array(CLASSES),
        holdout_x=test.x,
        holdout_y=test.y,
    )
    np.savez(test_path, x=test.x, y=test.y)
    (out_dir / SCHEMA).write_bytes(canonical_bytes(demo_schema().to_json()))

    float_probabilities = run_tflite(float_model, test.x)
    int8_probabilities = run_tflite(int8_model, test.x)
    runtime = runtime_name()
    expected = reference_forward(
        qnet, quantize_input(qnet, test.x), rounding=RUNTIME_ROUNDING.get(runtime, "double")
    )
    int8_steps = np.rint(int8_probabilities * 256.0).astype(np.int64) - 128
    return DemoReport(
        runtime=runtime,
        hidden=tuple(hidden),
        seed=seed,
        n_train=n_train,
        n_test=n_test,
        float_path=float_path,
        int8_path=int8_path,
        reference_path=reference_path,
        test_path=test_path,
        float_bytes=len(float_model),
        int8_bytes=len(int8_model),
        float_accuracy=float(np.mean(np.argmax(float_probabilities, axis=1) == test.y)),
        int8_accuracy=float(np.mean(np.argmax(int8_probabilities, axis=1) == test.y)),
        int8_max_step_diff=int(np.abs(int8_steps - expected.astype(np.int64)).max()),
    )
