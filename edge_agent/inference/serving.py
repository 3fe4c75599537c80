"""Serving predictions: input validation, the active model, a shadow challenger, monitoring.

:class:`Predictor` is what ``Agent.predict`` and the local HTTP API call. It holds
the active :class:`ServingModel` and, in shadow mode, a challenger that sees the same
inputs; callers always get the active model's outputs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial
from math import isfinite, isnan
from time import perf_counter
from typing import Any, Protocol

import numpy as np

from edge_agent.contract.bundle import Bundle
from edge_agent.contract.input_schema import (
    FeatureSpec,
    InputSchema,
    nan_message,
    out_of_range_message,
)
from edge_agent.contract.manifest import MODEL
from edge_agent.contract.messages import ModelVersion
from edge_agent.contract.window import MetricsWindow
from edge_agent.errors import ActivationError, EdgeFleetError, PredictionError
from edge_agent.inference.accumulator import WindowAccumulator
from edge_agent.inference.hotpath import NativeRunner, NativeSpec, native_runner
from edge_agent.inference.model import LoadedModel
from edge_agent.inference.prediction import Prediction, RowError

_FLOAT32 = np.dtype(np.float32)


def nan_problem(schema: InputSchema, x: np.ndarray) -> str:
    """The error line for ``x [batch, *sample_shape]`` holding NaN ``schema`` refuses,
    naming the features (channels) that do."""
    return nan_message(schema.names, schema.channels_last(x))


def range_problem(schema: InputSchema, x: np.ndarray) -> str:
    """The error line for ``x [batch, *sample_shape]`` outside ``schema``'s ranges,
    naming the features (channels) that are."""
    lo, hi = schema.channel_bounds()
    if schema.is_tabular:
        return out_of_range_message(schema.names, lo, hi, x)
    return out_of_range_message(
        schema.names,
        schema.channels_last(lo[None])[0],
        schema.channels_last(hi[None])[0],
        schema.channels_last(x),
    )


class Observer(Protocol):
    """What watches every prediction besides the window (the agent's probation)."""

    def observe(self, ok: int, errors: int, latency_s: float | None = None) -> None:
        """Count ``ok`` served rows and ``errors`` failed ones (one invocation)."""


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
        if self.schema.is_tabular and len(self.model.sample_shape) == 1:
            if len(self.schema.features) != self.model.n_features:
                raise ActivationError(
                    f"{model.name} v{model.version}: schema has {len(self.schema.features)} "
                    f"features, the model takes {self.model.n_features}"
                )
        elif self.schema.sample_shape != self.model.sample_shape:
            raise ActivationError(
                f"{model.name} v{model.version}: schema describes samples of shape "
                f"{list(self.schema.sample_shape)}, the model takes {list(self.model.sample_shape)}"
            )
        #: Whether samples are tensors monitored through per-channel summaries.
        self.tensor = not self.schema.is_tabular
        #: What the outputs are (the schema's output kind).
        self.kind: str = self.schema.kind
        #: Whether the window counts values derived from the samples (a tensor's
        #: summaries, or the outputs of a model that is not a classifier).
        self._mapped = self.tensor or self.schema.outputs_monitored
        if self.reference.output_kind != self.schema.kind:
            raise ActivationError(
                f"{model.name} v{model.version}: the schema's outputs are {self.schema.kind}, "
                f"the reference's {self.reference.output_kind}"
            )
        self.version = model
        self.labels = self.schema.labels
        self.monitor = WindowAccumulator(
            self.reference,
            model_name=model.name,
            model_version=model.version,
            role=role,
            n_classes=self.model.n_outputs,
            schema=self._range_schema(),
            clock=clock,
            sample_shape=self.schema.sample_shape if self._mapped else None,
            monitored=self.schema.monitor if self._mapped else None,
            channel_values=self.schema.channels_last if self.tensor else None,
            channel_ranges=self._channel_ranges() if self.tensor else None,
        )
        self._lock = threading.Lock()
        self._lo, self._hi = self.schema.channel_bounds()
        bounded = bool(np.isfinite(self._lo).any() or np.isfinite(self._hi).any())
        self._refuse_range = self.schema.out_of_range == "refuse" and bounded
        self._refuse_nan = self.schema.nan == "refuse"
        self._row_shape = self.model.sample_shape
        #: The native one-sample path (edge_agent/inference/hotpath.py), or None where not
        #: built, or where it would not count as this path does (see _native_counts).
        self.native: NativeRunner | None = (
            native_runner(
                NativeSpec(
                    model=self.model,
                    lock=self._lock,
                    monitor=self.monitor,
                    names=self.schema.names,
                    lo=self._lo,
                    hi=self._hi,
                    refuse_nan=self._refuse_nan,
                    refuse_range=self._refuse_range,
                    labels=self.labels,
                    version=self.version,
                    # functions of the schema, not methods: the runner must not hold
                    # this model (a cycle would keep a retired model alive)
                    nan_problem=partial(nan_problem, self.schema) if self.tensor else None,
                    range_problem=partial(range_problem, self.schema) if self.tensor else None,
                    tensor=self.tensor,
                    monitor_outputs=self.schema.outputs_monitored,
                )
            )
            if self._native_counts()
            else None
        )

    def _native_counts(self) -> bool:
        """Whether the native path counts this model's window as the Python path does:
        a tabular classifier (the window counts the sample itself), or a tensor whose
        channel axis is the last of two or more channels. Its per-channel summaries are
        then summed position by position, in the order NumPy sums them here; other
        layouts (channels first, one channel) NumPy sums pairwise, so they are served
        through the Python path, which computes them with NumPy."""
        if not self.tensor:
            return not self._mapped
        shape = self.schema.sample_shape
        return self.schema.channel_axis == len(shape) - 1 and shape[-1] >= 2

    def _channel_ranges(self) -> tuple[np.ndarray, np.ndarray]:
        """Each channel's valid range, float64 (-inf/inf where unbounded)."""
        return (
            np.array([-np.inf if f.min is None else f.min for f in self.schema.features]),
            np.array([np.inf if f.max is None else f.max for f in self.schema.features]),
        )

    def _range_schema(self) -> InputSchema | None:
        """The ranges the window counts out-of-range values against, one per value it
        counts: none for a tensor (its ranges bound its values, not their summaries);
        a tabular model's features, then its outputs unbounded when they are counted."""
        if self.tensor:
            return None
        if not self.schema.outputs_monitored:
            return self.schema
        outputs = self.schema.monitored_names[len(self.schema.features) :]
        return InputSchema(self.schema.features + tuple(FeatureSpec(n) for n in outputs))

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
        """Check ``inputs`` against the schema; returns a float32 ``[batch, *sample_shape]``
        array.

        Raises:
            PredictionError: not numbers, wrong shape, or NaN / out-of-range values the
                schema refuses (naming the features).
        """
        x, _ = self.parse(inputs)
        for problem in self.refused_rows(x).values():
            raise PredictionError(problem)
        return x

    def parse(self, inputs: Any) -> tuple[np.ndarray, bool]:
        """``inputs`` (one sample ``sample_shape`` or a batch ``[B, *sample_shape]``, e.g.
        nested lists) as float32 ``[B, *sample_shape]``, without the schema's NaN and
        range checks (see :meth:`refused_rows`), and whether it was one sample.

        Raises:
            PredictionError: not numbers (strings, booleans, ragged lists), or the
                wrong shape.
        """
        if (
            type(inputs) is np.ndarray
            and inputs.dtype == np.float32
            and inputs.shape == self._row_shape
        ):
            return inputs.reshape(1, *self._row_shape), True  # one float32 sample, no copy
        try:
            raw = inputs if type(inputs) is np.ndarray else np.asarray(inputs)
            if raw.dtype.kind not in "iuf":
                raise TypeError(f"got {raw.dtype.name} values")
            x = raw.astype(np.float32, copy=False)
        except (TypeError, ValueError) as exc:
            raise PredictionError(f"inputs must be numbers: {exc}") from exc
        shape = self._row_shape
        single = x.shape == shape
        if single:
            x = x.reshape(1, *shape)
        if x.shape[1:] != shape or x.shape[0] == 0:
            dims = ", ".join(str(d) for d in shape)
            what = ", ".join(self.schema.names)
            if self.tensor:
                what = f"channels {what} on axis {self.schema.channel_axis}"
            raise PredictionError(
                f"inputs have shape {list(np.shape(inputs))}; expected [{dims}] or "
                f"[batch, {dims}] ({what})"
            )
        return x, single

    def refused_rows(self, x: np.ndarray) -> dict[int, str]:
        """The rows of ``x [B, *sample_shape]`` the schema refuses (NaN or out of range,
        per its policies), each with its one-line reason naming the features (channels);
        usually empty."""
        bad = np.zeros(x.shape[0], dtype=np.bool_)
        flat = x.reshape(x.shape[0], -1)
        if self._refuse_nan:
            bad |= np.isnan(flat).any(axis=1)
        if self._refuse_range:
            bad |= ((x < self._lo) | (x > self._hi)).reshape(x.shape[0], -1).any(axis=1)
        if not bad.any():
            return {}
        out = {}
        for i in np.flatnonzero(bad).tolist():
            row = x[i : i + 1]
            if self._refuse_nan and np.isnan(row).any():
                out[i] = nan_message(self.schema.names, self.schema.channels_last(row))
            else:
                out[i] = self.range_problem(row)
        return out

    def predict_one(self, inputs: np.ndarray, probation: Observer | None) -> np.ndarray:
        """Validate, run and record one float32 sample ``[features]``: the serving hot path.

        :meth:`validate` then :meth:`run` for one row, inlined, with the same errors and
        counts (``invalid_input``, ``invoke_error``, ``nan_output``); ``probation``, if
        any, observes the outcome as :meth:`Predictor.predict` does. An accepted sample
        is counted in the window (NaN inputs in their features' NaN bins) even when the
        model's output is then refused as NaN. Returns ``[1, C]``.

        Raises:
            PredictionError: NaN / out-of-range inputs the schema refuses, or the model
                failed or returned NaN.
        """
        if self.tensor:
            return self._predict_tensor(inputs, probation)
        x = inputs.reshape(1, -1)
        if self._refuse_nan and isnan(float(inputs.dot(inputs))):  # NaN iff one is NaN
            self.monitor.record_error("invalid_input")
            raise PredictionError(nan_message(self.schema.names, x))
        if self._refuse_range:
            try:
                self._check_range(x)
            except PredictionError:
                self.monitor.record_error("invalid_input")
                raise
        return self._run_one(x, inputs, probation)

    def _predict_tensor(self, inputs: np.ndarray, probation: Observer | None) -> np.ndarray:
        """:meth:`predict_one` for one float32 tensor sample (``sample_shape``). The
        window buffers the sample and summarizes its channels a block at a time."""
        flat = inputs.reshape(-1)
        if self._refuse_nan and isnan(float(flat.dot(flat))):  # NaN iff one is NaN
            self.monitor.record_error("invalid_input")
            raise PredictionError(
                nan_message(self.schema.names, self.schema.channels_last(inputs[None]))
            )
        x = inputs.reshape(1, *self._row_shape)
        if self._refuse_range and ((x < self._lo).any() or (x > self._hi).any()):
            self.monitor.record_error("invalid_input")
            raise PredictionError(self.range_problem(x))
        return self._run_one(x, inputs, probation)

    def _run_one(self, x: np.ndarray, inputs: np.ndarray, probation: Observer | None) -> np.ndarray:
        """Invoke the model on the checked sample ``x`` and count it (``inputs`` as the
        caller gave it) in the window and in ``probation``.

        Raises:
            PredictionError: the runtime failed, or the output is NaN or infinite.
        """
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
        self.monitor.record_one(inputs, row, latency)
        if not isfinite(sum(row.tolist())):
            self.monitor.record_error("nan_output")
            if probation is not None:
                probation.observe(0, 1)
            raise PredictionError("the model returned NaN or infinity")
        if probation is not None:
            probation.observe(1, 0, latency)
        return out

    def _check_range(self, x: np.ndarray) -> None:
        if (x < self._lo).any() or (x > self._hi).any():
            raise PredictionError(self.range_problem(x))

    def range_problem(self, x: np.ndarray) -> str:
        """The error line for ``x [batch, *sample_shape]`` outside the schema's ranges."""
        return range_problem(self.schema, x)

    def run(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        """Run a validated batch and count it; returns float outputs and the latency in
        seconds. Every row is counted in the window, also rows whose output is NaN or
        infinite (those are counted as ``nan_output`` errors too; see
        :meth:`run_rows`). For one row, such an output raises.

        Raises:
            PredictionError: the runtime failed (``invoke_error``, nothing counted in the
                window), or the output of a one-row batch is NaN or infinite.
        """
        out, latency, bad = self.run_rows(x)
        if bad is not None and x.shape[0] == 1:
            raise PredictionError("the model returned NaN or infinity")
        return out, latency

    def run_rows(self, x: np.ndarray) -> tuple[np.ndarray, float, np.ndarray | None]:
        """Run a validated batch ``[B, *sample_shape]`` and count every row (a tensor's
        per-channel summaries, see :meth:`InputSchema.summarize`, computed by the window a
        block at a time); returns the outputs, the
        latency, and a mask of rows whose output is NaN or infinite (None when all are
        finite), which are counted as ``nan_output`` errors.

        Raises:
            PredictionError: the runtime failed (counted as ``invoke_error`` per row).
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
            self.monitor.record_one(x[0], row, latency)
            if isfinite(sum(row.tolist())):
                return out, latency, None
            self.monitor.record_error("nan_output")
            return out, latency, np.ones(1, dtype=np.bool_)
        self.monitor.record(x, out, latency)
        if np.isfinite(out).all():
            return out, latency, None
        bad = ~np.isfinite(out).all(axis=1)
        self.monitor.record_error("nan_output", int(np.count_nonzero(bad)))
        return out, latency, bad


class Predictor:
    """The active model, an optional shadow challenger, and the active model's probation."""

    def __init__(self) -> None:
        """Start with no model (predictions fail until one is activated)."""
        self.active: ServingModel | None = None
        self.shadow: ServingModel | None = None
        self.probation: Observer | None = None

    def predict(self, inputs: Any) -> Prediction:
        """Validate and run ``inputs`` (one sample ``sample_shape``, e.g. ``[F]``, or a
        batch ``[B, *sample_shape]``; NumPy arrays or nested lists).

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
                    # as served: rounded to float32, one sample
                    x = np.asarray(inputs, dtype=np.float32).reshape(1, *active._row_shape)
                    self._run_shadow(self.shadow, x, result.outputs)
                return result
        if (
            type(inputs) is np.ndarray
            and inputs.dtype is _FLOAT32
            and inputs.shape == active._row_shape
        ):
            out = active.predict_one(inputs, self.probation)  # one sample: the hot path
            if self.shadow is not None:
                self._run_shadow(self.shadow, inputs.reshape(1, *inputs.shape), out)
            return Prediction(out, active.labels, active.version, (), active.kind)
        try:
            x, single = active.parse(inputs)
        except PredictionError:
            active.monitor.record_error("invalid_input")
            raise
        refused = active.refused_rows(x)
        if single or (refused and x.shape[0] == 1):
            if refused:  # one sample: its error is the call's
                active.monitor.record_error("invalid_input")
                raise PredictionError(refused[0])
            return self._predict_rows(active, x)
        return self._predict_batch(active, x, refused)

    def _predict_rows(self, active: ServingModel, x: np.ndarray) -> Prediction:
        """Run rows the schema accepted; any failure fails the call (one sample)."""
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
        return Prediction(out, active.labels, active.version, (), active.kind)

    def _predict_batch(
        self, active: ServingModel, x: np.ndarray, refused: dict[int, str]
    ) -> Prediction:
        """A batch: refused rows and rows with NaN outputs get per-row errors, the others
        are served. When no row is served, the call fails with the first row's error.

        Raises:
            PredictionError: the runtime failed, or no row could be served.
        """
        probation = self.probation
        b = x.shape[0]
        errors = [RowError(i, "invalid_input", m) for i, m in sorted(refused.items())]
        if refused:
            active.monitor.record_error("invalid_input", len(refused))
        keep = np.ones(b, dtype=np.bool_)
        keep[list(refused)] = False
        rows = np.flatnonzero(keep)
        outputs = np.full((b, active.model.n_outputs), np.nan, dtype=np.float32)
        if rows.size:
            xs = x if rows.size == b else np.ascontiguousarray(x[rows])
            try:
                out, latency, bad = active.run_rows(xs)
            except PredictionError:
                if probation is not None:
                    probation.observe(0, int(rows.size))
                raise
            if not refused and bad is None:  # the usual batch: served whole, no copy
                if probation is not None:
                    probation.observe(b, 0, latency)
                if self.shadow is not None:
                    self._run_shadow(self.shadow, xs, out)
                return Prediction(out, active.labels, active.version, (), active.kind)
            outputs[rows] = out
            n_bad = 0 if bad is None else int(np.count_nonzero(bad))
            if bad is not None:
                errors += [
                    RowError(int(i), "nan_output", "the model returned NaN or infinity")
                    for i in rows[bad]
                ]
                errors.sort()
                outputs[rows[bad]] = np.nan
            if probation is not None:
                probation.observe(int(rows.size) - n_bad, n_bad, latency)
            if self.shadow is not None:
                self._run_shadow(self.shadow, xs, out)
        if len(errors) == b:
            first = errors[0]
            raise PredictionError(
                first.message
                if b == 1
                else f"no row could be served; row {first.row}: {first.message} ({b - 1} more)"
            )
        return Prediction(outputs, active.labels, active.version, tuple(errors), active.kind)

    @staticmethod
    def _run_shadow(shadow: ServingModel, x: np.ndarray, out: np.ndarray) -> None:
        try:
            challenger, _ = shadow.run(x)
            shadow.monitor.record_shadow(out, challenger)
        except PredictionError:
            pass  # counted in the shadow's own window; callers never see it

    def peek_windows(self, now: float | None = None) -> list[MetricsWindow]:
        """The current monitoring windows of the active and shadow models, left open."""
        return [
            w
            for serving in (self.active, self.shadow)
            if serving is not None and (w := serving.monitor.peek(now)) is not None
        ]

    def close_windows(self, now: float | None = None) -> list[MetricsWindow]:
        """Close the current monitoring windows of the active and shadow models."""
        windows = []
        for serving in (self.active, self.shadow):
            if serving is not None:
                window = serving.monitor.close(now)
                if window is not None:
                    windows.append(window)
        return windows
