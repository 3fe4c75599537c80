"""The model registry: verified, signed bundles by model name and version.

Rows live in ``hub.db``, in the ``models`` and ``model_versions`` tables of
:mod:`hub.db.schema`.

Bundles are stored content-addressed as ``bundle_dir/<sha256>.efb``: mode 0644 in a
0755 directory, because a bundle is public by design (its signature, not secrecy,
is what devices trust, and the HTTP API serves it to any device). A file is written
to a temp file in ``bundle_dir``, fsynced, verified, then hard-linked into place (an
atomic create that, unlike a rename, never replaces an existing ``<sha256>.efb``) and
the temp name removed. The file is
placed before its row is inserted, so a crash in between leaves an orphan file only,
which is harmless and re-used by the next upload of the same bundle.

Versions are monotonic per model name: an upload must be above the highest version
registered for its name, unless it is the very same bundle (same SHA-256), which is
idempotent.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.contract.bundle import BundleLimits, inspect_bundle, verify_bundle
from edge_agent.contract.canonical import canonical_bytes
from edge_agent.contract.fields import safe_name
from edge_agent.contract.input_schema import InputSchema
from edge_agent.contract.manifest import MODEL, Manifest, TensorSpec
from edge_agent.contract.reference import ReferenceStats
from edge_agent.contract.trust import TrustRoot
from edge_agent.durable import fsync_dir
from edge_agent.errors import EdgeFleetError, ValidationError
from edge_agent.inference.model import LoadedModel
from hub.bundler import ReferenceData, build_bundle
from hub.db import open_database
from hub.errors import HubError
from hub.sqlite import LockedDatabase

#: Default upper bound on an uploaded bundle's size (checked before reading it all).
DEFAULT_MAX_BUNDLE_BYTES: Final = 512 << 20
BUNDLE_SUFFIX: Final = ".efb"
_CHUNK: Final = 1 << 20
_SHA256: Final = re.compile(r"[0-9a-f]{64}")
#: How often :meth:`Registry.push_model` rebuilds when another process took its version.
_PUSH_ATTEMPTS: Final = 3


class RegistryError(HubError):
    """A bundle or request is refused by the registry, or its storage failed (one line)."""


class Status(StrEnum):
    """Lifecycle of a registered model version."""

    REGISTERED = "registered"
    ACTIVE = "active"
    RETIRED = "retired"


@dataclass(frozen=True)
class ModelRecord:
    """A model name in the registry."""

    name: str
    created: float
    description: str
    latest_version: int | None


@dataclass(frozen=True)
class RegisteredVersion:
    """One registered bundle (not :class:`edge_agent.contract.messages.ModelVersion`, a
    mere pair)."""

    name: str
    version: int
    sha256: str
    size: int
    created: float
    status: Status
    manifest: Manifest
    quantization: str
    """``"int8"`` when any tensor of the model is 8-bit integer, else ``"float"``."""

    @property
    def lineage(self) -> dict[str, Any]:
        """Free-form lineage from the manifest."""
        return self.manifest.lineage

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """The model's input tensors."""
        return self.manifest.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        """The model's output tensors."""
        return self.manifest.outputs

    @property
    def file_name(self) -> str:
        """The bundle's file name in the bundle directory."""
        return f"{self.sha256}{BUNDLE_SUFFIX}"


