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
    #: The schema's output kind (see :mod:`edge_agent.contract.input_schema`).
    kind: str = "classification"

    def to_json(self) -> dict[str, Any]:
        """JSON for the local API: outputs and the model version, with per row the top-1
        class (``classes``, a classifier), the labels at or above 0.5 (``positive``,
        multi-label) or nothing more (regression, score); a row with an error has null
        output (and class), and ``errors`` says why."""
        doc: dict[str, Any] = {"outputs": self.outputs.tolist(), "model": self.model.to_json()}
        per_row: str | None = None
        if self.kind == "classification":
            top = np.argmax(self.outputs, axis=1)
            per_row = "classes"
            doc[per_row] = [self.labels[i] if i < len(self.labels) else int(i) for i in top]
        elif self.kind == "multilabel":
            per_row = "positive"
            doc[per_row] = [
                [self.labels[i] if i < len(self.labels) else i for i in np.flatnonzero(r >= 0.5)]
                for r in self.outputs
            ]
        if self.errors:
            for e in self.errors:
                doc["outputs"][e.row] = None
                if per_row is not None:
                    doc[per_row][e.row] = None
            doc["errors"] = [e.to_json() for e in self.errors]
        return doc
