"""Trust roots, Ed25519 signatures with a k-of-n threshold, and key rotation.

A device pins a trust file at enrolment. It names the root public keys and how many
of them (the threshold) must sign a document. A signature is made over a context
string plus the document's canonical bytes, so a signature on one kind of document
(a bundle manifest) can never be replayed as another kind (a directive).

Rotation replaces the trust root with a record signed by the threshold of the
*current* keys (authority) and of the *new* keys (proof that they are held); its
version is exactly one above the current root's. Records travel as a chain
(:class:`RotationChain`), so a device that missed several rotations catches up by
applying each in order (:func:`advance`).

Only verification lives here; signing is the hub's (``hub.signing``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from edge_agent.contract.canonical import canonical_bytes, parse_json
from edge_agent.contract.ed25519 import PublicKey
from edge_agent.contract.fields import exact_fields, field, list_of, positive_int, sha256_hex
from edge_agent.errors import TrustError, ValidationError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

TRUST_FORMAT: Final = "edgefleet-trust/1"
ROTATION_FORMAT: Final = "edgefleet-rotation/1"
CHAIN_FORMAT: Final = "edgefleet-rotations/1"
SCHEME: Final = "ed25519"
MAX_TRUST_FILE_BYTES: Final = 1 << 20


class Context:
    """Domain-separation prefixes: what kind of document a signature is for."""

    BUNDLE_MANIFEST: Final = b"edgefleet/v1 bundle-manifest\n"
    DIRECTIVE: Final = b"edgefleet/v1 directive\n"
    ROTATION: Final = b"edgefleet/v1 trust-rotation\n"


def key_id(public_key: PublicKey | Ed25519PublicKey) -> str:
    """Return the key id: SHA-256 (hex) of the raw 32-byte public key."""
    return hashlib.sha256(PublicKey.of(public_key).raw).hexdigest()


def _b64decode(text: str, where: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValidationError(f"{where}: not valid base64") from exc


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class Signature:
    """One detached signature: which key made it, and the 64 signature bytes."""

    keyid: str
    sig: bytes

    def to_json(self) -> dict[str, str]:
        """Return the JSON form ``{"keyid": hex, "sig": base64}``."""
        return {"keyid": self.keyid, "sig": _b64encode(self.sig)}

    @classmethod
    def from_json(cls, value: Any, where: str = "signature") -> Signature:
        """Parse the JSON form.

        Raises:
            ValidationError: fields missing, extra or malformed.
        """
        obj = exact_fields(value, where, {"keyid", "sig"})
        keyid = sha256_hex(obj, "keyid", where)
        sig = _b64decode(field(obj, "sig", str, where), f"{where}.sig")
        if len(sig) != 64:
            raise ValidationError(f"{where}.sig: an Ed25519 signature has 64 bytes, not {len(sig)}")
        return cls(keyid=keyid, sig=sig)


def signatures_from_json(value: Any, where: str = "signatures") -> list[Signature]:
    """Parse a JSON array of signatures.

    Raises:
        ValidationError: not an array, or an item is malformed.
    """
    items = list_of({"signatures": value}, "signatures", dict, where)
    return [Signature.from_json(item, f"{where}[{i}]") for i, item in enumerate(items)]


@dataclass(frozen=True)
class TrustRoot:
    """The pinned root of trust: public keys by key id, a threshold and a version."""

    version: int
    threshold: int
    keys: Mapping[str, PublicKey]

    def __post_init__(self) -> None:
        if not 1 <= self.threshold <= len(self.keys):
            raise ValidationError(
                f"trust: threshold {self.threshold} needs 1..{len(self.keys)} (the number of keys)"
            )

    @classmethod
    def from_keys(
        cls, public_keys: Iterable[PublicKey | Ed25519PublicKey], threshold: int, version: int = 1
    ) -> TrustRoot:
        """Build a root from public keys.

        Raises:
            ValidationError: threshold out of range, or no keys.
        """
        keys = {key_id(k): PublicKey.of(k) for k in public_keys}
        return cls(version=version, threshold=threshold, keys=keys)

    def to_json(self) -> dict[str, Any]:
        """Return the trust file's JSON document."""
        return {
            "format": TRUST_FORMAT,
            "version": self.version,
            "threshold": self.threshold,
            "keys": [
                {
                    "keyid": kid,
                    "scheme": SCHEME,
                    "public": _b64encode(k.raw),
                }
                for kid, k in sorted(self.keys.items())
            ],
        }

    @classmethod
    def from_json(cls, value: Any, where: str = "trust") -> TrustRoot:
        """Parse a trust document, checking every key id against its key.

        Raises:
            ValidationError: malformed document, duplicate or mismatched key ids,
                unsupported scheme, or threshold out of range.
        """
        obj = exact_fields(value, where, {"format", "version", "threshold", "keys"})
        if field(obj, "format", str, where) != TRUST_FORMAT:
            raise ValidationError(f"{where}.format: expected {TRUST_FORMAT!r}")
        version = positive_int(obj, "version", where)
        threshold = positive_int(obj, "threshold", where)
        keys: dict[str, PublicKey] = {}
        for i, item in enumerate(list_of(obj, "keys", dict, where)):
            at = f"{where}.keys[{i}]"
            entry = exact_fields(item, at, {"keyid", "scheme", "public"})
            if field(entry, "scheme", str, at) != SCHEME:
                raise ValidationError(f"{at}.scheme: only {SCHEME!r} is supported")
            raw = _b64decode(field(entry, "public", str, at), f"{at}.public")
            try:
                public = PublicKey(raw)
            except ValueError as exc:
                raise ValidationError(f"{at}.public: not an Ed25519 public key") from exc
            kid = sha256_hex(entry, "keyid", at)
            if kid != key_id(public):
                raise ValidationError(f"{at}.keyid does not match its public key")
            if kid in keys:
                raise ValidationError(f"{at}: key {kid[:12]} is listed twice")
            keys[kid] = public
        if not keys:
            raise ValidationError(f"{where}.keys: at least one key is needed")
        return cls(version=version, threshold=threshold, keys=keys)

    @classmethod
    def load(cls, path: Path) -> TrustRoot:
        """Read a trust file.

        Raises:
            ValidationError: the file is too large or malformed.
            OSError: it cannot be read.
        """
        data = _read_small(path, MAX_TRUST_FILE_BYTES, "trust file")
        return cls.from_json(parse_json(data, f"trust file {path}"), f"trust file {path.name}")

    def verify(
        self, context: bytes, payload: bytes, signatures: Iterable[Signature], what: str
    ) -> frozenset[str]:
        """Check that at least ``threshold`` distinct trusted keys signed ``payload``.

        Signatures by unknown keys, and invalid ones, are ignored as long as enough
        valid ones remain; the error says what was found.

        Returns:
            The key ids whose signatures verified.

        Raises:
            TrustError: fewer than ``threshold`` valid signatures by trusted keys.
        """
        message = context + payload
        valid: set[str] = set()
        unknown = bad = 0
        for signature in signatures:
            public = self.keys.get(signature.keyid)
            if public is None:
                unknown += 1
                continue
            if signature.keyid in valid:
                continue
            if not public.verify(signature.sig, message):
                bad += 1
                continue
            valid.add(signature.keyid)
        if len(valid) < self.threshold:
            details = [f"{len(valid)} valid of {self.threshold} required"]
            if bad:
                details.append(f"{bad} invalid")
            if unknown:
                details.append(f"{unknown} by unknown keys")
            raise TrustError(f"{what}: not trusted ({', '.join(details)})")
        return frozenset(valid)


