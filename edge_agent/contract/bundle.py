"""Reading, verifying and unpacking signed model bundles (``.efb``).

A bundle is a ZIP archive of *stored* (uncompressed) members::

    manifest.json    canonical JSON, see :mod:`edge_agent.contract.manifest`
    signatures.json  detached Ed25519 signatures over the manifest bytes
    model.tflite     the TFLite flatbuffer
    reference.json   drift reference statistics (:mod:`edge_agent.contract.reference`)
    schema.json      input schema (:mod:`edge_agent.contract.input_schema`)
    samples.json     smoke-test samples (:mod:`edge_agent.contract.samples`)

Verification order: archive structure (names, types, sizes: nothing is decompressed,
so there is no zip bomb), then the signatures over the manifest bytes against the
pinned trust root, then the manifest's fields, then every member's size and SHA-256.
Nothing in a bundle is used before the step that vouches for it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import stat
import struct
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, Final, TypeVar

from edge_agent.contract.canonical import canonical_bytes, parse_json
from edge_agent.contract.input_schema import InputSchema
from edge_agent.contract.manifest import (
    CONTENT_MEMBERS,
    INPUT_SCHEMA,
    MANIFEST,
    MODEL,
    REFERENCE,
    SAMPLES,
    SIGNATURES,
    Manifest,
)
from edge_agent.contract.reference import ReferenceStats
from edge_agent.contract.samples import SmokeSamples
from edge_agent.contract.trust import Context, Signature, TrustRoot, signatures_from_json
from edge_agent.errors import BundleError, EdgeFleetError, ValidationError

_T = TypeVar("_T")
ALL_MEMBERS: Final = CONTENT_MEMBERS | {MANIFEST, SIGNATURES}
TFLITE_IDENTIFIER: Final = b"TFL3"
_CHUNK: Final = 1 << 20


@dataclass(frozen=True)
class BundleLimits:
    """Upper bounds checked before anything is read (endless data, zip bombs)."""

    max_bundle_bytes: int = 1 << 30
    max_model_bytes: int = 512 << 20
    max_document_bytes: int = 16 << 20

    def for_member(self, name: str) -> int:
        """Largest size allowed for member ``name``."""
        return self.max_model_bytes if name == MODEL else self.max_document_bytes


DEFAULT_LIMITS: Final = BundleLimits()


def is_tflite(head: bytes) -> bool:
    """Whether bytes start like a TFLite flatbuffer (file identifier ``TFL3`` at 4..8)."""
    return len(head) >= 8 and head[4:8] == TFLITE_IDENTIFIER


@dataclass(frozen=True)
class Bundle:
    """A bundle whose structure and member digests were checked.

    ``signers`` holds the key ids whose signatures verified against the trust root;
    it is empty for a bundle that was only inspected (no trust root given).
    """

    path: Path
    manifest: Manifest
    signatures: tuple[Signature, ...]
    signers: frozenset[str]

    @property
    def verified(self) -> bool:
        """True when the signatures were checked against a trust root."""
        return bool(self.signers)

    def read(self, name: str, limits: BundleLimits = DEFAULT_LIMITS) -> bytes:
        """Read a content member, checking its digest again (the file may have changed).

        Raises:
            BundleError: unknown member, or its bytes no longer match the manifest.
        """
        if name not in CONTENT_MEMBERS:
            raise BundleError(f"{self.path.name}: no member {name!r}")
        with _open_archive(self.path, limits) as zf:
            return _read_checked(zf, zf.getinfo(name), self.manifest)

    def input_schema(self) -> InputSchema:
        """Parse the input schema member.

        Raises:
            BundleError: the member changed since verification, or is malformed.
        """
        return _parse_member(self, INPUT_SCHEMA, InputSchema.from_json)

    def reference(self) -> ReferenceStats:
        """Parse the reference statistics member.

        Raises:
            BundleError: the member changed since verification, or is malformed.
        """
        return _parse_member(self, REFERENCE, ReferenceStats.from_json)

    def samples(self) -> SmokeSamples:
        """Parse the smoke-test samples member.

        Raises:
            BundleError: the member changed since verification, or is malformed.
        """
        return _parse_member(self, SAMPLES, SmokeSamples.from_json)


def verify_bundle(path: Path, trust: TrustRoot, limits: BundleLimits = DEFAULT_LIMITS) -> Bundle:
    """Verify a bundle file completely against a pinned trust root.

    Raises:
        BundleError: the file is not a well-formed bundle, is unsafe (paths, links,
            sizes), is not signed by enough trusted keys, or any member's bytes
            differ from the manifest.
    """
    return _check(path, trust, limits, dest=None)


def inspect_bundle(path: Path, limits: BundleLimits = DEFAULT_LIMITS) -> Bundle:
    """Check structure and member digests *without* checking signatures.

    For display only: nothing from an inspected bundle may be trusted.

    Raises:
        BundleError: as :func:`verify_bundle`, except for signature problems.
    """
    return _check(path, None, limits, dest=None)


def extract_bundle(
    path: Path, trust: TrustRoot, dest: Path, limits: BundleLimits = DEFAULT_LIMITS
) -> Bundle:
    """Verify a bundle and write its members into the new directory ``dest``.

    Members are hashed as they are written, so what lands on disk is exactly what
    was verified. ``dest`` is created with mode 0700 and must not exist; nothing is
    written outside it, and on any failure it is removed again.

    Raises:
        BundleError: as :func:`verify_bundle`, or ``dest`` already exists.
        OSError: the files cannot be written (e.g. disk full); ``dest`` is removed.
    """
    try:
        dest.mkdir(mode=0o700)
    except FileExistsError as exc:
        raise BundleError(f"extract: {dest} already exists") from exc
    try:
        return _check(path, trust, limits, dest=dest)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


# --- internals ---------------------------------------------------------------------------


@contextlib.contextmanager
def _open_archive(path: Path, limits: BundleLimits) -> Iterator[zipfile.ZipFile]:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise BundleError(f"{path.name}: cannot read ({exc.strerror})") from exc
    if size > limits.max_bundle_bytes:
        raise BundleError(
            f"{path.name}: {size} bytes is over the {limits.max_bundle_bytes}-byte bundle limit"
        )
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise BundleError(f"{path.name}: not a bundle (not a readable ZIP archive: {exc})") from exc
    with zf:
        yield zf


def _check_structure(name: str, zf: zipfile.ZipFile, limits: BundleLimits) -> None:
    seen: set[str] = set()
    for info in zf.infolist():
        member = info.filename
        posix = PurePosixPath(member.replace("\\", "/"))
        if posix.is_absolute() or member.startswith(("/", "\\")) or ":" in member:
            raise BundleError(f"{name}: member {member!r} has an absolute path")
        if ".." in posix.parts:
            raise BundleError(f"{name}: member {member!r} escapes the bundle with '..'")
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise BundleError(f"{name}: member {member!r} is a symbolic link")
        if info.is_dir() or stat.S_ISDIR(mode):
            raise BundleError(f"{name}: member {member!r} is a directory")
        if member in seen:
            raise BundleError(f"{name}: member {member!r} appears twice")
        seen.add(member)
        if member not in ALL_MEMBERS:
            raise BundleError(f"{name}: unexpected member {member!r}")
        if info.flag_bits & 0x1:
            raise BundleError(f"{name}: member {member!r} is encrypted")
        if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
            raise BundleError(f"{name}: member {member!r} is compressed; bundles store members")
        if info.file_size > limits.for_member(member):
            raise BundleError(
                f"{name}: member {member!r} declares {info.file_size} bytes, over the "
                f"{limits.for_member(member)}-byte limit"
            )
    missing = sorted(ALL_MEMBERS - seen)
    if missing:
        raise BundleError(f"{name}: missing member(s) {', '.join(missing)}")


def _read_small(zf: zipfile.ZipFile, member: str, limits: BundleLimits) -> bytes:
    info = zf.getinfo(member)
    limit = min(info.file_size, limits.for_member(member))
    with _member_stream(zf, info) as f:
        data = f.read(limit + 1) or b""
    if len(data) != info.file_size:
        raise BundleError(f"member {member!r} is not {info.file_size} bytes as declared")
    return data


_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")
_LOCAL_MAGIC: Final = b"PK\x03\x04"


@contextlib.contextmanager
def _member_stream(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Iterator[_Bounded]:
    """Open a stored member's raw bytes, bounded to its declared size.

    Reads straight from the archive file (members are stored, never compressed), so
    verification costs little beyond SHA-256: the manifest digest, not the ZIP CRC,
    is what vouches for the bytes.

    Raises:
        BundleError: the local header is damaged or names another member.
    """
    fp = zf.fp
    if fp is None:
        raise BundleError("archive is closed")
    try:
        fp.seek(info.header_offset)
        header = fp.read(_LOCAL_HEADER.size)
        if len(header) != _LOCAL_HEADER.size:
            raise BundleError(f"member {info.filename!r} is truncated")
        fields = _LOCAL_HEADER.unpack(header)
        if fields[0] != _LOCAL_MAGIC:
            raise BundleError(f"member {info.filename!r} has a damaged local header")
        name_len, extra_len = fields[10], fields[11]
        if fp.read(name_len) != info.orig_filename.encode(
            "utf-8" if info.flag_bits & 0x800 else "cp437"
        ):
            raise BundleError(f"member {info.filename!r}: local and central names differ")
        fp.seek(extra_len, os.SEEK_CUR)
        yield _Bounded(fp, info.file_size)
    except (OSError, ValueError, struct.error) as exc:
        raise BundleError(f"member {info.filename!r} is damaged: {exc}") from exc


class _Bounded(io.RawIOBase):
    """At most ``remaining`` bytes of ``fp`` from its current position."""

    def __init__(self, fp: IO[bytes], remaining: int) -> None:
        self._fp = fp
        self._remaining = remaining

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer)[: self._remaining]
        n: int = self._fp.readinto(view)  # type: ignore[attr-defined]
        self._remaining -= n
        return n


def _check(path: Path, trust: TrustRoot | None, limits: BundleLimits, dest: Path | None) -> Bundle:
    name = path.name
    try:
        with _open_archive(path, limits) as zf:
            _check_structure(name, zf, limits)
            manifest_bytes = _read_small(zf, MANIFEST, limits)
            signatures = tuple(
                signatures_from_json(
                    parse_json(_read_small(zf, SIGNATURES, limits), SIGNATURES), SIGNATURES
                )
            )
            signers: frozenset[str] = frozenset()
            if trust is not None:
                signers = trust.verify(
                    Context.BUNDLE_MANIFEST, manifest_bytes, signatures, "bundle manifest"
                )
            document = parse_json(manifest_bytes, MANIFEST)
            if canonical_bytes(document) != manifest_bytes:
                raise BundleError(f"{name}: {MANIFEST} is not in canonical form")
            manifest = Manifest.from_json(document)
            for member in sorted(CONTENT_MEMBERS):
                info = zf.getinfo(member)
                if dest is None:
                    _stream_checked(zf, info, manifest, None)
                else:
                    _write_checked(zf, info, manifest, dest / member)
    except BundleError as exc:
        msg = str(exc)
        raise BundleError(msg if msg.startswith(name) else f"{name}: {msg}") from exc
    except EdgeFleetError as exc:  # TrustError, ValidationError
        raise BundleError(f"{name}: {exc}") from exc
    return Bundle(path=path, manifest=manifest, signatures=signatures, signers=signers)


def _read_checked(zf: zipfile.ZipFile, info: zipfile.ZipInfo, manifest: Manifest) -> bytes:
    """Read a whole member, checked against the manifest."""
    chunks: list[bytes] = []
    _stream_checked(zf, info, manifest, chunks.append)
    return b"".join(chunks)


def _stream_checked(
    zf: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    manifest: Manifest,
    on_chunk: Callable[[bytes], object] | None,
) -> None:
    """Stream a member to ``on_chunk``, checking its size and SHA-256 against the manifest.

    Raises:
        BundleError: size or digest differ, or the model is not a TFLite flatbuffer.
    """
    expected = manifest.members[info.filename]
    if info.file_size != expected.size:
        raise BundleError(
            f"member {info.filename!r} is {info.file_size} bytes, the manifest says {expected.size}"
        )
    digest = hashlib.sha256()
    total = 0
    head = b""
    buffer = bytearray(min(_CHUNK, max(expected.size, 1)))
    view = memoryview(buffer)
    with _member_stream(zf, info) as f:
        while n := f.readinto(buffer):
            total += n
            if total > expected.size:
                raise BundleError(f"member {info.filename!r} is longer than the manifest says")
            if not head:
                head = bytes(view[:8])
            digest.update(view[:n])
            if on_chunk is not None:
                on_chunk(bytes(view[:n]))
    if total != expected.size or digest.hexdigest() != expected.sha256:
        raise BundleError(f"member {info.filename!r} does not match its SHA-256 in the manifest")
    if info.filename == MODEL and not is_tflite(head):
        raise BundleError(f"member {MODEL!r} is not a TFLite flatbuffer")


def _write_checked(
    zf: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    manifest: Manifest,
    target: Path,
) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        _stream_checked(zf, info, manifest, out.write)
        out.flush()
        os.fsync(out.fileno())


def _parse_member(bundle: Bundle, member: str, parse: Callable[[Any, str], _T]) -> _T:
    data = bundle.read(member)
    try:
        return parse(parse_json(data, member), member)
    except ValidationError as exc:
        raise BundleError(f"{bundle.path.name}: {exc}") from exc
