"""The demo's data directory: a format marker, a run counter and a lock.

``edgefleet demo --data DIR`` keeps the hub, the fleet and the models in ``DIR`` between
runs. ``DIR`` must be empty, missing, or made by this demo version (its marker file
says so); anything else is refused in one line, so the demo never writes into a
directory it does not own. While a demo runs it holds an exclusive ``flock`` on
``DIR/demo.lock``: a second demo on the same directory is refused (the kernel drops
the lock when the process ends, however it ends).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

from edge_agent.durable import write_atomic
from hub.errors import HubError

MARKER: Final = "edgefleet-demo.json"
FORMAT: Final = "edgefleet-demo/1"
LOCK: Final = "demo.lock"


class DemoDirError(HubError):
    """The data directory cannot be used by this demo (one line says why)."""


@dataclass
class WorkDir:
    """An opened, locked demo directory. :meth:`close` releases the lock."""

    path: Path
    run: int  # 1 for the directory's first run
    _lock: IO[bytes]

    @property
    def fresh(self) -> bool:
        """Whether this is the directory's first run."""
        return self.run == 1

    def close(self) -> None:
        """Release the lock (idempotent)."""
        if not self._lock.closed:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()


def _read_marker(path: Path) -> dict[str, object]:
    marker = path / MARKER
    try:
        doc = json.loads(marker.read_bytes())
    except (OSError, ValueError) as exc:
        raise DemoDirError(
            f"{path}: its {MARKER} cannot be read ({exc}); use another --data"
        ) from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else None
        raise DemoDirError(
            f"{path} was made by another EdgeFleet demo version (format {found!r}, this "
            f"demo writes {FORMAT!r}); use another --data or remove it"
        )
    return doc


def open_workdir(path: Path) -> WorkDir:
    """Check, lock and count a run of the demo directory ``path`` (created if missing).

    Raises:
        DemoDirError: ``path`` is a file, a non-empty directory without the demo's
            marker, a demo directory of another format, or locked by a running demo.
    """
    if path.exists() and not path.is_dir():
        raise DemoDirError(f"{path} is not a directory")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    has_marker = (path / MARKER).exists()
    if not has_marker and any(p.name != LOCK for p in path.iterdir()):
        raise DemoDirError(
            f"{path} is not an EdgeFleet demo directory (no {MARKER}, not empty); "
            "give an empty or new directory"
        )
    lock = (path / LOCK).open("a+b")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().decode(errors="replace").strip() or "?"
        lock.close()
        raise DemoDirError(
            f"another edgefleet demo (pid {holder}) is running on {path}; stop it first"
        ) from None
    try:
        doc = _read_marker(path) if has_marker else {"format": FORMAT, "runs": 0}
        runs = doc.get("runs")
        run = (runs if isinstance(runs, int) and runs >= 0 else 0) + 1
        write_atomic(path / MARKER, json.dumps({"format": FORMAT, "runs": run}).encode(), 0o600)
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()).encode())
        lock.flush()
    except BaseException:
        with contextlib.suppress(OSError):
            fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()
        raise
    return WorkDir(path, run, lock)
