"""A loaded TFLite model that takes and returns real numbers.

Quantized models are fed and read through their tensors' affine parameters, so
callers pass float features and get float outputs whatever the model's I/O dtype.
Batches of any size are run by resizing the input's batch dimension.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_agent.contract.manifest import Quantization, TensorSpec
from edge_agent.errors import ModelLoadError, ValidationError
from edge_agent.inference.runtime import Interpreter, open_interpreter


def tensor_spec(detail: dict[str, Any]) -> TensorSpec:
    """Describe a tensor from the runtime's ``get_input_details()`` entry."""
    scale, zero_point = detail.get("quantization", (0.0, 0))
    quant = Quantization(float(scale), int(zero_point)) if scale else None
    shape = detail.get("shape_signature")
    if shape is None or len(shape) == 0:
        shape = detail["shape"]
    return TensorSpec(
        name=str(detail["name"]),
        dtype=np.dtype(detail["dtype"]).name,
        shape=tuple(int(d) for d in shape),
        quantization=quant,
    )


def _has_raw_calls(interp: Interpreter) -> bool:
    """Whether the runtime's wrapped interpreter can be called directly on the hot path.

    Both runtimes' Python wrappers check on every ``invoke`` that no NumPy view into a
    tensor buffer is alive (``_ensure_safe``, which counts references to the wrapped
    object): a guard for callers of ``tensor()``. This module never creates such views
    (it copies in and out), so :meth:`LoadedModel.run_one` calls the wrapped object's
    ``SetTensor``/``Invoke``/``GetTensor`` directly, skipping ~0.5 µs of Python per
    prediction. It looks the object up on each call and keeps no reference to it,
    which would make the wrappers' check fail.
    """
    raw = getattr(interp, "_interpreter", None)
    return raw is not None and all(hasattr(raw, m) for m in ("SetTensor", "Invoke", "GetTensor"))


class LoadedModel:
    """One interpreter with a single input and a single output, both 2-D ``[batch, n]``."""

    def __init__(self, model: bytes, num_threads: int = 1) -> None:
        """Load ``model`` into the runtime.

        Raises:
            ModelLoadError: the runtime refused the model, or it does not have one
                ``[batch, features]`` input and one ``[batch, outputs]`` output.
        """
        self.interpreter: Interpreter = open_interpreter(model, num_threads=num_threads)
        ins = self.interpreter.get_input_details()
        outs = self.interpreter.get_output_details()
        if len(ins) != 1 or len(outs) != 1:
            raise ModelLoadError(
                f"expected one input and one output tensor, got {len(ins)} and {len(outs)}"
            )
        self._in = ins[0]
        self._out = outs[0]
        self.input = tensor_spec(self._in)
        self.output = tensor_spec(self._out)
        if len(self.input.shape) != 2 or len(self.output.shape) != 2:
            raise ModelLoadError(
                f"expected 2-D input and output ([batch, n]), got shapes "
                f"{list(self.input.shape)} and {list(self.output.shape)}"
            )
        self.n_features = int(self._in["shape"][1])
        self.n_outputs = int(self._out["shape"][1])
        self._in_dtype = np.dtype(self._in["dtype"])
        self._batch = int(self._in["shape"][0])
        self._in_index = int(self._in["index"])
        self._out_index = int(self._out["index"])
        # Float32 in and out: run_one feeds and returns the tensors as they are.
        self._plain_io = self._in_dtype == np.float32 and np.dtype(self._out["dtype"]) == np.float32
        self._raw_calls = _has_raw_calls(self.interpreter)
        #: Whether the native hot path can drive this model: float32 in and out through
        #: the runtime's wrapped interpreter.
        self.native_ready = self._plain_io and self._raw_calls

    def run_one(self, x: np.ndarray) -> np.ndarray:
        """:meth:`predict` for one float32 C-contiguous sample ``[1, n_features]``.

        The serving hot path: with float32 I/O and a batch of 1 already allocated,
        only set_tensor / invoke / get_tensor remain.

        Raises:
            ValidationError: wrong shape.
        """
        if self._plain_io and self._batch == 1:
            if self._raw_calls:
                raw = self.interpreter._interpreter  # type: ignore[attr-defined]
                raw.SetTensor(self._in_index, x)
                raw.Invoke()
                out: np.ndarray = raw.GetTensor(self._out_index, 0)
                return out
            interp = self.interpreter
            interp.set_tensor(self._in_index, x)
            interp.invoke()
            return interp.get_tensor(self._out_index)
        return self.dequantize_output(self.run_raw(self.quantize_input(x)))

    def run_raw(self, x: np.ndarray) -> np.ndarray:
        """Run a batch already in the input tensor's dtype; returns the raw output.

        Raises:
            ValidationError: ``x`` is not ``[batch, n_features]``.
        """
        interp = self.interpreter
        if (
            x.ndim == 2
            and x.shape[0] == self._batch
            and x.shape[1] == self.n_features
            and x.dtype == self._in_dtype
            and x.flags.c_contiguous
        ):
            interp.set_tensor(self._in_index, x)  # the hot path: same batch size as last time
            interp.invoke()
            return interp.get_tensor(self._out_index)
        if x.ndim != 2 or x.shape[1] != self.n_features or x.shape[0] == 0:
            raise ValidationError(
                f"input shape {list(x.shape)} does not match the model's [batch, {self.n_features}]"
            )
        if x.shape[0] != self._batch:
            interp.resize_tensor_input(self._in["index"], [x.shape[0], self.n_features])
            interp.allocate_tensors()
            self._batch = x.shape[0]
        interp.set_tensor(self._in["index"], np.ascontiguousarray(x, dtype=self._in_dtype))
        interp.invoke()
        return interp.get_tensor(self._out["index"])

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """Convert float features to the input tensor's dtype (identity for float inputs)."""
        q = self.input.quantization
        if q is None or self._in_dtype.kind == "f":
            return x if x.dtype == self._in_dtype else x.astype(self._in_dtype)
        info = np.iinfo(self._in_dtype)
        scaled = np.round(np.asarray(x, dtype=np.float64) / q.scale) + q.zero_point
        return np.clip(scaled, info.min, info.max).astype(self._in_dtype)

    def dequantize_output(self, y: np.ndarray) -> np.ndarray:
        """Convert a raw output to float32 (identity for float outputs)."""
        q = self.output.quantization
        if q is None or y.dtype.kind == "f":
            return y.astype(np.float32, copy=False)
        return ((y.astype(np.float32) - q.zero_point) * q.scale).astype(np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Run float features ``[batch, n_features]``; returns float32 ``[batch, n_outputs]``.

        Raises:
            ValidationError: wrong shape.
        """
        x = np.asarray(x)
        if x.ndim == 1:
            x = x[None, :]
        return self.dequantize_output(self.run_raw(self.quantize_input(x)))

    def is_quantized(self) -> bool:
        """Whether any tensor in the graph is 8-bit integer (a full-integer model)."""
        details = self.interpreter.get_tensor_details()
        return any(np.dtype(d["dtype"]) in (np.int8, np.uint8) for d in details)

    def output_step(self) -> float:
        """The smallest output difference the model can express (its quantization step)."""
        q = self.output.quantization
        return q.scale if q is not None and self.output.dtype != "float32" else 0.0
