"""The native one-sample prediction path, where it is built.

``edge_agent/inference/_hotpath.c`` does in one call what :meth:`ServingModel.predict_one
<edge_agent.inference.serving.ServingModel.predict_one>` does in Python for one sample (a float32
or float64 ``[F]`` array, or for a tensor input ``[*sample_shape]`` or
``[1, *sample_shape]``, any strides):
the schema's NaN/range checks, set_tensor/invoke/get_tensor on the runtime, the output
check, and the window's counts (histograms, moments, classes, confidence, latency; for a
tensor its per-channel summaries, per-channel value histograms and per-channel range
misses) — buffered 64 samples at a time and folded feature by feature, as the Python
path folds its buffer. Same errors, same counts; tests run both paths on the same
samples and compare (tests/agent/test_hotpath.py).

A tensor is served natively when its channels are on its last axis and there are two
or more (``ServingModel._native_counts``): its summaries are then summed position by
position, the order NumPy sums them in on the Python path, so both give the same bits.
Other layouts NumPy sums pairwise; those models are served by the Python path.

It is optional: ``pip install`` builds it where a C compiler and the Python headers
are present, and the agent falls back to the Python path where they are not (or when
``EDGEFLEET_NATIVE=0`` is set). :func:`native_status` says which path a process uses.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from types import ModuleType
from typing import Any

import numpy as np

from edge_agent.contract.input_schema import nan_message, out_of_range_message
from edge_agent.contract.messages import ModelVersion
from edge_agent.errors import PredictionError
from edge_agent.inference.accumulator import WindowAccumulator
from edge_agent.inference.model import LoadedModel
from edge_agent.inference.prediction import Prediction

_hotpath: ModuleType | None
try:
    import edge_agent.inference._hotpath as _hotpath
except ImportError:  # not built here: the Python path serves
    _hotpath = None

#: Calls ``(inputs, probation)``; returns the :class:`~edge_agent.inference.prediction.Prediction`,
#: or None when ``inputs`` is not one float32/float64 sample of the model's shape (the
#: caller then takes the general path). Raises PredictionError as ``ServingModel.predict_one`` does.
NativeRunner = Callable[[Any, Any], Prediction | None]


def native_status() -> str:
    """``"native"``, ``"disabled"`` (by ``EDGEFLEET_NATIVE=0``) or ``"not built"``."""
    if _hotpath is None:
        return "not built"
    return "disabled" if os.environ.get("EDGEFLEET_NATIVE") == "0" else "native"


@dataclass(frozen=True)
class NativeSpec:
    """What the native path needs of a serving model: its runtime wrapper, the lock its
    predictions share, its window accumulator, and its schema's checks."""

    model: LoadedModel
    lock: Any  # the serving model's threading.Lock
    monitor: WindowAccumulator
    names: tuple[str, ...]
    lo: np.ndarray  # float32 per-feature lower bounds (-inf: none)
    hi: np.ndarray  # float32 per-feature upper bounds (+inf: none)
    refuse_nan: bool
    refuse_range: bool
    labels: tuple[str, ...]
    version: ModelVersion
    #: The error line for a sample ``[1, *sample_shape]`` holding NaN / out of range.
    nan_problem: Callable[[np.ndarray], str] | None = None
    range_problem: Callable[[np.ndarray], str] | None = None
    #: A tensor sample, counted through its per-channel summaries (channels last).
    tensor: bool = False
    #: Whether the window counts the outputs too, after the sample's values.
    monitor_outputs: bool = False


def native_runner(spec: NativeSpec) -> NativeRunner | None:
    """A native runner for one serving model's one-sample predictions, or None.

    None when the extension is not built or disabled, or when the model does not take
    and return float32 through the runtime's wrapped interpreter (quantized I/O goes
    through the Python path, which converts). The caller decides whether the window's
    counts fit the native path (a tabular classifier, or a channels-last tensor).

    Raises:
        ValueError: the monitor's arrays do not fit the model (a bug, not bad input).
    """
    model = spec.model
    if _hotpath is None or native_status() != "native":
        return None
    if not model.native_ready:
        return None
    nan_problem = spec.nan_problem or partial(nan_message, spec.names)
    range_problem = spec.range_problem or partial(
        out_of_range_message, spec.names, spec.lo, spec.hi
    )
    runner: NativeRunner = _hotpath.Runner(
        model=model,
        staging=np.zeros((1, *model.sample_shape), dtype=np.float32),
        sample_shape=tuple(model.sample_shape),
        tensor=spec.tensor,
        monitor_outputs=spec.monitor_outputs,
        serve_lock=spec.lock,
        record_error=spec.monitor.record_error,
        error_type=PredictionError,
        range_problem=range_problem,
        nan_problem=nan_problem,
        result_type=Prediction,
        labels=spec.labels,
        version=spec.version,
        refuse_nan=spec.refuse_nan,
        refuse_range=spec.refuse_range,
        refuse_lo=np.ascontiguousarray(spec.lo, dtype=np.float64).ravel(),
        refuse_hi=np.ascontiguousarray(spec.hi, dtype=np.float64).ravel(),
        **spec.monitor.native_counters(),
    )
    spec.monitor.attach_native(runner)
    return runner
