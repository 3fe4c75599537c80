"""Private key files: tight permissions, optional passphrase, refusal of loose files."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from edge_agent.contract.trust import RotationChain, TrustRoot
from edge_agent.errors import TrustError
from hub.errors import HubError, KeyStoreError
from hub.keys import (
    ROTATIONS_FILE,
    adopt_rotation,
    check_chain,
    init_keys,
    load_private_key,
    rotate_keys,
)


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


def test_rotate_writes_a_record_that_rotates_the_current_root_to_only_the_new_keys(tmp_path):
    """The record itself; devices adopting it: tests/agent/test_rotation.py and
    tests/hub/test_rotation_end_to_end.py."""
    root, files = init_keys(tmp_path / "old", count=2, threshold=2)
    record, new_files = rotate_keys(root, files, tmp_path / "new", count=1, threshold=1)
    new_root = record.apply(root)
    assert new_root.keys.keys() == {new_files[0].keyid}
    assert (new_root.version, new_root.threshold) == (2, 1)


def test_rotate_with_too_few_current_keys_writes_nothing(tmp_path):
    root, files = init_keys(tmp_path / "old", count=2, threshold=2)
    with pytest.raises(TrustError):
        rotate_keys(root, files[:1], tmp_path / "new")
    assert not (tmp_path / "new").exists()


# --- a hub's data directory adopting a rotation -----------------------------------------------


def snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


@pytest.fixture
def hub_data(tmp_path):
    """A hub data directory with 2-of-2 keys, and a rotation to 2-of-2 new keys."""
    data = tmp_path / "hub"
    root, files = init_keys(data / "keys", count=2, threshold=2)
    record, new_files = rotate_keys(root, files, tmp_path / "new", count=2, threshold=2)
    return data, root, files, record, new_files


def test_adopting_a_rotation_retires_the_old_keys_and_installs_the_new_ones(tmp_path, hub_data):
    data, root, files, record, new_files = hub_data
    retired = adopt_rotation(data, record, tmp_path / "new")
    assert retired == data / "keys-retired" / "v1"
    installed = TrustRoot.load(data / "keys" / "trust.json")
    assert installed.to_json() == record.new_root.to_json()
    keys = [load_private_key(p) for p in sorted((data / "keys").glob("key-*.pem"))]
    assert {k.keyid for k in keys} == {f.keyid for f in new_files}
    assert {load_private_key(p).keyid for p in retired.glob("key-*.pem")} == {
        f.keyid for f in files
    }
    assert TrustRoot.load(retired / "trust.json").to_json() == root.to_json()
    chain = RotationChain.load(data / ROTATIONS_FILE)
    assert chain.records == (record,)
    check_chain(chain, installed)
    before = snapshot(data)
    assert adopt_rotation(data, record, tmp_path / "new") == retired  # again: nothing to do
    assert snapshot(data) == before


def test_adopting_a_rotation_of_another_root_changes_nothing(tmp_path, hub_data):
    data, *_ = hub_data
    other_root, other_files = init_keys(tmp_path / "other", count=1)
    foreign, _ = rotate_keys(other_root, other_files, tmp_path / "other-new")
    before = snapshot(data)
    with pytest.raises(TrustError, match="rotation"):
        adopt_rotation(data, foreign, tmp_path / "other-new")
    assert snapshot(data) == before


@pytest.mark.parametrize("fault", ["too few new keys", "a key of another root"])
def test_adopting_without_usable_new_keys_changes_nothing(tmp_path, hub_data, fault):
    """The hub signs alone: it must hold the new threshold of new keys, and only those."""
    data, _, _, record, new_files = hub_data
    if fault == "too few new keys":
        new_files[0].path.unlink()
        match = "holds 1 key"
    else:
        init_keys(tmp_path / "stray")
        stray = next((tmp_path / "stray").glob("key-*.pem"))
        stray.rename(tmp_path / "new" / stray.name)
        match = "not a key of the rotation's new trust root"
    before = snapshot(data)
    with pytest.raises(KeyStoreError, match=match):
        adopt_rotation(data, record, tmp_path / "new")
    assert snapshot(data) == before


def test_adoption_interrupted_halfway_is_refused_by_the_hub_and_finished_by_running_it_again(
    tmp_path, hub_data, monkeypatch
):
    from hub.broker import free_port
    from hub.service import HubService, HubSettings

    data, _, _, record, _ = hub_data
    real_replace = Path.replace

    def crash_on_the_new_keys(self: Path, target: Path) -> Path:
        if self.name == "keys.next":
            raise OSError(28, "No space left on device (simulated)")
        return real_replace(self, target)

    monkeypatch.setattr(Path, "replace", crash_on_the_new_keys)
    with pytest.raises(OSError, match="simulated"):
        adopt_rotation(data, record, tmp_path / "new")
    monkeypatch.undo()
    assert not (data / "keys").exists()  # the old keys are retired, the new not in place
    hub = HubService(HubSettings(data_dir=data, api_port=0, embedded_broker_port=free_port()))
    with pytest.raises(HubError, match="finish `edgefleet hub keys adopt-rotation`"):
        hub.start()  # not with fresh keys
        hub.stop()  # reached only if it wrongly started
    assert not (data / "keys").exists()
    adopt_rotation(data, record, tmp_path / "new")
    installed = TrustRoot.load(data / "keys" / "trust.json")
    assert installed.to_json() == record.new_root.to_json()
    check_chain(RotationChain.load(data / ROTATIONS_FILE), installed)


def test_chain_that_does_not_end_at_the_hubs_keys_is_refused(tmp_path, hub_data):
    """A hub must not publish rotations to a root other than the one it signs with."""
    _, root, _, record, _ = hub_data
    with pytest.raises(KeyStoreError, match=r"ends at trust version 2, but keys/trust\.json is"):
        check_chain(RotationChain((record,)), root)


def test_second_rotation_extends_the_chain(tmp_path, hub_data):
    data, _, _, record, _ = hub_data
    adopt_rotation(data, record, tmp_path / "new")
    current = TrustRoot.load(data / "keys" / "trust.json")
    keys = [load_private_key(p) for p in sorted((data / "keys").glob("key-*.pem"))]
    second, _ = rotate_keys(current, keys, tmp_path / "third")
    assert adopt_rotation(data, second, tmp_path / "third") == data / "keys-retired" / "v2"
    chain = RotationChain.load(data / ROTATIONS_FILE)
    assert chain.records == (record, second)
    check_chain(chain, TrustRoot.load(data / "keys" / "trust.json"))
