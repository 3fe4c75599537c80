"""Private key files: tight permissions, optional passphrase, refusal of loose files."""

from __future__ import annotations

import stat

import pytest

from edge_agent.trust import TrustRoot
from hub.errors import KeyStoreError
from hub.keys import init_keys, load_private_key, rotate_keys


def test_init_writes_0600_keys_and_a_matching_trust_file(tmp_path):
    root, files = init_keys(tmp_path / "keys", count=3, threshold=2)
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    for f in files:
        assert stat.S_IMODE(f.path.stat().st_mode) == 0o600
        assert f.path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = TrustRoot.load(tmp_path / "keys" / "trust.json")
    assert loaded.threshold == 2
    assert set(loaded.keys) == {f.keyid for f in files} == set(root.keys)


def test_init_refuses_to_overwrite_existing_keys(tmp_path):
    init_keys(tmp_path)
    with pytest.raises(KeyStoreError, match="already exists"):
        init_keys(tmp_path)


def test_encrypted_key_needs_its_passphrase(tmp_path):
    _, files = init_keys(tmp_path, passphrase=b"correct horse")
    assert b"ENCRYPTED" in files[0].path.read_bytes()
    with pytest.raises(KeyStoreError, match="encrypted"):
        load_private_key(files[0].path)
    with pytest.raises(KeyStoreError, match="wrong passphrase"):
        load_private_key(files[0].path, b"wrong")
    assert load_private_key(files[0].path, b"correct horse").keyid == files[0].keyid


def test_group_readable_key_refused(tmp_path):
    _, files = init_keys(tmp_path)
    files[0].path.chmod(0o640)
    with pytest.raises(KeyStoreError, match="chmod 600"):
        load_private_key(files[0].path)


def test_rotate_produces_a_record_devices_accept(tmp_path):
    root, files = init_keys(tmp_path / "old", count=2, threshold=2)
    record, new_files = rotate_keys(root, files, tmp_path / "new", count=1, threshold=1)
    assert record.apply(root).keys.keys() == {new_files[0].keyid}


def test_rotate_with_too_few_current_keys_writes_nothing(tmp_path):
    from edge_agent.errors import TrustError

    root, files = init_keys(tmp_path / "old", count=2, threshold=2)
    with pytest.raises(TrustError):
        rotate_keys(root, files[:1], tmp_path / "new")
    assert not (tmp_path / "new").exists()
