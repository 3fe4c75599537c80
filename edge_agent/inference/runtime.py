"""One small interface over the two TFLite runtimes.

``ai-edge-litert`` (the maintained successor, NumPy 2) is preferred; ``tflite-runtime``
(CPython <= 3.11, NumPy 1.x) is the fallback. They cannot share one environment, so
each environment has exactly one of them; :func:`runtime_name` tells which.

Set ``EDGEFLEET_TFLITE_RUNTIME`` to ``ai-edge-litert`` or ``tflite-runtime`` to
insist on one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from functools import cache
from importlib import metadata
from typing import Any, Protocol

import numpy as np

from edge_agent.errors import ModelLoadError, RuntimeUnavailableError

_CANDIDATES: dict[str, str] = {
    "ai-edge-litert": "ai_edge_litert.interpreter",
    "tflite-runtime": "tflite_runtime.interpreter",
}


class Interpreter(Protocol):
    """The subset of ``tf.lite.Interpreter`` EdgeFleet uses (both runtimes provide it)."""

    def allocate_tensors(self) -> None: ...
    def get_input_details(self) -> list[dict[str, Any]]: ...
    def get_output_details(self) -> list[dict[str, Any]]: ...
    def get_tensor_details(self) -> list[dict[str, Any]]: ...
    def set_tensor(self, tensor_index: int, value: np.ndarray) -> None: ...
    def invoke(self) -> None: ...
    def get_tensor(self, tensor_index: int) -> np.ndarray: ...
    def resize_tensor_input(
        self, input_index: int, tensor_size: Any, strict: bool = False
    ) -> None: ...


#: How both runtimes say a model needs a builtin operator (version) they lack.
_MISSING_OP = re.compile(r"Didn't find op for builtin opcode '(\w+)' version '(\d+)'")


@cache
def _load() -> tuple[str, Callable[..., Interpreter]]:
    wanted = os.environ.get("EDGEFLEET_TFLITE_RUNTIME")
    names = [wanted] if wanted else list(_CANDIDATES)
    errors: list[str] = []
    for name in names:
        module_name = _CANDIDATES.get(name)
        if module_name is None:
            raise RuntimeUnavailableError(
                f"EDGEFLEET_TFLITE_RUNTIME={name!r} is not one of {sorted(_CANDIDATES)}"
            )
        try:
            module = __import__(module_name, fromlist=["Interpreter"])
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
            continue
        return name, module.Interpreter
    raise RuntimeUnavailableError(
        "no TFLite runtime importable ("
        + "; ".join(errors)
        + "): install edgefleet[agent] or edgefleet[agent-tflite]"
    )


def runtime_name() -> str:
    """Name of the runtime in use: ``ai-edge-litert`` or ``tflite-runtime``.

    Raises:
        RuntimeUnavailableError: neither runtime can be imported.
    """
    return _load()[0]


def open_interpreter(model: bytes, num_threads: int = 1) -> Interpreter:
    """Load a TFLite flatbuffer from memory and allocate its tensors.

    Raises:
        RuntimeUnavailableError: neither runtime can be imported.
        ModelLoadError: the runtime refused the model (not a flatbuffer, unsupported op...).
    """
    _, factory = _load()
    try:
        interpreter = factory(model_content=bytes(model), num_threads=num_threads)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        missing = _MISSING_OP.search(first_line)
        if missing is not None:
            op, version = missing.groups()
            raise ModelLoadError(
                f"{runtime_name()} {runtime_version()} lacks operator {op} version {version}, "
                "which this model needs (converted for a newer TFLite runtime): "
                "upgrade the device's runtime or convert the model for it"
            ) from exc
        raise ModelLoadError(f"the TFLite runtime refused the model: {first_line}") from exc
    return interpreter


def runtime_version() -> str:
    """The installed version of the runtime in use (``"unknown"`` when its distribution
    has no metadata).

    Raises:
        RuntimeUnavailableError: neither runtime can be imported.
    """
    try:
        return metadata.version(runtime_name())
    except metadata.PackageNotFoundError:
        return "unknown"
