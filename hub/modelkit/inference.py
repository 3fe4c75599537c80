"""Run a TFLite model over many rows in the installed runtime, batch by batch."""

from __future__ import annotations

import numpy as np

from edge_agent.inference.runtime import open_interpreter
from hub.modelkit.errors import InvalidDataError


def run_tflite(
    model: bytes, x: np.ndarray, *, batch_size: int = 1024, num_threads: int = 1
) -> np.ndarray:
    """Outputs of a single-input, single-output model for every sample of ``x``.

    The input tensor is resized to ``[batch, *sample_shape]`` (it must have a dynamic batch
    dimension or accept resizing), so large arrays run in a few invocations.

    Args:
        model: the TFLite flatbuffer.
        x: ``[n, F]`` rows, or ``[n, *sample_shape]`` samples of a tensor input (windows
            ``[n, L, C]``); float inputs are cast to float32, otherwise the dtype must match
            the model's input (int8 for an int8-io model).
        batch_size: samples per invocation.
        num_threads: interpreter threads.

    Raises:
        InvalidDataError: ``x`` is not ``[n >= 1, ...]`` with the model's sample shape, or
            its dtype does not fit the model.
        RuntimeUnavailableError: no TFLite runtime is installed.
        ModelLoadError: the runtime refused the model.
    """
    values = np.asarray(x)
    if values.ndim < 2 or values.shape[0] == 0 or batch_size < 1:
        raise InvalidDataError(
            f"run_tflite needs a non-empty [n, F] (or [n, *sample_shape]) array and "
            f"batch_size >= 1, got {values.shape} and {batch_size}"
        )
    interpreter = open_interpreter(model, num_threads=num_threads)
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    dtype = np.dtype(input_detail["dtype"])
    if dtype == np.float32 and np.issubdtype(values.dtype, np.floating):
        values = values.astype(np.float32)
    elif values.dtype != dtype:
        raise InvalidDataError(
            f"the model expects {dtype} inputs, got {values.dtype} "
            "(quantize raw values with hub.modelkit.quantize_input, or quantize_windows for "
            "a CNN, for an int8-io model)"
        )
    sample_shape = tuple(int(d) for d in input_detail["shape"][1:])
    if values.shape[1:] != sample_shape:
        if len(sample_shape) == 1 and values.ndim == 2:
            raise InvalidDataError(
                f"the model takes {sample_shape[0]} features, got {values.shape[1]}"
            )
        raise InvalidDataError(
            f"the model takes samples of shape {list(sample_shape)}, got {list(values.shape[1:])}"
        )
    outputs: list[np.ndarray] = []
    current: tuple[int, ...] | None = None
    for start in range(0, values.shape[0], batch_size):
        batch = np.ascontiguousarray(values[start : start + batch_size])
        if batch.shape != current:
            interpreter.resize_tensor_input(input_detail["index"], list(batch.shape))
            interpreter.allocate_tensors()
            current = batch.shape
        interpreter.set_tensor(input_detail["index"], batch)
        interpreter.invoke()
        outputs.append(np.array(interpreter.get_tensor(output_detail["index"])))
    return np.concatenate(outputs, axis=0)
