"""Smoke-test samples a bundle ships: inputs and the outputs the hub observed for them.

Before a device activates a model it runs these inputs and compares the outputs
within ``atol`` (absolute, in the output tensor's own units: quantization steps for
an int8 output).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_agent.contract.fields import exact_fields, field
from edge_agent.errors import ValidationError


@dataclass(frozen=True)
class SmokeSamples:
    """Inputs (batch first) and expected outputs, as nested lists of numbers."""

    inputs: np.ndarray
    expected: np.ndarray
    atol: float

    def to_json(self) -> dict[str, Any]:
        """Return the JSON document."""
        return {
            "inputs": self.inputs.tolist(),
            "expected": self.expected.tolist(),
            "atol": self.atol,
        }

    @classmethod
    def from_json(cls, value: Any, where: str = "samples") -> SmokeSamples:
        """Parse and check the document.

        Raises:
            ValidationError: malformed, ragged, non-numeric, or batch sizes differ.
        """
        obj = exact_fields(value, where, {"inputs", "expected", "atol"})
        arrays = []
        for key in ("inputs", "expected"):
            try:
                arr = np.asarray(field(obj, key, list, where), dtype=np.float64)
            except (ValueError, TypeError) as exc:
                raise ValidationError(f"{where}.{key}: not a rectangular array of numbers") from exc
            if arr.ndim < 2 or arr.shape[0] == 0 or not np.all(np.isfinite(arr)):
                raise ValidationError(f"{where}.{key}: need a non-empty batch of finite numbers")
            arrays.append(arr)
        if arrays[0].shape[0] != arrays[1].shape[0]:
            raise ValidationError(f"{where}: inputs and expected have different batch sizes")
        atol = field(obj, "atol", float, where)
        if not atol >= 0:
            raise ValidationError(f"{where}.atol must be >= 0")
        return cls(arrays[0], arrays[1], atol)
