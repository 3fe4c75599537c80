"""The model kit's exceptions, under :class:`hub.errors.HubError`; one line of text each."""

from __future__ import annotations

from hub.errors import HubError


class ModelKitError(HubError):
    """Base of every error the model kit raises on purpose."""


class InvalidDataError(ModelKitError):
    """An argument (array, label vector, size, option) cannot be used as given."""


class QuantizationError(ModelKitError):
    """A network cannot be quantized to int8 with the representative data given."""