@dataclass(frozen=True)
class RotationRecord:
    """A signed statement that replaces one trust root with the next."""

    previous_version: int
    new_root: TrustRoot
    signatures: tuple[Signature, ...]

    @staticmethod
    def signed_bytes(previous_version: int, new_root: TrustRoot) -> bytes:
        """The canonical bytes both the old and the new keys sign."""
        return canonical_bytes(
            {
                "format": ROTATION_FORMAT,
                "previous_version": previous_version,
                "trust": new_root.to_json(),
            }
        )

    def to_json(self) -> dict[str, Any]:
        """Return the rotation file's JSON document."""
        return {
            "format": ROTATION_FORMAT,
            "previous_version": self.previous_version,
            "trust": self.new_root.to_json(),
            "signatures": [s.to_json() for s in self.signatures],
        }

    @classmethod
    def from_json(cls, value: Any, where: str = "rotation") -> RotationRecord:
        """Parse a rotation document.

        Raises:
            ValidationError: malformed document.
        """
        obj = exact_fields(value, where, {"format", "previous_version", "trust", "signatures"})
        if field(obj, "format", str, where) != ROTATION_FORMAT:
            raise ValidationError(f"{where}.format: expected {ROTATION_FORMAT!r}")
        return cls(
            previous_version=positive_int(obj, "previous_version", where),
            new_root=TrustRoot.from_json(obj["trust"], f"{where}.trust"),
            signatures=tuple(signatures_from_json(obj["signatures"], f"{where}.signatures")),
        )

    @classmethod
    def load(cls, path: Path) -> RotationRecord:
        """Read a rotation file.

        Raises:
            ValidationError: the file is too large or malformed.
            OSError: it cannot be read.
        """
        data = _read_small(path, MAX_TRUST_FILE_BYTES, "rotation file")
        return cls.from_json(parse_json(data, f"rotation file {path}"))

    def apply(self, current: TrustRoot) -> TrustRoot:
        """Return the new root if this record validly rotates ``current``.

        Raises:
            TrustError: the record does not follow ``current`` (wrong version), or is
                not signed by the threshold of the current keys and of the new keys.
        """
        if self.previous_version != current.version:
            raise TrustError(
                f"rotation: follows trust version {self.previous_version}, "
                f"but the pinned root is version {current.version}"
            )
        if self.new_root.version != current.version + 1:
            raise TrustError(
                f"rotation: new root must be version {current.version + 1}, "
                f"not {self.new_root.version}"
            )
        payload = self.signed_bytes(self.previous_version, self.new_root)
        current.verify(Context.ROTATION, payload, self.signatures, "rotation (current keys)")
        self.new_root.verify(Context.ROTATION, payload, self.signatures, "rotation (new keys)")
        return self.new_root


