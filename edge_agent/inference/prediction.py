"""What a prediction returns: the outputs of a batch with their labels and model, and
why any row got none."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from edge_agent.contract.messages import ModelVersion


class RowError(NamedTuple):
    """Why one row of a batch got no output: ``kind`` is the error counted in the
    window (``invalid_input`` or ``nan_output``), ``message`` the one-line reason."""

    row: int
    kind: str
    message: str

    def to_json(self) -> dict[str, Any]:
        """JSON for the local API."""
        return {"row": self.row, "kind": self.kind, "error": self.message}


class Prediction(NamedTuple):
    """Outputs for a batch, with the labels and the model that produced them.

    ``errors`` lists the rows of a batch that were refused (``invalid_input``) or whose
    output was NaN or infinite (``nan_output``); their rows of ``outputs`` are NaN. The
    other rows were served. (A NamedTuple: built on every prediction, and cheaper than a
    frozen dataclass; the native path builds it too, with no errors.)
    """

    outputs: np.ndarray
    labels: tuple[str, ...]
    model: ModelVersion
    errors: tuple[RowError, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """JSON for the local API: outputs, top-1 class per row and the model version;
        a row with an error has null output and class, and ``errors`` says why."""
        top = np.argmax(self.outputs, axis=1)
        doc: dict[str, Any] = {
            "outputs": self.outputs.tolist(),
            "classes": [self.labels[i] if i < len(self.labels) else int(i) for i in top],
            "model": self.model.to_json(),
        }
        if self.errors:
            for e in self.errors:
                doc["outputs"][e.row] = None
                doc["classes"][e.row] = None
            doc["errors"] = [e.to_json() for e in self.errors]
        return doc
