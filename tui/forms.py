"""The rollout form's checks (pure, tested alone): the text an operator typed becomes
a :class:`~edgefleet_client.RolloutDraft`, or one message per bad field, each saying
what is wrong and what is expected — before anything is sent to the hub."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from edgefleet_client import RolloutDraft

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_TAG_RE = re.compile(r"^[^\s,]{1,128}$")


@dataclass(frozen=True)
class RolloutFields:
    """The form's fields as typed (``version`` is the picked ``(model, version)``)."""

    id: str = ""
    version: tuple[str, int] | None = None
    previous: str = ""
    tags: str = ""
    stages: str = "10,50,100"
    bake: str = "300"
    success: str = "95"
    failure: str = "5"
    max_psi: str = "0.25"
    on_failure: Literal["pause", "rollback"] = "pause"
    manual: bool = False


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _percent(text: str, errors: dict[str, str], key: str) -> float:
    value = _number(text.strip())
    if value is None or not 0 <= value <= 100:
        errors[key] = f"{text.strip() or 'empty'}: a percentage from 0 to 100"
        return 0.0
    return value / 100


def check_rollout(f: RolloutFields) -> tuple[RolloutDraft | None, dict[str, str]]:
    """The draft the fields describe, or None and a message per bad field (keys: the
    field names of :class:`RolloutFields`)."""
    errors: dict[str, str] = {}
    rid = f.id.strip()
    if not rid:
        errors["id"] = "give the rollout an id, e.g. pump-v2"
    elif not _ID_RE.match(rid):
        errors["id"] = "letters, digits, '.', '_', '-' (up to 128), first a letter or digit"
    if f.version is None:
        errors["version"] = "pick the model version to roll out"
    previous: int | None = None
    if f.previous.strip():
        text = f.previous.strip().removeprefix("v")
        if not text.isdigit() or int(text) < 1:
            errors["previous"] = f"{f.previous.strip()}: a version number >= 1, or empty"
        else:
            previous = int(text)
            if f.version is not None and previous == f.version[1]:
                errors["previous"] = "the version to roll back to must differ from the target"
    tags = tuple(t for t in re.split(r"[\s,]+", f.tags.strip()) if t)
    bad = [t for t in tags if not _TAG_RE.match(t)]
    if bad:
        errors["tags"] = f"{bad[0]!r}: tags are words without spaces or commas"
    shares: list[float] = []
    words = [w.strip().removesuffix("%") for w in f.stages.split(",") if w.strip()]
    for w in words:
        value = _number(w)
        if value is None or not 0 < value <= 100:
            errors["stages"] = f"{w!r}: each stage is a percentage above 0, at most 100"
            break
        shares.append(value / 100)
    if "stages" not in errors:
        if not shares:
            errors["stages"] = "give at least one stage, e.g. 10,50,100"
        elif shares != sorted(shares):
            errors["stages"] = "stages are cumulative: each at least the one before"
    bake = _number(f.bake.strip())
    if bake is None or bake < 0:
        errors["bake"] = f"{f.bake.strip() or 'empty'}: seconds per stage, 0 or more"
    success = _percent(f.success, errors, "success")
    failure = _percent(f.failure, errors, "failure")
    max_psi: float | None = None
    if f.max_psi.strip():
        max_psi = _number(f.max_psi.strip())
        if max_psi is None or max_psi <= 0:
            errors["max_psi"] = f"{f.max_psi.strip()}: a PSI above 0 (empty: no drift gate)"
    if errors or f.version is None or bake is None:
        return None, errors
    draft = RolloutDraft(
        id=rid,
        model=f.version[0],
        version=f.version[1],
        previous=previous,
        tags=tags,
        stages=tuple(shares),
        bake_s=bake,
        min_success_share=success,
        max_failure_share=failure,
        max_psi=max_psi,
        on_failure=f.on_failure,
        manual=f.manual,
    )
    return draft, {}


def describe(d: RolloutDraft) -> str:
    """The draft in a few lines, for the confirmation."""
    stages = ", ".join(f"{s * 100:g}%" for s in d.stages)
    gates = [
        f"success ≥ {d.min_success_share * 100:g}%",
        f"failure ≤ {d.max_failure_share * 100:g}%",
    ]
    gates.append("no drift gate" if d.max_psi is None else f"PSI < {d.max_psi:g}")
    if d.previous is not None:
        gates.append("p95 latency ≤ 1.5 x previous")
    return (
        f"{d.id}: {d.model} v{d.previous or '-'} → v{d.version}\n"
        f"devices: {' '.join(f'tag:{t}' for t in d.tags) or 'every device'}\n"
        f"stages {stages}, {d.bake_s:g} s each; "
        f"{'manual' if d.manual else 'automatic'} promotion\n"
        f"gates: {', '.join(gates)}\n"
        f"on a failed gate: {d.on_failure}"
    )
