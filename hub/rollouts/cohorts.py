"""Stable cohorts: a device's place in a rollout comes from a hash of its id and the
rollout's (:func:`stage_of`), so stages nest and survive restarts, and devices enrolled
later join by the same rule; two active rollouts may not share a device."""

from __future__ import annotations

import hashlib

from hub.rollouts.spec import Fleet, RolloutSpec

# ---------------------------------------------------------------------------- cohorts


def stage_of(device_id: str, rollout_id: str) -> float:
    """The device's stable position in [0, 1) for this rollout (SHA-256 based)."""
    digest = hashlib.sha256(f"{rollout_id}\x00{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / float(1 << 64)


def selected(spec: RolloutSpec, devices: Fleet) -> list[str]:
    """The devices ``spec``'s selector matches, sorted by id."""
    return sorted(d for d, tags in devices.items() if spec.selector.matches(d, tags))


def cohort(spec: RolloutSpec, stage_index: int, devices: Fleet) -> list[str]:
    """Devices in stage ``stage_index``'s cohort, sorted by id; cohorts nest.

    A share stage holds the selected devices whose :func:`stage_of` is below its share;
    a count stage the N selected devices with the lowest hashes; each stage also holds
    the cohorts before it. A share stage always holds the lowest-hash selected device,
    so a canary is never empty (the nesting is kept: that device is in every cohort).

    Raises:
        IndexError: no such stage.
    """
    stage = spec.stages[stage_index]
    pool = selected(spec, devices)
    members: set[str] = set(cohort(spec, stage_index - 1, devices)) if stage_index > 0 else set()
    ranked = sorted(pool, key=lambda d: (stage_of(d, spec.id), d))
    if stage.share is not None:
        members.update(d for d in pool if stage_of(d, spec.id) < stage.share)
        members.update(ranked[:1])  # a small fleet's canary is never empty
    else:
        members.update(ranked[: stage.count])
    return sorted(members)
