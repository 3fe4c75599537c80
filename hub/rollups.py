"""Hour buckets of the store's roll-ups.

The store keeps, per (model, version, role, device, hour), the merge of the windows
that start in that hour (see :mod:`hub.store`); the merge itself is the contract's
batch form, :func:`edge_agent.contract.window.merge_documents`. Pure functions: no I/O.
"""

from __future__ import annotations

#: Length of an hour bucket (seconds); a window belongs to the hour its start falls in.
HOUR_S = 3600


def hour_of(start: float) -> int:
    """The hour bucket of a window that starts at ``start`` (Unix seconds): the ``h``
    with ``h * HOUR_S <= start < (h + 1) * HOUR_S`` (Python's float floor division is
    exact, so this holds right at the boundaries too)."""
    return int(start // HOUR_S)
