"""A throw-away certificate authority and a server certificate for 127.0.0.1 (tests only):
the product's own :func:`hub.tls.make_tls`, which `edgefleet hub tls` runs."""

from __future__ import annotations

from pathlib import Path

from hub.tls import TlsFiles
from hub.tls import make_tls as _make_tls

__all__ = ["TlsFiles", "make_tls"]


def make_tls(directory: Path, host: str = "127.0.0.1") -> TlsFiles:
    """Write ``ca.crt``, ``ca.key``, ``server.crt`` and ``server.key`` under ``directory``."""
    return _make_tls(directory, [host])
