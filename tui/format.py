"""Pure formatting for the views (times, sizes, bars); tested without a terminal."""

from __future__ import annotations

import re

from edgefleet_client import ModelRef

#: The colour of a drift verdict, in the Drift view and the Fleet's drift column.
VERDICT_STYLE = {"none": "green", "minor": "yellow", "drift": "red", "major": "red b"}
#: Drift verdicts from least to most worrying (a sort key); a device with none sorts first.
VERDICT_RANK = {"insufficient": 0, "none": 1, "minor": 2, "drift": 3, "major": 4}


def ago(ts: float | None, now: float) -> str:
    """``12s``, ``5m``, ``3h``, ``2d`` since ``ts`` (``-`` when never)."""
    if ts is None:
        return "-"
    s = max(0.0, now - ts)
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if s >= size:
            return f"{int(s // size)}{unit}"
    return f"{int(s)}s"


def size(n: int | None) -> str:
    """A byte count in KiB/MiB/GiB (``-`` when unknown)."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "K", "M", "G"):
        if value < 1024 or unit == "G":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}T"  # pragma: no cover (unreachable)


def ref(m: ModelRef | None) -> str:
    """``pump:v2`` (``-`` when none)."""
    return m.label if m is not None else "-"


def bar(fraction: float, width: int = 10) -> str:
    """A text progress bar, ``███░░ 60%``."""
    f = min(1.0, max(0.0, fraction))
    full = round(f * width)
    return "█" * full + "░" * (width - full) + f" {f * 100:3.0f}%"


def number(value: float | None, digits: int = 3) -> str:
    """A gate value or limit (``-`` when not measured / not set)."""
    if value is None:
        return "-"
    return f"{value:.{digits}g}"


#: Hex runs this long or longer are digests or token ids.
_HEX_RUN = re.compile(r"[0-9a-f]{8,}")


def masked(text: str) -> str:
    """``text`` with every digit and hex run replaced by ``·`` (its width kept)."""
    return re.sub(r"[0-9]", "·", _HEX_RUN.sub(lambda m: "·" * len(m.group()), text))


def mask_ids(text: str) -> str:
    """``text`` with hex runs of 8 or more (digests, token ids) replaced by ``·``, and
    an absolute path (the hub's data directory) shortened to ``…/<its last part>``."""
    if text.startswith("/"):
        text = "…/" + text.rstrip("/").rpartition("/")[2]
    return _HEX_RUN.sub(lambda m: "·" * len(m.group()), text)