@dataclass(frozen=True)
class RotationChain:
    """Rotation records in order: what the hub publishes and what a device keeps."""

    records: tuple[RotationRecord, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Return the chain's JSON document."""
        return {"format": CHAIN_FORMAT, "records": [r.to_json() for r in self.records]}

    def to_bytes(self) -> bytes:
        """The canonical bytes of :meth:`to_json`."""
        return canonical_bytes(self.to_json())

    @classmethod
    def from_json(cls, value: Any, where: str = "rotations") -> RotationChain:
        """Parse a chain document (signatures are checked by :func:`advance`, not here).

        Raises:
            ValidationError: malformed document or record.
        """
        obj = exact_fields(value, where, {"format", "records"})
        if field(obj, "format", str, where) != CHAIN_FORMAT:
            raise ValidationError(f"{where}.format: expected {CHAIN_FORMAT!r}")
        items = list_of(obj, "records", dict, where)
        return cls(
            tuple(RotationRecord.from_json(r, f"{where}.records[{i}]") for i, r in enumerate(items))
        )

    @classmethod
    def from_bytes(cls, data: bytes, what: str = "rotations") -> RotationChain:
        """Parse a chain from JSON bytes of at most :data:`MAX_TRUST_FILE_BYTES`.

        Raises:
            ValidationError: too large, not JSON, or malformed.
        """
        if len(data) > MAX_TRUST_FILE_BYTES:
            raise ValidationError(f"{what}: {len(data)} bytes is over {MAX_TRUST_FILE_BYTES}")
        return cls.from_json(parse_json(data, what), what)

    @classmethod
    def load(cls, path: Path) -> RotationChain:
        """Read a chain file; an absent file is the empty chain.

        Raises:
            ValidationError: the file is too large or malformed.
            OSError: it exists but cannot be read.
        """
        try:
            data = _read_small(path, MAX_TRUST_FILE_BYTES, "rotations file")
        except FileNotFoundError:
            return cls()
        return cls.from_bytes(data, f"rotations file {path.name}")


@dataclass(frozen=True)
class Advance:
    """What :func:`advance` did: the roots passed through, the records adopted, a refusal."""

    roots: tuple[TrustRoot, ...]
    """The starting root, then the root each adopted record installed, in order."""
    adopted: tuple[RotationRecord, ...] = ()
    refused: str = ""
    """One line saying why a record was refused ("" if none was)."""

    @property
    def root(self) -> TrustRoot:
        """The root reached: trust it from now on."""
        return self.roots[-1]

    @property
    def retired(self) -> tuple[TrustRoot, ...]:
        """The roots rotated away from (all but :attr:`root`)."""
        return self.roots[:-1]


def advance(current: TrustRoot, records: Sequence[RotationRecord]) -> Advance:
    """Apply, in version order, each record that follows the root reached so far. Pure.

    Records whose new root is not above the root reached (replays, rotations this
    root already includes) are skipped without complaint. The first record that does
    not validly rotate the root reached (wrong version, too few signatures by the
    current or the new keys) is refused: it and every later record are left out, and
    ``refused`` says why; the records adopted before it stand (each was verified by
    the root it replaced).
    """
    roots = [current]
    adopted: list[RotationRecord] = []
    for record in sorted(records, key=lambda r: r.new_root.version):
        if record.new_root.version <= roots[-1].version:
            continue
        try:
            roots.append(record.apply(roots[-1]))
        except TrustError as exc:
            return Advance(tuple(roots), tuple(adopted), str(exc))
        adopted.append(record)
    return Advance(tuple(roots), tuple(adopted))


def _read_small(path: Path, limit: int, what: str) -> bytes:
    with path.open("rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValidationError(f"{what} {path} is larger than {limit} bytes")
    return data
