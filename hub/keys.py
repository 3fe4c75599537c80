"""Private signing keys on disk: Ed25519, PKCS#8 PEM, mode 0600, optionally encrypted.

Key files are created with ``O_EXCL`` and mode 0600 from the start (never widened
and then narrowed), and refused when group or others can read them.

A hub's data directory keeps its signing keys and ``trust.json`` in ``keys/``, and the
rotations it went through in ``rotations.json`` (a :class:`RotationChain`, published
retained to devices by ``edgefleet hub serve``). :func:`adopt_rotation` moves the keys
a rotation retires to ``keys-retired/v<N>/`` and puts the new ones in ``keys/``.
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from edge_agent.contract.trust import Context, RotationChain, RotationRecord, TrustRoot, key_id
from edge_agent.durable import fsync_dir, write_json_atomic
from edge_agent.errors import TrustError
from hub.errors import KeyStoreError
from hub.signing import sign


@dataclass(frozen=True)
class KeyFile:
    """A private key and where it is kept."""

    path: Path
    key: Ed25519PrivateKey

    @property
    def keyid(self) -> str:
        """The key id (SHA-256 of the raw public key)."""
        return key_id(self.key.public_key())


def write_private_key(path: Path, key: Ed25519PrivateKey, passphrase: bytes | None) -> None:
    """Write ``key`` as PKCS#8 PEM to a new file with mode 0600.

    Raises:
        KeyStoreError: the file already exists.
        OSError: it cannot be written.
    """
    encryption = BestAvailableEncryption(passphrase) if passphrase else NoEncryption()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, encryption)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise KeyStoreError(f"{path} already exists; refusing to overwrite a key") from exc
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())


def load_private_key(path: Path, passphrase: bytes | None = None) -> KeyFile:
    """Read a private key file.

    Raises:
        KeyStoreError: group/others may read it, it is encrypted and no (or a wrong)
            passphrase was given, or it is not an Ed25519 PKCS#8 key.
        OSError: it cannot be read.
    """
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyStoreError(
            f"{path} is readable by group or others (mode {stat.S_IMODE(mode):o}); "
            f"run: chmod 600 {path}"
        )
    try:
        key = load_pem_private_key(path.read_bytes(), password=passphrase)
    except TypeError as exc:
        hint = "it is encrypted: give its passphrase" if passphrase is None else str(exc)
        raise KeyStoreError(f"{path}: {hint}") from exc
    except ValueError as exc:
        raise KeyStoreError(f"{path}: cannot load key (wrong passphrase or not PEM)") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyStoreError(f"{path}: not an Ed25519 key")
    return KeyFile(path, key)


def write_json_file(path: Path, document: object, mode: int = 0o644) -> None:
    """Write canonical JSON atomically (temp file, fsync, rename); world-readable by default.

    Raises:
        OSError: it cannot be written.
    """
    write_json_atomic(path, document, mode)


def init_keys(
    directory: Path, count: int = 1, threshold: int = 1, passphrase: bytes | None = None
) -> tuple[TrustRoot, list[KeyFile]]:
    """Create ``count`` signing keys in ``directory`` and their trust file ``trust.json``.

    The directory is created with mode 0700 if it does not exist.

    Raises:
        KeyStoreError: a key or the trust file already exists there.
        ValidationError: ``threshold`` is not within 1..``count``.
        OSError: files cannot be written.
    """
    trust_path = directory / "trust.json"
    if trust_path.exists():
        raise KeyStoreError(f"{trust_path} already exists; use `edgefleet keys rotate`")
    keys = [Ed25519PrivateKey.generate() for _ in range(count)]
    root = TrustRoot.from_keys([k.public_key() for k in keys], threshold=threshold)
    files = _write_keys(directory, keys, passphrase)
    write_json_file(trust_path, root.to_json())
    return root, files


def rotate_keys(
    current: TrustRoot,
    current_keys: list[KeyFile],
    directory: Path,
    count: int = 1,
    threshold: int = 1,
    passphrase: bytes | None = None,
) -> tuple[RotationRecord, list[KeyFile]]:
    """Create new keys and a rotation record signed by the current and the new keys.

    The record is checked against ``current`` before it is returned, so a record
    that devices would refuse (too few current keys given) is never written.

    Raises:
        TrustError: ``current_keys`` do not reach the current threshold.
        ValidationError: ``threshold`` is not within 1..``count``.
        KeyStoreError, OSError: the new key files cannot be written.
    """
    new_keys = [Ed25519PrivateKey.generate() for _ in range(count)]
    new_root = TrustRoot.from_keys(
        [k.public_key() for k in new_keys], threshold=threshold, version=current.version + 1
    )
    payload = RotationRecord.signed_bytes(current.version, new_root)
    signatures = sign(Context.ROTATION, payload, [k.key for k in current_keys] + new_keys)
    record = RotationRecord(current.version, new_root, tuple(signatures))
    record.apply(current)
    return record, _write_keys(directory, new_keys, passphrase)


def _write_keys(
    directory: Path, keys: list[Ed25519PrivateKey], passphrase: bytes | None
) -> list[KeyFile]:
    """Write each key as ``key-<keyid prefix>.pem`` in ``directory`` (created 0700)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    files = []
    for key in keys:
        path = directory / f"key-{key_id(key.public_key())[:16]}.pem"
        write_private_key(path, key, passphrase)
        files.append(KeyFile(path, key))
    return files


