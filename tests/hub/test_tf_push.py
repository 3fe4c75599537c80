"""``model push`` of models from TensorFlow's converter (tests/fixtures/tf): the hub
loads each in the runtime and runs its reference through it before signing; what it
cannot serve is refused with one line and nothing is stored."""

from __future__ import annotations

import re
import sqlite3

import numpy as np
import pytest

from hub.bundler import ReferenceData, load_reference
from hub.errors import BuildError
from hub.registry import Registry
from tests.test_tf_models import BAD, TF, four_features


@pytest.fixture
def registry(tmp_path, trust_2of3, signing_keys):
    with Registry(tmp_path / "hub.db", tmp_path / "bundles", trust_2of3, signing_keys[:2]) as r:
        yield r


def nothing_stored(r: Registry) -> bool:
    with sqlite3.connect(r.db_path) as conn:
        rows = int(conn.execute("SELECT COUNT(*) FROM model_versions").fetchone()[0])
    return rows == 0 and list(r.bundle_dir.iterdir()) == []


def test_push_registers_a_tensorflow_converted_model(registry):
    record = registry.push_model(
        (TF / "mlp_int8.tflite").read_bytes(),
        name="mlp",
        reference=load_reference(TF / "mlp.npz"),
    )
    assert (record.name, record.version, record.quantization) == ("mlp", 1, "int8")


@pytest.mark.parametrize("bad", sorted(BAD))
def test_push_refuses_what_the_runtime_cannot_serve_and_stores_nothing(registry, bad):
    with pytest.raises(BuildError, match=re.escape(BAD[bad])) as info:
        registry.push_model(
            (TF / f"{bad}.tflite").read_bytes(), name="bad", reference=four_features()
        )
    assert "\n" not in str(info.value)
    assert nothing_stored(registry)


def test_push_refuses_reference_of_the_wrong_width_and_stores_nothing(registry):
    ref = load_reference(TF / "mlp.npz")
    with pytest.raises(BuildError, match="11 features, the model takes 10"):
        registry.push_model(
            (TF / "mlp_int8f.tflite").read_bytes(),
            name="mlp",
            reference=ReferenceData(np.hstack([ref.x, ref.x[:, :1]]), (*ref.names, "extra")),
        )
    assert nothing_stored(registry)
