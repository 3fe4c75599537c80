"""Agent.predict on one sample (validation + monitoring) vs a bare set_tensor/invoke/get_tensor.

Targets: <= 1.3x on an int8 MLP of ~0.3 M parameters (64-512-512-10), also from a
bundle with a calibration map (its windows add the typicality energy, 2 x 64
multiply-adds a sample), <= 2.5x on the tiny demo model, <= 1.3x on the 1-D CNN over
[64, 3] accelerometer windows TensorFlow's converter made (tests/fixtures/tf, int8
inside, float I/O; per-channel summaries counted). Each measured on the same
interpreter in the same run.
``Agent.predict`` is ``Predictor.predict`` (it delegates), so the Predictor is driven
directly here, loaded from a real signed bundle. Next to the wall time per call, the
process CPU time per call (all threads) is printed, so work moved to another thread
cannot make the figure look better than it is.
"""

from __future__ import annotations

import itertools
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.contract.bundle import verify_bundle
from edge_agent.contract.messages import ModelVersion
from edge_agent.contract.trust import TrustRoot
from edge_agent.inference.serving import Predictor, ServingModel
from hub.bundler import ReferenceData, build_bundle, load_reference
from hub.modelkit import (
    DenseLayer,
    DenseNet,
    Standardizer,
    build_demo,
    quantize_net,
    write_int8,
)


def big_int8_model(rng: np.random.Generator) -> tuple[bytes, np.ndarray]:
    widths = (64, 512, 512, 10)
    layers = tuple(
        DenseLayer(
            rng.normal(0, 1 / np.sqrt(a), (a, b)).astype(np.float32),
            rng.normal(0, 0.1, b).astype(np.float32),
            "relu" if i < 2 else "none",
        )
        for i, (a, b) in enumerate(itertools.pairwise(widths))
    )
    x = rng.normal(0, 1, (2000, 64))
    net = DenseNet(layers, Standardizer.fit(x))
    return write_int8(quantize_net(net, x), io_dtype="float32"), x


def predictor_for(
    model: bytes, x: np.ndarray, tmp: Path, name: str, holdout_y: np.ndarray | None = None
) -> Predictor:
    """A Predictor on a signed bundle of ``model``; with ``holdout_y`` (labels for ``x``)
    the bundle has a calibration map, so the window also counts typicality."""
    key = Ed25519PrivateKey.generate()
    trust = TrustRoot.from_keys([key.public_key()], 1)
    out = tmp / f"{name}.efb"
    names = tuple(f"f{i}" for i in range(x.shape[1]))
    reference = (
        ReferenceData(x, names) if holdout_y is None else ReferenceData(x, names, x, holdout_y)
    )
    build_bundle(model, name=name, version=1, reference=reference, keys=[key], out=out)
    predictor = Predictor()
    predictor.active = ServingModel(verify_bundle(out, trust), ModelVersion(name, 1))
    return predictor


ROUNDS = 20


def timed_block(fn, n: int) -> tuple[float, float]:
    """Wall time and process CPU time (all threads) of ``n`` calls, in seconds."""
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        fn()
    return time.perf_counter() - start, time.process_time() - cpu


def measure(label: str, predictor: Predictor, sample: np.ndarray, n: int, target: float) -> None:
    """Bare and Agent.predict in ROUNDS interleaved blocks of n / ROUNDS calls each: the
    ratio printed is the median of the rounds' ratios, so a slow spell of the machine
    (a shared host) weighs on both sides of a round alike instead of on one side."""
    serving = predictor.active
    assert serving is not None
    interp = serving.model.interpreter
    inp = interp.get_input_details()[0]["index"]
    outp = interp.get_output_details()[0]["index"]
    row = np.ascontiguousarray(sample.reshape(1, *sample.shape), dtype=np.float32)
    predictor.predict(row)  # settle the batch size at 1

    def bare() -> None:
        interp.set_tensor(inp, row)
        interp.invoke()
        interp.get_tensor(outp)

    vector = sample.astype(np.float32)

    def predict() -> None:
        predictor.predict(vector)

    block = max(n // ROUNDS, 1)
    timed_block(bare, block)  # warm both up
    timed_block(predict, block)
    rounds = [(timed_block(bare, block), timed_block(predict, block)) for _ in range(ROUNDS)]
    ratios = [p[0] / b[0] for b, p in rounds]
    bare_s = statistics.median(b[0] for b, _ in rounds) / block
    predict_s = statistics.median(p[0] for _, p in rounds) / block
    bare_cpu = sum(b[1] for b, _ in rounds)
    predict_cpu = sum(p[1] for _, p in rounds)
    print(
        f"   {label:<28} bare {bare_s * 1e6:7.2f} us  Agent.predict {predict_s * 1e6:7.2f} us  "
        f"ratio {statistics.median(ratios):4.2f}x (target <= {target}x)  "
        f"[median of {ROUNDS} interleaved rounds; rounds {min(ratios):.2f}-{max(ratios):.2f}x]\n"
        f"   {'':<28} CPU per call: bare {bare_cpu / block / ROUNDS * 1e6:7.2f} us  "
        f"Agent.predict {predict_cpu / block / ROUNDS * 1e6:7.2f} us  "
        f"ratio {predict_cpu / bare_cpu:4.2f}x"
    )


def run() -> None:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        model, x = big_int8_model(rng)
        measure("int8 MLP 64-512-512-10", predictor_for(model, x, tmp, "big"), x[0], 3000, 1.3)
        labels = np.arange(x.shape[0]) % 10  # timing only: any labels with every class
        measure(
            "  the same, calibrated bundle",
            predictor_for(model, x, tmp, "big-cal", labels),
            x[0],
            3000,
            1.3,
        )
        build_demo(tmp / "demo", hidden=(32,), seed=7)
        with np.load(tmp / "demo" / "reference.npz") as data:
            ref = np.asarray(data["x"], dtype=np.float64)
        tiny = (tmp / "demo" / "model-int8.tflite").read_bytes()
        measure(
            "tiny demo int8 (10-32-3)", predictor_for(tiny, ref, tmp, "tiny"), ref[0], 30000, 2.5
        )
        tf_dir = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "tf"
        cnn = load_reference(tf_dir / "cnn1d.npz")
        key = Ed25519PrivateKey.generate()
        build_bundle(
            (tf_dir / "cnn1d_int8f.tflite").read_bytes(),
            name="cnn1d",
            version=1,
            reference=cnn,
            keys=[key],
            out=tmp / "cnn1d.efb",
        )
        trust = TrustRoot.from_keys([key.public_key()], 1)
        predictor = Predictor()
        predictor.active = ServingModel(
            verify_bundle(tmp / "cnn1d.efb", trust), ModelVersion("cnn1d", 1)
        )
        measure("TF 1-D CNN [64, 3] int8f", predictor, cnn.x[0], 6000, 1.3)