#: The hub's rotation chain, in its data directory.
ROTATIONS_FILE: Final = "rotations.json"


def _same(a: TrustRoot, b: TrustRoot) -> bool:
    return a.to_json() == b.to_json()


def check_chain(chain: RotationChain, trust: TrustRoot) -> None:
    """Check that each record of the hub's chain rotates the root before it, and that
    the chain ends at the hub's own ``trust`` (the root of the keys it signs with).

    Raises:
        KeyStoreError: a link does not verify, or the chain ends elsewhere (one line).
    """
    for before, record in zip(chain.records, chain.records[1:], strict=False):
        try:
            record.apply(before.new_root)
        except TrustError as exc:
            raise KeyStoreError(f"{ROTATIONS_FILE}: {exc}") from exc
    if chain.records and not _same(chain.records[-1].new_root, trust):
        raise KeyStoreError(
            f"{ROTATIONS_FILE} ends at trust version {chain.records[-1].new_root.version}, "
            f"but keys/trust.json is version {trust.version}: finish "
            "`edgefleet hub keys adopt-rotation`"
        )


def _new_signing_keys(directory: Path, new_root: TrustRoot) -> list[KeyFile]:
    """The private keys in ``directory`` (``key-*.pem``), checked against ``new_root``."""
    files = [load_private_key(p) for p in sorted(directory.glob("key-*.pem"))]
    for f in files:
        if f.keyid not in new_root.keys:
            raise KeyStoreError(f"{f.path} is not a key of the rotation's new trust root")
    if len(files) < new_root.threshold:
        raise KeyStoreError(
            f"{directory} holds {len(files)} key(s) of the new root; the hub signs alone, "
            f"so it needs {new_root.threshold} (the new threshold)"
        )
    return files


def adopt_rotation(data_dir: Path, record: RotationRecord, new_keys: Path) -> Path:
    """Make a hub's data directory adopt ``record``: from its next start the hub
    publishes the chain to devices and signs with the new keys.

    Steps, each safe to repeat after a crash (running this again finishes the job):
    append the record to ``rotations.json`` (atomic); copy the new keys and the new
    ``trust.json`` to ``keys.next/``; move ``keys/`` to ``keys-retired/v<N>/``; move
    ``keys.next/`` to ``keys/``. ``hub serve`` refuses to start halfway through.

    Returns:
        The directory holding the retired keys.

    Raises:
        TrustError: the record does not rotate the hub's current root.
        KeyStoreError: ``new_keys`` lacks unencrypted private keys of the new root up
            to its threshold, or holds other keys; ``rotations.json`` does not end at
            the hub's current root.
        ValidationError: ``rotations.json`` or a trust file is malformed.
        OSError: files cannot be read or written.
    """
    keys_dir, staged = data_dir / "keys", data_dir / "keys.next"
    retired = data_dir / "keys-retired" / f"v{record.previous_version}"
    chain_path = data_dir / ROTATIONS_FILE
    chain = RotationChain.load(chain_path)
    halfway = not keys_dir.exists() and staged.exists() and retired.exists()
    current = TrustRoot.load((retired if halfway else keys_dir) / "trust.json")
    if _same(current, record.new_root):
        return retired  # adopted already
    new_root = record.apply(current)
    signing = _new_signing_keys(new_keys, new_root)
    if not chain.records or not _same(chain.records[-1].new_root, new_root):
        if chain.records:
            check_chain(chain, current)
        write_json_file(chain_path, RotationChain((*chain.records, record)).to_json(), 0o600)
    if not halfway:
        if retired.exists():
            raise KeyStoreError(f"{retired} already exists; move it away to adopt this rotation")
        if staged.exists():
            shutil.rmtree(staged)
        staged.mkdir(mode=0o700)
        for f in signing:
            write_private_key(staged / f.path.name, f.key, None)
        write_json_file(staged / "trust.json", new_root.to_json())
        fsync_dir(staged)
        retired.parent.mkdir(mode=0o700, exist_ok=True)
        keys_dir.replace(retired)
    staged.replace(keys_dir)
    fsync_dir(data_dir)
    return retired
