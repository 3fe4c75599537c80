"""The model kit's exceptions: one hierarchy under :class:`EdgeFleetError`, one line each."""

from __future__ import annotations

from edge_agent.errors import EdgeFleetError


class ModelKitError(EdgeFleetError):
    """Base of every error the model kit raises on purpose."""


class InvalidDataError(ModelKitError):
    """An argument (array, label vector, size, option) cannot be used as given."""


class QuantizationError(ModelKitError):
    """A network cannot be quantized to int8 with the representative data given."""