class Registry(LockedDatabase):
    """Registered model versions and their bundle files. Thread-safe.

    Every method that touches the database raises :class:`RegistryError` when SQLite
    fails, and after :meth:`close`.
    """

    def __init__(
        self,
        db_path: Path,
        bundle_dir: Path,
        trust: TrustRoot,
        signing_keys: Sequence[Ed25519PrivateKey] = (),
        *,
        max_bundle_bytes: int = DEFAULT_MAX_BUNDLE_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Open (or create) the registry tables in ``db_path`` and the bundle directory.

        Raises:
            RegistryError: the database cannot be opened or migrated, or the bundle
                directory cannot be created.
        """
        self.db_path = db_path
        self.bundle_dir = bundle_dir
        self.trust = trust
        self.max_bundle_bytes = max_bundle_bytes
        self._keys = tuple(signing_keys)
        self._clock = clock
        super().__init__()
        self._error = RegistryError
        self._label = f"registry {db_path}"
        self._push_locks: dict[str, threading.Lock] = {}
        self._reference_cache: dict[str, ReferenceStats] = {}
        try:
            bundle_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        except OSError as exc:
            raise RegistryError(f"registry {bundle_dir}: cannot create ({exc})") from exc
        self._conn = open_database(db_path, label=f"registry {db_path}", error=RegistryError)

    # --- adding -----------------------------------------------------------------------

    def add_bundle(self, source: Path | bytes | IO[bytes]) -> RegisteredVersion:
        """Verify a bundle against the trust root and register it.

        ``source`` is a file, the bundle's bytes, or a binary stream. Its size is
        checked against ``max_bundle_bytes`` before it is read whole (from the file's
        size, or while reading the stream). Uploading the same bundle again returns the
        existing record. Reads and writes files in ``bundle_dir`` and the database.

        Raises:
            RegistryError: too large, unreadable, not verified by the trust root, its
                model does not load, or its version is not above the highest
                registered for its name; nothing is stored then. Also when the
                bundle cannot be stored (disk, SQLite) or the registry is closed.
        """
        label = source.name if isinstance(source, Path) else "upload"
        tmp = self._spool(source, label)
        return self._ingest(tmp, label)

    def push_model(
        self,
        model_bytes: bytes,
        *,
        name: str,
        version: int | None = None,
        reference: ReferenceData,
        schema: InputSchema | None = None,
        lineage: dict[str, Any] | None = None,
    ) -> RegisteredVersion:
        """Build a bundle signed with the registry's signing keys, and register it.

        ``version`` None takes the next version of ``name`` (1 for a new name);
        pushes of one name are serialised within this process, and a version taken
        meanwhile by another process is retried with the next one.

        Raises:
            RegistryError: no signing keys are configured, ``name`` is not a safe
                name, ``version`` is not a positive integer, or as :meth:`add_bundle`
                (keys that do not satisfy the trust root; :class:`DowngradeError` for
                a ``version`` not above the highest registered).
            BuildError: the model, reference data or schema do not fit together.
        """
        if not self._keys:
            raise RegistryError("push: no signing keys configured; this hub cannot sign bundles")
        try:
            safe_name(name, "push: model name")
        except ValidationError as exc:
            raise RegistryError(str(exc)) from exc
        with self._push_lock(name):
            for attempt in range(_PUSH_ATTEMPTS):
                v = version if version is not None else self._next_version(name)
                fd, tmp_name = tempfile.mkstemp(
                    dir=self.bundle_dir, prefix=".build-", suffix=".tmp"
                )
                os.close(fd)
                tmp = Path(tmp_name)
                try:
                    build_bundle(
                        model_bytes,
                        name=name,
                        version=v,
                        reference=reference,
                        keys=self._keys,
                        out=tmp,
                        schema=schema,
                        lineage=lineage,
                    )
                except ValidationError as exc:
                    tmp.unlink(missing_ok=True)
                    raise RegistryError(f"push {name} v{v}: {exc}") from exc
                except BaseException:
                    tmp.unlink(missing_ok=True)
                    raise
                try:
                    return self._ingest(tmp, f"{name} v{v}")
                except DowngradeError:
                    if version is not None or attempt == _PUSH_ATTEMPTS - 1:
                        raise
        raise AssertionError("unreachable")  # pragma: no cover

    # --- reading ----------------------------------------------------------------------

    def get(self, name: str, version: int) -> RegisteredVersion | None:
        """The registered version, or None (also for names that could never be valid).

        Only reads the database: no name reaches the file system.

        Raises:
            RegistryError: SQLite failed, a stored row is invalid, or closed.
        """
        with self._read() as conn:
            row = conn.execute(
                f"{_SELECT_VERSION} WHERE name = ? AND version = ?", (name, version)
            ).fetchone()
        return None if row is None else self._version(row)

    def latest(self, name: str) -> RegisteredVersion | None:
        """The highest registered version of ``name`` (whatever its status), or None.

        Raises:
            RegistryError: SQLite failed, a stored row is invalid, or closed.
        """
        with self._read() as conn:
            row = conn.execute(
                f"{_SELECT_VERSION} WHERE name = ? ORDER BY version DESC LIMIT 1", (name,)
            ).fetchone()
        return None if row is None else self._version(row)

    def list_models(self) -> list[ModelRecord]:
        """Every model name, in name order.

        Raises:
            RegistryError: SQLite failed, or closed.
        """
        with self._read() as conn:
            rows = conn.execute(
                "SELECT m.name, m.created, m.description,"
                " (SELECT MAX(version) FROM model_versions v WHERE v.name = m.name)"
                " FROM models m ORDER BY m.name"
            ).fetchall()
        return [
            ModelRecord(str(r[0]), float(r[1]), str(r[2]), None if r[3] is None else int(r[3]))
            for r in rows
        ]

    def list_versions(self, name: str) -> list[RegisteredVersion]:
        """The versions of ``name``, lowest first (empty for an unknown name).

        Raises:
            RegistryError: SQLite failed, a stored row is invalid, or closed.
        """
        with self._read() as conn:
            rows = conn.execute(
                f"{_SELECT_VERSION} WHERE name = ? ORDER BY version", (name,)
            ).fetchall()
        return [self._version(r) for r in rows]

    def bundle_path(self, sha256: str) -> Path | None:
        """Where the registered bundle with this SHA-256 is stored, or None if unregistered.

        Raises:
            RegistryError: ``sha256`` is not 64 lowercase hex digits (so no path
                outside ``bundle_dir`` can ever be formed), SQLite failed, or closed.
        """
        if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
            raise RegistryError(f"bundle: {sha256!r} is not a SHA-256 (64 lowercase hex digits)")
        with self._read() as conn:
            row = conn.execute(
                "SELECT 1 FROM model_versions WHERE sha256 = ?", (sha256,)
            ).fetchone()
        return None if row is None else self._file(sha256)

    def set_status(self, name: str, version: int, status: Status | str) -> RegisteredVersion:
        """Set a version's status; returns the updated record.

        Raises:
            RegistryError: unknown status, no such version, SQLite failed, or closed.
        """
        try:
            new = Status(status)
        except ValueError as exc:
            raise RegistryError(
                f"status {status!r} is not one of {', '.join(s.value for s in Status)}"
            ) from exc
        with self._write("set status") as conn:
            cur = conn.execute(
                "UPDATE model_versions SET status = ? WHERE name = ? AND version = ?",
                (new.value, name, version),
            )
            if cur.rowcount == 0:
                raise RegistryError(f"{name!r} v{version} is not registered")
        record = self.get(name, version)
        if record is None:  # pragma: no cover - deleted concurrently; nothing deletes rows
            raise RegistryError(f"{name!r} v{version} is not registered")
        return record

    def reference(self, name: str, version: int) -> ReferenceStats:
        """The version's drift reference statistics, read from its stored bundle.

        The file is checked against its registered SHA-256 first (a file changed on
        disk is refused), then parsed; results are cached per bundle.

        Raises:
            RegistryError: no such version, its file is missing or changed, SQLite
                failed, or closed.
        """
        record = self.get(name, version)
        if record is None:
            raise RegistryError(f"{name!r} v{version} is not registered")
        cached = self._reference_cache.get(record.sha256)
        if cached is not None:
            return cached
        path = self._file(record.sha256)
        try:
            with path.open("rb") as f:
                digest = _sha256_of(f)
            if digest != record.sha256:
                raise RegistryError(f"{path.name}: file changed on disk (SHA-256 differs)")
            stats = inspect_bundle(path, self._limits()).reference()
        except OSError as exc:
            raise RegistryError(f"{path.name}: cannot read ({exc.strerror})") from exc
        except EdgeFleetError as exc:
            if isinstance(exc, RegistryError):
                raise
            raise RegistryError(str(exc)) from exc
        self._reference_cache[record.sha256] = stats
        return stats

    # --- internals --------------------------------------------------------------------

    def _limits(self) -> BundleLimits:
        return BundleLimits(max_bundle_bytes=self.max_bundle_bytes)

    def _file(self, sha256: str) -> Path:
        return self.bundle_dir / f"{sha256}{BUNDLE_SUFFIX}"

    def _push_lock(self, name: str) -> threading.Lock:
        with self._lock:
            return self._push_locks.setdefault(name, threading.Lock())

    def _next_version(self, name: str) -> int:
        with self._read() as conn:
            row = conn.execute(
                "SELECT MAX(version) FROM model_versions WHERE name = ?", (name,)
            ).fetchone()
        return 1 if row[0] is None else int(row[0]) + 1

    def _spool(self, source: Path | bytes | IO[bytes], label: str) -> Path:
        """Copy the upload to a temp file in ``bundle_dir`` (0644, fsynced), bounded.

        Raises:
            RegistryError: over ``max_bundle_bytes``, or unreadable/unwritable.
        """
        limit = self.max_bundle_bytes
        try:
            if isinstance(source, Path):
                size = source.stat().st_size
                if size > limit:
                    raise RegistryError(f"{label}: {size} bytes is over the {limit}-byte limit")
                with source.open("rb") as f:
                    return self._copy(f, label)
            if isinstance(source, bytes | bytearray | memoryview):
                if len(source) > limit:
                    raise RegistryError(
                        f"{label}: {len(source)} bytes is over the {limit}-byte limit"
                    )
                return self._copy(io.BytesIO(source), label)
            return self._copy(source, label)
        except OSError as exc:
            raise RegistryError(f"{label}: cannot read or store ({exc})") from exc

    def _copy(self, stream: IO[bytes], label: str) -> Path:
        fd, tmp_name = tempfile.mkstemp(dir=self.bundle_dir, prefix=".upload-", suffix=".tmp")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                os.fchmod(out.fileno(), 0o644)
                total = 0
                while chunk := stream.read(_CHUNK):
                    total += len(chunk)
                    if total > self.max_bundle_bytes:
                        raise RegistryError(f"{label}: over the {self.max_bundle_bytes}-byte limit")
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    def _ingest(self, tmp: Path, label: str) -> RegisteredVersion:
        """Verify the temp file ``tmp`` (owned: always moved or removed) and register it.

        Raises:
            DowngradeError: the version is not above the highest registered.
            RegistryError: as :meth:`add_bundle`.
        """
        try:
            manifest, sha256, size, quantization = self._verify(tmp, label)
            with self._write("register bundle") as conn:
                row = conn.execute(f"{_SELECT_VERSION} WHERE sha256 = ?", (sha256,)).fetchone()
                if row is not None:
                    return self._version(row)  # the same bundle again: idempotent
                highest = conn.execute(
                    "SELECT MAX(version) FROM model_versions WHERE name = ?", (manifest.name,)
                ).fetchone()[0]
                if highest is not None and manifest.version <= int(highest):
                    raise DowngradeError(
                        f"{label}: {manifest.name} v{manifest.version} refused: versions must "
                        f"rise, and v{highest} is already registered"
                    )
                self._place(tmp, sha256)  # file first, then row
                now = self._clock()
                conn.execute(
                    "INSERT OR IGNORE INTO models (name, created, description) VALUES (?, ?, ?)",
                    (manifest.name, now, _description(manifest)),
                )
                conn.execute(
                    "INSERT INTO model_versions (name, version, sha256, size, created,"
                    " manifest, lineage, inputs, outputs, quantization, status)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        manifest.name,
                        manifest.version,
                        sha256,
                        size,
                        now,
                        manifest.to_bytes().decode(),
                        _json_text(manifest.lineage),
                        _json_text([t.to_json() for t in manifest.inputs]),
                        _json_text([t.to_json() for t in manifest.outputs]),
                        quantization,
                        Status.REGISTERED.value,
                    ),
                )
                row = conn.execute(f"{_SELECT_VERSION} WHERE sha256 = ?", (sha256,)).fetchone()
                return self._version(row)
        finally:
            tmp.unlink(missing_ok=True)

    def _verify(self, tmp: Path, label: str) -> tuple[Manifest, str, int, str]:
        """Verify the spooled bundle; returns its manifest, SHA-256, size and quantization.

        Raises:
            RegistryError: not verified by the trust root, or the model does not load.
        """
        try:
            bundle = verify_bundle(tmp, self.trust, self._limits())
            model = bundle.read(MODEL, self._limits())
            quantization = "int8" if LoadedModel(model).is_quantized() else "float"
            with tmp.open("rb") as f:
                sha256 = _sha256_of(f)
            size = tmp.stat().st_size
        except OSError as exc:
            raise RegistryError(f"{label}: cannot read ({exc.strerror})") from exc
        except EdgeFleetError as exc:
            raise RegistryError(
                f"{label} refused: {str(exc).replace(tmp.name + ': ', '')}"
            ) from exc
        return bundle.manifest, sha256, size, quantization

    def _place(self, tmp: Path, sha256: str) -> None:
        """Rename ``tmp`` to ``<sha256>.efb`` unless that file exists (same bytes)."""
        target = self._file(sha256)
        try:
            if target.exists():
                with target.open("rb") as f:
                    if _sha256_of(f) == sha256:
                        return  # an orphan from an earlier crash: re-used
                raise RegistryError(f"{target.name}: exists with other bytes; remove it by hand")
            os.link(tmp, target)  # fails rather than overwrite, unlike rename
            fsync_dir(self.bundle_dir)
        except FileExistsError:
            return  # pragma: no cover - another process placed the same bytes
        except OSError as exc:
            raise RegistryError(f"{target.name}: cannot store ({exc.strerror})") from exc

    def _version(self, row: Sequence[Any]) -> RegisteredVersion:
        try:
            return RegisteredVersion(
                name=str(row[0]),
                version=int(row[1]),
                sha256=str(row[2]),
                size=int(row[3]),
                created=float(row[4]),
                status=Status(row[5]),
                manifest=Manifest.from_json(json.loads(row[6])),
                quantization=str(row[7]),
            )
        except (ValueError, TypeError, ValidationError) as exc:
            raise RegistryError(
                f"registry {self.db_path}: {row[0]!r} v{row[1]} is invalid ({exc})"
            ) from exc


class DowngradeError(RegistryError):
    """The bundle's version is not above the highest registered for its name."""


_SELECT_VERSION: Final = (
    "SELECT name, version, sha256, size, created, status, manifest, quantization"
    " FROM model_versions"
)


def _sha256_of(f: IO[bytes]) -> str:
    digest = hashlib.sha256()
    while chunk := f.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _json_text(value: Any) -> str:
    return canonical_bytes(value).decode()


def _description(manifest: Manifest) -> str:
    """The model's description: lineage ``description`` when it is a string."""
    value = manifest.lineage.get("description")
    return value if isinstance(value, str) else ""
