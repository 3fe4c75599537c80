"""Crash-safe small files: write to a temp file, fsync, rename, fsync the directory.

A reader sees either the old content or the new, never a mix, whatever instant the
process is killed at.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from pathlib import Path
from typing import Any

from edge_agent.contract.canonical import canonical_bytes, parse_json

#: What a file system that cannot fsync a directory answers (the rename is still atomic).
_CANNOT_FSYNC_DIR = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EACCES})


def fsync_dir(directory: Path) -> None:
    """Make a rename or create in ``directory`` durable.

    A file system that cannot fsync a directory (and Windows) is accepted: the rename is
    atomic there anyway, only its durability across a power cut is the file system's.

    Raises:
        OSError: any other failure (the directory is gone, an I/O error).
    """
    if sys.platform == "win32":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError as exc:
        if exc.errno in _CANNOT_FSYNC_DIR:
            return
        raise
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _CANNOT_FSYNC_DIR:
            raise
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically and durably.

    Raises:
        OSError: it cannot be written (the old content stays in place).
    """
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def write_json_atomic(path: Path, document: Any, mode: int = 0o600) -> None:
    """Write canonical JSON atomically (see :func:`write_atomic`).

    Raises:
        OSError: it cannot be written.
        ValidationError: the document cannot be serialised.
    """
    write_atomic(path, canonical_bytes(document), mode)


def read_json(path: Path, default: Any = None) -> Any:
    """Read a JSON file written by :func:`write_json_atomic`; ``default`` if absent.

    Raises:
        ValidationError: the file is not valid JSON.
        OSError: it exists but cannot be read.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return default
    return parse_json(data, str(path))
