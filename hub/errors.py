"""The hub package's exceptions (all are :class:`edge_agent.errors.EdgeFleetError`).

Three kinds say what a caller did wrong in a way the API answers with its own status
(:mod:`hub.api.errors` maps them): :class:`NotFoundError` (404), :class:`ConflictError`
(409) and :class:`UnavailableError` (503). Every other :class:`EdgeFleetError` raised
while serving a request is the hub refusing what it was given (422).
"""

from __future__ import annotations

from edge_agent.errors import EdgeFleetError


class HubError(EdgeFleetError):
    """Base of the hub's own errors."""


class NotFoundError(HubError):
    """What the request names does not exist (a model version, a device, a rollout)."""


class ConflictError(HubError):
    """The request contradicts the hub's current state (a revoked device, an id in use,
    devices already in another rollout, a command the rollout's state forbids)."""


class UnavailableError(HubError):
    """A part of the hub the request needs is not running (store, registry, signer)."""


class KeyStoreError(HubError):
    """A private key cannot be created, read or used (permissions, passphrase, format)."""


class BuildError(HubError):
    """A bundle cannot be built from the given inputs (model, reference data, schema)."""
