"""The agent package's exceptions: one hierarchy, one line of text each.

Every error says what was wrong and, where it helps, what to do about it. Callers
catch :class:`EdgeFleetError` to handle any of them.
"""

from __future__ import annotations


class EdgeFleetError(Exception):
    """Base of every error raised on purpose by EdgeFleet code."""


class ValidationError(EdgeFleetError):
    """A document (manifest, trust file, message) does not match its schema."""


class TrustError(EdgeFleetError):
    """Keys or signatures do not establish trust (unknown key, bad or too few signatures)."""


class BundleError(EdgeFleetError):
    """A bundle file is malformed, unsafe, tampered with or otherwise unusable."""


class RuntimeUnavailableError(EdgeFleetError):
    """No TFLite runtime (ai-edge-litert or tflite-runtime) can be imported."""


class ModelLoadError(EdgeFleetError):
    """The TFLite runtime refused to load a model."""


class DownloadError(EdgeFleetError):
    """A bundle download failed (transport error, wrong size, endless data, bad digest)."""


class OutboxError(EdgeFleetError):
    """The offline metrics outbox cannot store or return a window."""


class DirectiveError(EdgeFleetError):
    """A desired-state directive is refused (bad signature, replay, expired, downgrade...)."""


class ActivationError(EdgeFleetError):
    """A verified bundle could not be made the active model (load, smoke test, switch)."""


class PredictionError(EdgeFleetError):
    """A prediction request is invalid (shape, dtype, NaN per schema) or the model failed."""
