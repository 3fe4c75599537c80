"""The native one-sample prediction path, where it is built.

``edge_agent/_hotpath.c`` does in one call what :meth:`ServingModel.predict_one
<edge_agent.serving.ServingModel.predict_one>` does in Python for one sample (a float32
or float64 ``[F]`` array):
the schema's NaN/range checks, set_tensor/invoke/get_tensor on the runtime, the output
check, and the window's counts (histograms, moments, classes, confidence, latency) —
buffered 64 samples at a time and folded feature by feature, as the Python path folds
its buffer. Same errors, same counts; tests run both paths on the same samples and
compare.

It is optional: ``pip install`` builds it where a C compiler and the Python headers
are present, and the agent falls back to the Python path where they are not (or when
``EDGEFLEET_NATIVE=0`` is set). :func:`native_status` says which path a process uses.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_agent.errors import PredictionError
from edge_agent.input_schema import nan_message, out_of_range_message

if TYPE_CHECKING:
    from edge_agent.serving import Prediction, ServingModel

_hotpath: ModuleType | None
try:
    import edge_agent._hotpath as _hotpath
except ImportError:  # not built here: the Python path serves
    _hotpath = None

#: Calls ``(inputs, probation)``; returns the :class:`~edge_agent.serving.Prediction`,
#: or None when ``inputs`` is not a float32/float64 ``[F]`` sample (the caller then
#: takes the general path). Raises PredictionError as ``ServingModel.predict_one`` does.
NativeRunner = Callable[[Any, Any], "Prediction | None"]


def native_status() -> str:
    """``"native"``, ``"disabled"`` (by ``EDGEFLEET_NATIVE=0``) or ``"not built"``."""
    if _hotpath is None:
        return "not built"
    return "disabled" if os.environ.get("EDGEFLEET_NATIVE") == "0" else "native"


def native_runner(serving: ServingModel, result_type: type[Prediction]) -> NativeRunner | None:
    """A native runner for ``serving``'s one-sample predictions, or None.

    ``result_type`` is what it returns (:class:`~edge_agent.serving.Prediction`, passed
    in because that module imports this one).

    None when the extension is not built or disabled, or when the model does not take
    and return float32 through the runtime's wrapped interpreter (quantized I/O goes
    through the Python path, which converts).

    Raises:
        ValueError: the monitor's arrays do not fit the model (a bug, not bad input).
    """
    model = serving.model
    if _hotpath is None or native_status() != "native":
        return None
    if not (model._plain_io and model._raw_calls):
        return None
    runner: NativeRunner = _hotpath.Runner(
        model=model,
        staging=np.zeros((1, model.n_features), dtype=np.float32),
        serve_lock=serving._lock,
        record_error=serving.monitor.record_error,
        error_type=PredictionError,
        range_problem=partial(out_of_range_message, serving.schema.names, serving._lo, serving._hi),
        nan_problem=partial(nan_message, serving.schema.names),
        result_type=result_type,
        labels=serving.labels,
        version=serving.version,
        refuse_nan=serving._refuse_nan,
        refuse_range=serving._refuse_range,
        refuse_lo=serving._lo.astype(np.float64),
        refuse_hi=serving._hi.astype(np.float64),
        **serving.monitor.native_counters(),
    )
    serving.monitor.attach_native(runner)
    return runner
