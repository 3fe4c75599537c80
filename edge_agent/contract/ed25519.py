"""Ed25519 public keys that verify signatures, without loading a crypto package.

Python's ``ssl`` module (which paho-mqtt imports) already maps OpenSSL's libcrypto.
The agent verifies through it, with ctypes: ``EVP_PKEY_new_raw_public_key`` and
``EVP_DigestVerify`` (OpenSSL >= 1.1.1), exactly the calls the ``cryptography``
package makes for Ed25519. On a device this keeps ~7 MB of ``cryptography``'s Rust
extension out of the daemon's memory. Where libcrypto cannot be found or lacks those
calls, :mod:`cryptography` does the work (it is installed with the agent either way,
and the hub uses it to sign).

Verification is strict RFC 8032 as OpenSSL implements it (non-canonical signatures and
keys are refused); a key or signature of the wrong length is refused before any call.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from typing import Any, Final, Protocol

PUBLIC_KEY_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64
_NID_ED25519: Final = 1087  # EVP_PKEY_ED25519 in every OpenSSL since 1.1.1


class _HasRawPublicBytes(Protocol):
    def public_bytes(self, encoding: Any, format: Any) -> bytes: ...


class PublicKey:
    """An Ed25519 public key: its 32 raw bytes, and :meth:`verify`."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        """Wrap raw key bytes.

        Raises:
            ValueError: not 32 bytes.
        """
        if len(raw) != PUBLIC_KEY_BYTES:
            raise ValueError(f"an Ed25519 public key has {PUBLIC_KEY_BYTES} bytes, not {len(raw)}")
        self.raw = bytes(raw)

    @classmethod
    def of(cls, key: PublicKey | _HasRawPublicBytes) -> PublicKey:
        """The same key from a :mod:`cryptography` ``Ed25519PublicKey`` (or a PublicKey).

        Raises:
            ValueError: not an Ed25519 public key.
        """
        if isinstance(key, PublicKey):
            return key
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        return cls(key.public_bytes(Encoding.Raw, PublicFormat.Raw))

    def verify(self, signature: bytes, message: bytes) -> bool:
        """Whether ``signature`` is this key's signature of ``message``."""
        if len(signature) != SIGNATURE_BYTES:
            return False
        return _backend().verify(self.raw, signature, message)

    def __eq__(self, other: object) -> bool:
        """Keys are equal when their bytes are."""
        return isinstance(other, PublicKey) and other.raw == self.raw

    def __hash__(self) -> int:
        """Hash of the raw bytes."""
        return hash(self.raw)

    def __repr__(self) -> str:
        """The key's first bytes, for logs."""
        return f"PublicKey({self.raw[:6].hex()}...)"


class _LibCrypto:
    """Ed25519 verification through OpenSSL's libcrypto (ctypes)."""

    name = "libcrypto"

    def __init__(self, lib: ctypes.CDLL) -> None:
        vp, sz, ip = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int
        lib.EVP_PKEY_new_raw_public_key.restype = vp
        lib.EVP_PKEY_new_raw_public_key.argtypes = [ip, vp, ctypes.c_char_p, sz]
        lib.EVP_PKEY_free.restype = None
        lib.EVP_PKEY_free.argtypes = [vp]
        lib.EVP_MD_CTX_new.restype = vp
        lib.EVP_MD_CTX_new.argtypes = []
        lib.EVP_MD_CTX_free.restype = None
        lib.EVP_MD_CTX_free.argtypes = [vp]
        lib.EVP_DigestVerifyInit.restype = ip
        lib.EVP_DigestVerifyInit.argtypes = [vp, vp, vp, vp, vp]
        lib.EVP_DigestVerify.restype = ip
        lib.EVP_DigestVerify.argtypes = [vp, ctypes.c_char_p, sz, ctypes.c_char_p, sz]
        self.lib = lib

    def verify(self, raw: bytes, signature: bytes, message: bytes) -> bool:
        lib = self.lib
        pkey = lib.EVP_PKEY_new_raw_public_key(_NID_ED25519, None, raw, len(raw))
        if not pkey:
            return False
        ctx = lib.EVP_MD_CTX_new()
        try:
            if not ctx or lib.EVP_DigestVerifyInit(ctx, None, None, None, pkey) != 1:
                return False
            ok = lib.EVP_DigestVerify(ctx, signature, len(signature), message, len(message))
            return bool(ok == 1)
        finally:
            if ctx:
                lib.EVP_MD_CTX_free(ctx)
            lib.EVP_PKEY_free(pkey)


class _Cryptography:
    """Ed25519 verification through the cryptography package."""

    name = "cryptography"

    def verify(self, raw: bytes, signature: bytes, message: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            Ed25519PublicKey.from_public_bytes(raw).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True


_lock = threading.Lock()
_chosen: _LibCrypto | _Cryptography | None = None


def _find_libcrypto() -> _LibCrypto | None:
    """libcrypto with the needed calls, preferring the one ``ssl`` already mapped."""
    import ssl  # noqa: F401 - maps libcrypto (paho imports it anyway)

    candidates = [ctypes.util.find_library("crypto"), "libcrypto.so.3", "libcrypto.so.1.1"]
    for name in candidates:
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
            backend = _LibCrypto(lib)
        except (OSError, AttributeError):
            continue
        if _self_test(backend):
            return backend
    return None


# RFC 8032, section 7.1, test 2: a known-good signature and its key.
_TEST_KEY = bytes.fromhex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c")
_TEST_SIG = bytes.fromhex(
    "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
    "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
)
_TEST_MSG = bytes.fromhex("72")


def _self_test(backend: _LibCrypto | _Cryptography) -> bool:
    """Accepts the RFC's signature and refuses it with one bit flipped."""
    bad = bytes([_TEST_SIG[0] ^ 1]) + _TEST_SIG[1:]
    return backend.verify(_TEST_KEY, _TEST_SIG, _TEST_MSG) and not backend.verify(
        _TEST_KEY, bad, _TEST_MSG
    )


def _backend() -> _LibCrypto | _Cryptography:
    global _chosen
    if _chosen is None:
        with _lock:
            if _chosen is None:
                _chosen = _find_libcrypto() or _Cryptography()
    return _chosen


def backend_name() -> str:
    """Which implementation verifies: ``libcrypto`` or ``cryptography``."""
    return _backend().name
