"""The hub package's exceptions (all are :class:`edge_agent.errors.EdgeFleetError`)."""

from __future__ import annotations

from edge_agent.errors import EdgeFleetError


class HubError(EdgeFleetError):
    """Base of the hub's own errors."""


class KeyStoreError(HubError):
    """A private key cannot be created, read or used (permissions, passphrase, format)."""


class BuildError(HubError):
    """A bundle cannot be built from the given inputs (model, reference data, schema)."""
