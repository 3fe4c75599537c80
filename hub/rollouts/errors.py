"""What the rollout code raises: one hierarchy under :class:`RolloutError`, each
also under the hub's generic kind (conflict, not found, unavailable) the API maps to a
status."""

from __future__ import annotations

from hub.errors import ConflictError, HubError, NotFoundError, UnavailableError


class RolloutError(HubError):
    """A rollout command is illegal in the rollout's state, or a rollout conflicts."""


class RolloutConflictError(RolloutError, ConflictError):
    """The rollout clashes with the hub's state: its devices are already in another
    active rollout of the model, its id is in use, or another writer saved it first
    (optimistic version mismatch)."""


class RolloutStateError(RolloutError, ConflictError):
    """A command the rollout's state forbids (resume a running one, roll back a draft)."""


class RolloutNotFoundError(RolloutError, NotFoundError):
    """No rollout has the id."""


class RolloutStoreError(RolloutError, UnavailableError):
    """The rollouts table cannot be opened, read or written."""
