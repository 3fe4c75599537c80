"""Bundle build and verify time for ~1 MB and ~20 MB models; verify throughput vs plain SHA-256.

Target: verification throughput >= 0.8x that of hashing the same file with SHA-256
(verification should cost little beyond hashing). The models are float32 MLPs with
random weights, sized to the target file size.
"""

from __future__ import annotations

import hashlib
import itertools
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.contract.bundle import verify_bundle
from edge_agent.contract.trust import TrustRoot
from hub.bundler import ReferenceData, build_bundle
from hub.modelkit import FEATURES, DenseLayer, DenseNet, make_dataset, write_float

SIZES = {"1 MB": (512, 480), "20 MB": (2048, 2400)}
REPEATS = 7


def random_net(hidden: tuple[int, ...], rng: np.random.Generator) -> DenseNet:
    widths = (len(FEATURES), *hidden, 3)
    layers = tuple(
        DenseLayer(
            rng.normal(0, 0.05, (a, b)).astype(np.float32),
            np.zeros(b, np.float32),
            "relu" if i < len(hidden) else "none",
        )
        for i, (a, b) in enumerate(itertools.pairwise(widths))
    )
    return DenseNet(layers)


def sha256_file(path: Path) -> None:
    with path.open("rb") as f:
        hashlib.file_digest(f, "sha256")


def median_time(fn, repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run() -> None:
    rng = np.random.default_rng(0)
    key = Ed25519PrivateKey.generate()
    trust = TrustRoot.from_keys([key.public_key()], threshold=1)
    data = make_dataset(2000, seed=1)
    reference = ReferenceData(data.x.astype(np.float64), FEATURES)
    with tempfile.TemporaryDirectory() as tmp:
        for label, hidden in SIZES.items():
            model = write_float(random_net(hidden, rng))
            out = Path(tmp) / f"{label.replace(' ', '')}.efb"
            start = time.perf_counter()
            build_bundle(model, name="bench", version=1, reference=reference, keys=[key], out=out)
            build_s = time.perf_counter() - start

            sha256_file(out)  # warm the page cache for both
            verify_s = median_time(lambda path=out: verify_bundle(path, trust))
            sha_s = median_time(lambda path=out: sha256_file(path))
            size_mb = out.stat().st_size / 1e6
            print(
                f"   {label:>5}: bundle {size_mb:6.2f} MB  build {build_s * 1000:7.1f} ms  "
                f"verify {verify_s * 1000:6.1f} ms ({size_mb / verify_s:6.0f} MB/s)  "
                f"sha256 {sha_s * 1000:6.1f} ms ({size_mb / sha_s:6.0f} MB/s)  "
                f"verify/sha256 throughput ratio {sha_s / verify_s:.2f} (target >= 0.8)"
            )
