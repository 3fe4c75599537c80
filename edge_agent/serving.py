"""Serving predictions: input validation, the active model, a shadow challenger, monitoring.

:class:`Predictor` is what ``Agent.predict`` and the local HTTP API call. It holds
the active :class:`ServingModel` and, in shadow mode, a challenger that sees the same
inputs; callers always get the active model's outputs.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from math import isfinite, isnan
from time import perf_counter
from typing import Any, NamedTuple

import numpy as np

from edge_agent.bundle import Bundle
from edge_agent.errors import ActivationError, EdgeFleetError, PredictionError
from edge_agent.hotpath import NativeRunner, native_runner
from edge_agent.input_schema import InputSchema, out_of_range_message
from edge_agent.manifest import MODEL
from edge_agent.messages import ModelVersion
from edge_agent.model import LoadedModel
from edge_agent.monitor import MetricsWindow, WindowAccumulator
from edge_agent.probation import ProbationMonitor

_FLOAT32 = np.dtype(np.float32)


class Prediction(NamedTuple):
    """Outputs for a batch, with the labels and the model that produced them.

    (A NamedTuple: built on every prediction, and cheaper than a frozen dataclass.)
    """

    outputs: np.ndarray
    labels: tuple[str, ...]
    model: ModelVersion

    def to_json(self) -> dict[str, Any]:
        """JSON for the local API: outputs, top-1 class per row and the model version."""
        top = np.argmax(self.outputs, axis=1)
        return {
            "outputs": self.outputs.tolist(),
            "classes": [self.labels[i] if i < len(self.labels) else int(i) for i in top],
            "model": self.model.to_json(),
        }


class ServingModel:
    """A verified bundle loaded in the runtime, with its input schema and window monitor."""

    def __init__(
        self,
        bundle: Bundle,
        model: ModelVersion,
        role: str = "active",
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Load the bundle's model.

        Raises:
            ActivationError: the model does not load, or does not fit the schema.
        """
        try:
            self.model = LoadedModel(bundle.read(MODEL))
            self.schema: InputSchema = bundle.input_schema()
            self.reference = bundle.reference()
            self.samples = bundle.samples()
        except EdgeFleetError as exc:
            raise ActivationError(f"{model.name} v{model.version}: {exc}") from exc
        if len(self.schema.features) != self.model.n_features:
            raise ActivationError(
                f"{model.name} v{model.version}: schema has {len(self.schema.features)} "
                f"features, the model takes {self.model.n_features}"
            )
        self.version = model
        self.labels = self.schema.labels
        self.monitor = WindowAccumulator(
            self.reference,
            model_name=model.name,
            model_version=model.version,
            role=role,
            n_classes=self.model.n_outputs,
            schema=self.schema,
            clock=clock,
        )
        self._lock = threading.Lock()
        f = self.schema.features
        self._lo = np.array([-np.inf if s.min is None else s.min for s in f], dtype=np.float32)
        self._hi = np.array([np.inf if s.max is None else s.max for s in f], dtype=np.float32)
        bounded = bool(np.isfinite(self._lo).any() or np.isfinite(self._hi).any())
        self._refuse_range = self.schema.out_of_range == "refuse" and bounded
        self._refuse_nan = self.schema.nan == "refuse"
        self._row_shape = (self.model.n_features,)
        #: The native one-sample path (edge_agent/hotpath.py), or None where not built.
        self.native: NativeRunner | None = native_runner(self, Prediction)

    def smoke_test(self) -> None:
        """Run the bundle's samples and compare with the outputs the hub recorded.

        Raises:
            ActivationError: an output is NaN or differs by more than the tolerance.
        """
        try:
            got = self.model.predict(self.samples.inputs.astype(np.float32))
        except (EdgeFleetError, RuntimeError, ValueError) as exc:
            raise ActivationError(f"smoke test: the model failed to run ({exc})") from exc
        if got.shape != self.samples.expected.shape:
            raise ActivationError(
                f"smoke test: outputs have shape {list(got.shape)}, expected "
                f"{list(self.samples.expected.shape)}"
            )
        if not np.all(np.isfinite(got)):
            raise ActivationError("smoke test: the model returned NaN or infinity")
        worst = float(np.max(np.abs(got - self.samples.expected)))
        if worst > self.samples.atol:
            raise ActivationError(
                f"smoke test: outputs differ from the expected by {worst:.4g} "
                f"(tolerance {self.samples.atol:.4g})"
            )

    def validate(self, inputs: Any) -> np.ndarray:
        """Check ``inputs`` against the schema; returns a float32 ``[batch, features]`` array.

        Raises:
            PredictionError: not numbers, wrong shape, or NaN / out-of-range values the
                schema refuses.
        """
        if (
            type(inputs) is np.ndarray
            and inputs.dtype == np.float32
            and inputs.shape == self._row_shape
        ):
            x = inputs.reshape(1, -1)  # the hot path: one float32 sample, no copy
            if self._refuse_nan and math.isnan(float(np.dot(inputs, inputs))):
                raise PredictionError("inputs contain NaN, which this model's schema refuses")
        else:
            x = self._validate_any(inputs)
        if self._refuse_range:
            self._check_range(x)
        return x

    def _validate_any(self, inputs: Any) -> np.ndarray:
        try:
            x = np.asarray(inputs, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise PredictionError(f"inputs must be numbers: {exc}") from exc
        if x.ndim == 1:
            x = x.reshape(1, -1)
        n = self.model.n_features
        if x.ndim != 2 or x.shape[1] != n or x.shape[0] == 0:
            raise PredictionError(
                f"inputs have shape {list(np.shape(inputs))}; expected [{n}] or [batch, {n}] "
                f"({', '.join(self.schema.names)})"
            )
        if self._refuse_nan and np.isnan(x).any():
            raise PredictionError("inputs contain NaN, which this model's schema refuses")
        return x

    def predict_one(self, inputs: np.ndarray, probation: ProbationMonitor | None) -> np.ndarray:
        """Validate, run and record one float32 sample ``[features]``: the serving hot path.

        :meth:`validate` then :meth:`run` for one row, inlined, with the same errors and
        counts (``invalid_input``, ``invoke_error``, ``nan_output``); ``probation``, if
        any, observes the outcome as :meth:`Predictor.predict` does. Returns ``[1, C]``.

        Raises:
            PredictionError: NaN / out-of-range inputs the schema refuses, or the model
                failed or returned NaN.
        """
        x = inputs.reshape(1, -1)
        if self._refuse_nan and isnan(float(inputs.dot(inputs))):  # NaN iff one is NaN
            self.monitor.record_error("invalid_input")
            raise PredictionError("inputs contain NaN, which this model's schema refuses")
        if self._refuse_range:
            try:
                self._check_range(x)
            except PredictionError:
                self.monitor.record_error("invalid_input")
                raise
        with self._lock:
            start = perf_counter()
            try:
                out = self.model.run_one(x)
            except (RuntimeError, ValueError, EdgeFleetError) as exc:
                self.monitor.record_error("invoke_error", 1)
                if probation is not None:
                    probation.observe(0, 1)
                raise PredictionError(f"the model failed: {exc}") from exc
            latency = perf_counter() - start
        row = out[0]
        if not isfinite(sum(row.tolist())):
            self.monitor.record_error("nan_output")
            if probation is not None:
                probation.observe(0, 1)
            raise PredictionError("the model returned NaN or infinity")
        self.monitor.record_one(inputs, row, latency)
        if probation is not None:
            probation.observe(1, 0, latency)
        return out

    def _check_range(self, x: np.ndarray) -> None:
        if (x < self._lo).any() or (x > self._hi).any():
            raise PredictionError(self.range_problem(x))

    def range_problem(self, x: np.ndarray) -> str:
        """The error line for ``x [batch, features]`` outside the schema's ranges."""
        return out_of_range_message(self.schema.names, self._lo, self._hi, x)

    def run(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        """Run a validated batch; returns float outputs and the latency in seconds.

        Raises:
            PredictionError: the runtime failed or returned NaN (counted as errors).
        """
        model = self.model
        with self._lock:
            start = perf_counter()
            try:
                out = model.dequantize_output(model.run_raw(model.quantize_input(x)))
            except (RuntimeError, ValueError, EdgeFleetError) as exc:
                self.monitor.record_error("invoke_error", x.shape[0])
                raise PredictionError(f"the model failed: {exc}") from exc
            latency = perf_counter() - start
        if x.shape[0] == 1:
            row = out[0]
            if not isfinite(sum(row.tolist())):
                self.monitor.record_error("nan_output")
                raise PredictionError("the model returned NaN or infinity")
            self.monitor.record_one(x[0], row, latency)
        else:
            if not np.isfinite(out).all():
                self.monitor.record_error("nan_output", x.shape[0])
                raise PredictionError("the model returned NaN or infinity")
            self.monitor.record(x, out, latency)
        return out, latency


class Predictor:
    """The active model, an optional shadow challenger, and the active model's probation."""

    def __init__(self) -> None:
        """Start with no model (predictions fail until one is activated)."""
        self.active: ServingModel | None = None
        self.shadow: ServingModel | None = None
        self.probation: ProbationMonitor | None = None

    def predict(self, inputs: Any) -> Prediction:
        """Validate and run ``inputs`` (one sample ``[F]`` or a batch ``[B, F]``).

        Raises:
            PredictionError: no model is active, the inputs are invalid, or the model failed.
        """
        active = self.active
        if active is None:
            raise PredictionError("no model is active yet")
        native = active.native
        if native is not None:
            result = native(inputs, self.probation)  # one float sample: the hot path
            if result is not None:
                if self.shadow is not None:
                    x = np.asarray(inputs, dtype=np.float32).reshape(1, -1)  # as served
                    self._run_shadow(self.shadow, x, result.outputs)
                return result
        if (
            type(inputs) is np.ndarray
            and inputs.dtype is _FLOAT32
            and inputs.shape == active._row_shape
        ):
            out = active.predict_one(inputs, self.probation)  # one sample: the hot path
            if self.shadow is not None:
                self._run_shadow(self.shadow, inputs.reshape(1, -1), out)
            return Prediction(out, active.labels, active.version)
        try:
            x = active.validate(inputs)
        except PredictionError:
            active.monitor.record_error("invalid_input")
            raise
        probation = self.probation
        try:
            out, latency = active.run(x)
        except PredictionError:
            if probation is not None:
                probation.observe(0, int(np.shape(x)[0]))
            raise
        if probation is not None:
            probation.observe(x.shape[0], 0, latency)
        if self.shadow is not None:
            self._run_shadow(self.shadow, x, out)
        return Prediction(out, active.labels, active.version)

    @staticmethod
    def _run_shadow(shadow: ServingModel, x: np.ndarray, out: np.ndarray) -> None:
        try:
            challenger, _ = shadow.run(x)
            shadow.monitor.record_shadow(out, challenger)
        except PredictionError:
            pass  # counted in the shadow's own window; callers never see it

    def close_windows(self, now: float | None = None) -> list[MetricsWindow]:
        """Close the current monitoring windows of the active and shadow models."""
        windows = []
        for serving in (self.active, self.shadow):
            if serving is not None:
                window = serving.monitor.close(now)
                if window is not None:
                    windows.append(window)
        return windows
