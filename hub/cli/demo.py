"""``edgefleet demo``: what ``make demo`` runs (its logic lives in :mod:`hub.demo`)."""

from __future__ import annotations

from hub.demo.cli import demo

__all__ = ["demo"]
