"""Shared fixtures: keys, a trust root, and a small demo model built once per session."""

from __future__ import annotations

from pathlib import Path

# Imported before any test starts background threads: CPython 3.11's ast.parse is not
# thread-safe ("AST constructor recursion depth mismatch"), and hypothesis' pytest plugin
# would otherwise import (and assertion-rewrite) it at the end of the session, while a
# broker or MQTT thread may still be compiling something.
import hypothesis  # noqa: F401
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.contract.trust import TrustRoot


@pytest.fixture(scope="session")
def signing_keys() -> list[Ed25519PrivateKey]:
    return [Ed25519PrivateKey.generate() for _ in range(3)]


@pytest.fixture(scope="session")
def trust_1of1(signing_keys: list[Ed25519PrivateKey]) -> TrustRoot:
    return TrustRoot.from_keys([signing_keys[0].public_key()], threshold=1)


@pytest.fixture(scope="session")
def trust_2of3(signing_keys: list[Ed25519PrivateKey]) -> TrustRoot:
    return TrustRoot.from_keys([k.public_key() for k in signing_keys], threshold=2)


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small trained demo model (float and int8 files, reference and test data)."""
    from hub.modelkit.pump import build_demo

    out = tmp_path_factory.mktemp("demo-model")
    build_demo(out, hidden=(16,), seed=3)
    return out
