"""A loaded TFLite model that takes and returns real numbers.

Quantized models are fed and read through their tensors' affine parameters, so
callers pass float features and get float outputs whatever the model's I/O dtype.
Batches of any size are run by resizing the input's batch dimension. Models EdgeFleet
cannot serve faithfully are refused at load, each with one line saying why.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np

from edge_agent.contract.manifest import Quantization, TensorSpec
from edge_agent.errors import ModelLoadError, ValidationError
from edge_agent.inference.flatbuffer import outline
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


_QUANTIZED_IO: Final = frozenset({"int8", "uint8", "int16"})
_IO_DTYPES: Final = frozenset({"float32"}) | _QUANTIZED_IO


def _open(model: bytes, num_threads: int) -> Interpreter:
    """The interpreter for ``model``, refusing what EdgeFleet cannot serve.

    Raises:
        ModelLoadError: the runtime refused the model (naming the custom operators it
            lacks, when that is why), or the model has several subgraphs.
    """
    try:
        interpreter = open_interpreter(model, num_threads=num_threads)
    except ModelLoadError as exc:
        try:
            custom = outline(model).custom_ops
        except ModelLoadError:
            raise exc from None
        if custom:
            raise ModelLoadError(
                f"the model uses custom operator(s) {', '.join(custom)}, which the TFLite "
                "runtime cannot run"
            ) from exc
        raise
    subgraphs = outline(model).subgraphs
    if subgraphs != 1:
        raise ModelLoadError(
            f"the model has {subgraphs} subgraphs (control flow such as IF/WHILE, or several "
            "signatures); EdgeFleet serves models with one subgraph"
        )
    return interpreter


def _check_io(role: str, spec: TensorSpec) -> None:
    """Refuse a tensor EdgeFleet cannot feed or read as real numbers.

    Raises:
        ModelLoadError: dynamic non-batch dimensions, an unsupported dtype, or an
            integer tensor without quantization parameters.
    """
    if any(d < 0 for d in spec.shape[1:]):
        raise ModelLoadError(
            f"the model's {role} {spec.name!r} has dynamic dimensions {list(spec.shape)}; "
            "only the batch (first) dimension may be dynamic"
        )
    if spec.dtype not in _IO_DTYPES:
        raise ModelLoadError(
            f"the model's {role} {spec.name!r} is {spec.dtype}; EdgeFleet serves float32 "
            "or quantized int8/uint8/int16 inputs and outputs"
        )
    if spec.dtype in _QUANTIZED_IO and spec.quantization is None:
        raise ModelLoadError(
            f"the model's {role} {spec.name!r} is {spec.dtype} without quantization "
            "parameters (scale, zero point), so real values cannot be converted to it; "
            "convert with inference_input_type/inference_output_type set, or float I/O"
        )


class LoadedModel:
    """One interpreter with a single input ``[batch, *sample_shape]`` (any rank) and a
    single output ``[batch, n_outputs]``."""

    def __init__(self, model: bytes, num_threads: int = 1) -> None:
        """Load ``model`` into the runtime.

        Raises:
            ModelLoadError: the runtime refused the model (an operator it lacks, named
                when custom), or the model has several subgraphs, several inputs or
                outputs, dynamic non-batch dimensions, an input that is not at least
                ``[batch, n]``, an output that is not ``[batch, n]``, or an integer
                input/output without quantization parameters.
        """
        self.interpreter: Interpreter = _open(model, num_threads)
        ins = self.interpreter.get_input_details()
        outs = self.interpreter.get_output_details()
        if len(ins) != 1 or len(outs) != 1:
            raise ModelLoadError(
                f"the model has {len(ins)} input(s) and {len(outs)} output(s); EdgeFleet "
                "serves models with one input and one output tensor"
            )
        self._in = ins[0]
        self._out = outs[0]
        self.input = tensor_spec(self._in)
        self.output = tensor_spec(self._out)
        if len(self.input.shape) < 2 or len(self.output.shape) != 2:
            raise ModelLoadError(
                f"expected an input [batch, ...] and a 2-D output [batch, n], got shapes "
                f"{list(self.input.shape)} and {list(self.output.shape)}"
            )
        _check_io("input", self.input)
        _check_io("output", self.output)
        #: The shape of one sample (the input without its batch dimension).
        self.sample_shape: tuple[int, ...] = tuple(int(d) for d in self._in["shape"][1:])
        #: Values in one sample (the width of a tabular ``[batch, n]`` input).
        self.n_features = int(np.prod(self.sample_shape))
        self.n_outputs = int(self._out["shape"][1])
        self._in_dtype = np.dtype(self._in["dtype"])
        self._batch = int(self._in["shape"][0])
        self._in_index = int(self._in["index"])
        self._out_index = int(self._out["index"])
        # Float32 in and out: run_one feeds and returns the tensors as they are.
        self._plain_io = self._in_dtype == np.float32 and np.dtype(self._out["dtype"]) == np.float32
        self._raw_calls = _has_raw_calls(self.interpreter)
        #: Whether the native hot path can drive this model: float32 in and out (any
        #: sample rank), through the runtime's wrapped interpreter.
        self.native_ready = self._plain_io and self._raw_calls

    def run_one(self, x: np.ndarray) -> np.ndarray:
        """:meth:`predict` for one float32 C-contiguous sample ``[1, *sample_shape]``.

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
            ValidationError: ``x`` is not ``[batch, *sample_shape]``.
        """
        interp = self.interpreter
        if (
            x.shape[0] == self._batch
            and x.shape[1:] == self.sample_shape
            and x.dtype == self._in_dtype
            and x.flags.c_contiguous
        ):
            interp.set_tensor(self._in_index, x)  # the hot path: same batch size as last time
            interp.invoke()
            return interp.get_tensor(self._out_index)
        if x.ndim < 1 or x.shape[1:] != self.sample_shape or x.shape[0] == 0:
            shape = ", ".join(str(d) for d in self.sample_shape)
            raise ValidationError(
                f"input shape {list(x.shape)} does not match the model's [batch, {shape}]"
            )
        if x.shape[0] != self._batch:
            interp.resize_tensor_input(self._in["index"], [x.shape[0], *self.sample_shape])
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
        """Run float inputs ``[batch, *sample_shape]`` (or one sample ``sample_shape``);
        returns float32 ``[batch, n_outputs]``.

        Raises:
            ValidationError: wrong shape.
        """
        x = np.asarray(x)
        if x.shape == self.sample_shape:
            x = x[None]
        return self.dequantize_output(self.run_raw(self.quantize_input(x)))

    def is_quantized(self) -> bool:
        """Whether any tensor in the graph is 8-bit integer (a full-integer model)."""
        details = self.interpreter.get_tensor_details()
        return any(np.dtype(d["dtype"]) in (np.int8, np.uint8) for d in details)

    def output_step(self) -> float:
        """The smallest output difference the model can express (its quantization step)."""
        q = self.output.quantization
        return q.scale if q is not None and self.output.dtype != "float32" else 0.0
