"""The model registry: verified uploads, monotonic versions, content-addressed files.

Real SQLite files and real bundles built from the session's demo model.
"""

from __future__ import annotations

import hashlib
import io
import sqlite3
import stat
import threading
from pathlib import Path

import pytest

from edge_agent.contract.bundle import inspect_bundle
from edge_agent.errors import ValidationError
from hub.bundler import ReferenceData, build_bundle, load_reference
from hub.registry import (
    DowngradeError,
    RegisteredVersion,
    Registry,
    RegistryError,
    Status,
)
from hub.store import Store


@pytest.fixture(scope="module")
def model(demo_dir: Path) -> bytes:
    return (demo_dir / "model-int8.tflite").read_bytes()


@pytest.fixture(scope="module")
def reference(demo_dir: Path) -> ReferenceData:
    return load_reference(demo_dir / "reference.npz")


@pytest.fixture(scope="module")
def built(tmp_path_factory, model, reference, signing_keys) -> dict[str, Path]:
    """pump v1, v2, v3; a second, different v2; v1 signed by one key only (2 of 3 needed)."""
    out = tmp_path_factory.mktemp("registry-bundles")
    keys = signing_keys[:2]

    def make(file: str, version: int, keys=keys, lineage=None) -> Path:
        build_bundle(
            model,
            name="pump",
            version=version,
            reference=reference,
            keys=keys,
            out=out / file,
            lineage=lineage,
        )
        return out / file

    return {
        "v1": make("v1.efb", 1),
        "v2": make("v2.efb", 2, lineage={"description": "second"}),
        "v3": make("v3.efb", 3),
        "v2-other": make("v2-other.efb", 2, lineage={"run": "other"}),
        "v1-one-key": make("v1-one-key.efb", 1, keys=signing_keys[:1]),
    }


@pytest.fixture
def registry(tmp_path, trust_2of3, signing_keys):
    with Registry(tmp_path / "hub.db", tmp_path / "bundles", trust_2of3, signing_keys[:2]) as r:
        yield r


def stored_files(r: Registry) -> list[str]:
    """Every entry of the bundle directory, temp files included."""
    return sorted(p.name for p in r.bundle_dir.iterdir())


def version_rows(r: Registry) -> int:
    with sqlite3.connect(r.db_path) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM model_versions").fetchone()[0])


# --- the happy path -----------------------------------------------------------------------


def test_push_model_registers_a_verified_bundle(registry, model, reference):
    record = registry.push_model(
        model, name="pump", reference=reference, lineage={"description": "demo pump", "run": "r1"}
    )
    assert (record.name, record.version, record.status) == ("pump", 1, Status.REGISTERED)
    assert record.quantization == "int8"
    assert record.lineage == {"description": "demo pump", "run": "r1"}
    assert record.inputs[0].dtype == "float32"
    path = registry.bundle_path(record.sha256)
    assert path == registry.bundle_dir / f"{record.sha256}.efb"
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == record.sha256 and len(data) == record.size
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stored_files(registry) == [path.name]  # no temp files left behind
    assert registry.get("pump", 1) == record
    assert registry.latest("pump") == record
    assert registry.list_versions("pump") == [record]
    [m] = registry.list_models()
    assert (m.name, m.description, m.latest_version) == ("pump", "demo pump", 1)
    assert registry.reference("pump", 1) == inspect_bundle(path).reference()


def test_push_without_version_takes_the_next(registry, model, reference):
    assert registry.push_model(model, name="pump", reference=reference).version == 1
    assert registry.push_model(model, name="pump", version=5, reference=reference).version == 5
    assert registry.push_model(model, name="pump", reference=reference).version == 6
    assert registry.push_model(model, name="fan", reference=reference).version == 1
    assert [v.version for v in registry.list_versions("pump")] == [1, 5, 6]
    assert [m.name for m in registry.list_models()] == ["fan", "pump"]


def test_add_bundle_from_path_bytes_and_stream(registry, built):
    r1 = registry.add_bundle(built["v1"])
    r2 = registry.add_bundle(built["v2"].read_bytes())
    r3 = registry.add_bundle(io.BytesIO(built["v3"].read_bytes()))
    assert [r.version for r in (r1, r2, r3)] == [1, 2, 3]
    assert registry.latest("pump") == r3
    assert registry.list_models()[0].description == ""  # from v1, the first seen


def test_unknown_names_and_versions_are_none(registry, built):
    registry.add_bundle(built["v1"])
    assert registry.get("pump", 2) is None
    assert registry.get("nope", 1) is None
    assert registry.latest("nope") is None
    assert registry.list_versions("nope") == []
    assert registry.bundle_path("0" * 64) is None
    with pytest.raises(RegistryError, match="not registered"):
        registry.reference("pump", 2)


def test_set_status(registry, built):
    registry.add_bundle(built["v1"])
    assert registry.set_status("pump", 1, Status.ACTIVE).status is Status.ACTIVE
    assert registry.set_status("pump", 1, "retired").status is Status.RETIRED
    assert registry.get("pump", 1).status is Status.RETIRED
    with pytest.raises(RegistryError, match="not one of"):
        registry.set_status("pump", 1, "deleted")
    with pytest.raises(RegistryError, match="not registered"):
        registry.set_status("pump", 9, Status.ACTIVE)


def test_store_and_registry_share_one_file_and_one_schema(tmp_path, trust_2of3, built):
    db = tmp_path / "hub.db"
    with Store(db) as store:
        with Registry(db, tmp_path / "bundles", trust_2of3) as r:
            record = r.add_bundle(built["v1"])
        migrations = store.migrations()
    assert "0009_registry" in migrations
    with Store(db) as store, Registry(db, tmp_path / "bundles", trust_2of3) as r:
        assert store.migrations() == migrations  # nothing re-applied
        assert r.get("pump", 1) == record
    with sqlite3.connect(db) as conn:
        sets = {row[0] for row in conn.execute("SELECT migration_set FROM migrations")}
    assert sets == {"edgefleet-hub"}


def test_closed_registry_refuses(tmp_path, trust_2of3):
    r = Registry(tmp_path / "hub.db", tmp_path / "bundles", trust_2of3)
    r.close()
    r.close()
    with pytest.raises(RegistryError, match="closed"):
        r.get("pump", 1)


# --- refusals, named after what they defend against ------------------------------------------


def test_tampered_bundle_upload_refused_and_nothing_stored(registry, built, model):
    data = bytearray(built["v1"].read_bytes())
    at = data.find(model[200:232]) + 8
    data[at] ^= 0xFF
    with pytest.raises(RegistryError, match=r"upload refused: .*SHA-256") as info:
        registry.add_bundle(bytes(data))
    assert "\n" not in str(info.value)
    assert stored_files(registry) == []
    assert version_rows(registry) == 0
    assert registry.list_models() == []


def test_bundle_signed_by_too_few_keys_refused(registry, built):
    with pytest.raises(RegistryError, match=r"v1-one-key.efb refused: .*1 valid of 2 required"):
        registry.add_bundle(built["v1-one-key"])
    assert stored_files(registry) == []
    assert version_rows(registry) == 0


def test_not_a_bundle_refused(registry):
    with pytest.raises(RegistryError, match="upload refused: not a bundle"):
        registry.add_bundle(b"PK\x03\x04 certainly not a zip")
    assert stored_files(registry) == []


def test_downgrade_refused(registry, built):
    registry.add_bundle(built["v2"])
    with pytest.raises(DowngradeError, match="pump v1 refused: versions must rise, and v2"):
        registry.add_bundle(built["v1"])
    assert [v.version for v in registry.list_versions("pump")] == [2]
    assert len(stored_files(registry)) == 1


def test_same_version_with_other_bytes_refused(registry, built):
    original = registry.add_bundle(built["v2"])
    with pytest.raises(DowngradeError, match="pump v2 refused: versions must rise, and v2"):
        registry.add_bundle(built["v2-other"])
    assert registry.get("pump", 2) == original
    assert stored_files(registry) == [original.file_name]


def test_explicit_push_version_not_above_refused(registry, model, reference):
    registry.push_model(model, name="pump", version=3, reference=reference)
    with pytest.raises(DowngradeError, match="pump v3 refused: versions must rise, and v3"):
        registry.push_model(
            model, name="pump", version=3, reference=reference, lineage={"run": "another"}
        )
    with pytest.raises(DowngradeError, match="pump v2 refused: versions must rise, and v3"):
        registry.push_model(model, name="pump", version=2, reference=reference)
    assert len(stored_files(registry)) == 1


def test_duplicate_upload_is_idempotent(registry, built):
    first = registry.add_bundle(built["v1"])
    registry.add_bundle(built["v2"])
    again = registry.add_bundle(built["v1"].read_bytes())  # after v2: still fine, same bytes
    assert again == first
    assert len(stored_files(registry)) == 2
    assert version_rows(registry) == 2


def test_orphan_file_from_a_crash_is_reused(registry, built):
    data = built["v1"].read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    (registry.bundle_dir / f"{sha}.efb").write_bytes(data)  # file placed, row never written
    record = registry.add_bundle(built["v1"])
    assert record.sha256 == sha
    assert stored_files(registry) == [f"{sha}.efb"]


def test_bad_model_names_never_reach_the_file_system(
    registry, model, reference, signing_keys, tmp_path
):
    for bad in ("../x", "a/b", "..", "/etc/passwd"):
        with pytest.raises(ValidationError, match="not a valid name"):
            build_bundle(
                model,
                name=bad,
                version=1,
                reference=reference,
                keys=signing_keys[:2],
                out=tmp_path / "never.efb",
            )
        with pytest.raises(RegistryError, match="not a valid name"):
            registry.push_model(model, name=bad, reference=reference)
        assert registry.get(bad, 1) is None
        assert registry.latest(bad) is None
        assert registry.list_versions(bad) == []
    assert not (tmp_path / "never.efb").exists()
    for bad_sha in ("../x", "a/b", "../" + "0" * 61, "A" * 64, "0" * 63):
        with pytest.raises(RegistryError, match="not a SHA-256"):
            registry.bundle_path(bad_sha)
    assert stored_files(registry) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "bundles",
        "hub.db",
        "hub.db-shm",
        "hub.db-wal",
    ]


def test_oversized_upload_refused(tmp_path, trust_2of3, built):
    size = built["v1"].stat().st_size
    with Registry(
        tmp_path / "hub.db", tmp_path / "bundles", trust_2of3, max_bundle_bytes=size - 1
    ) as r:
        with pytest.raises(RegistryError, match="over the"):
            r.add_bundle(built["v1"])
        with pytest.raises(RegistryError, match="over the"):
            r.add_bundle(built["v1"].read_bytes())
        with pytest.raises(RegistryError, match="over the"):
            r.add_bundle(io.BytesIO(built["v1"].read_bytes()))
        assert stored_files(r) == []
    with Registry(
        tmp_path / "hub.db", tmp_path / "bundles", trust_2of3, max_bundle_bytes=size
    ) as r:
        assert r.add_bundle(built["v1"]).version == 1


class EndlessStream(io.RawIOBase):
    """An upload that never ends (endless-data attack); counts what was read."""

    def __init__(self) -> None:
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = len(buffer)
        buffer[:n] = b"\0" * n
        self.read_bytes += n
        return n


def test_endless_stream_upload_refused_early(tmp_path, trust_2of3):
    stream = EndlessStream()
    with Registry(
        tmp_path / "hub.db", tmp_path / "bundles", trust_2of3, max_bundle_bytes=4 << 20
    ) as r:
        with pytest.raises(RegistryError, match="over the 4194304-byte limit"):
            r.add_bundle(stream)
        assert stored_files(r) == []
    assert stream.read_bytes <= (4 << 20) + (1 << 20)


def test_push_without_signing_keys_refused(tmp_path, trust_2of3, model, reference):
    with Registry(tmp_path / "hub.db", tmp_path / "bundles", trust_2of3) as r:
        with pytest.raises(RegistryError, match="no signing keys"):
            r.push_model(model, name="pump", reference=reference)
        assert stored_files(r) == []


def test_push_with_keys_the_trust_root_does_not_accept_refused(
    tmp_path, trust_2of3, signing_keys, model, reference
):
    with Registry(tmp_path / "hub.db", tmp_path / "bundles", trust_2of3, signing_keys[:1]) as r:
        with pytest.raises(RegistryError, match="1 valid of 2 required"):
            r.push_model(model, name="pump", reference=reference)
        assert stored_files(r) == []


def test_push_invalid_version_refused(registry, model, reference):
    with pytest.raises(RegistryError, match="version"):
        registry.push_model(model, name="pump", version=0, reference=reference)
    assert stored_files(registry) == []


def test_stored_file_changed_on_disk_is_refused_as_reference(registry, built):
    record = registry.add_bundle(built["v1"])
    path = registry.bundle_path(record.sha256)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match="changed on disk"):
        registry.reference("pump", 1)


# --- concurrency ---------------------------------------------------------------------------


def test_concurrent_pushes_of_one_name_get_distinct_monotonic_versions(registry, model, reference):
    results: list[RegisteredVersion] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def push() -> None:
        try:
            for _ in range(3):
                record = registry.push_model(model, name="pump", reference=reference)
                with lock:
                    results.append(record)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=push) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(r.version for r in results) == [1, 2, 3, 4, 5, 6]
    assert [v.version for v in registry.list_versions("pump")] == [1, 2, 3, 4, 5, 6]


def test_two_registries_on_one_file_share_versions(
    tmp_path, trust_2of3, signing_keys, model, reference
):
    args = (tmp_path / "hub.db", tmp_path / "bundles", trust_2of3, signing_keys[:2])
    with Registry(*args) as a, Registry(*args) as b:
        assert a.push_model(model, name="pump", reference=reference).version == 1
        assert b.push_model(model, name="pump", reference=reference).version == 2
        assert a.latest("pump") == b.latest("pump")


def test_push_retries_when_another_process_took_the_version(
    tmp_path, trust_2of3, signing_keys, model, reference, monkeypatch
):
    args = (tmp_path / "hub.db", tmp_path / "bundles", trust_2of3, signing_keys[:2])
    with Registry(*args) as a, Registry(*args) as b:
        a.push_model(model, name="pump", reference=reference, lineage={"by": "a"})
        stale = iter([1])  # b computed its next version before a's push landed
        real = b._next_version
        monkeypatch.setattr(b, "_next_version", lambda name: next(stale, None) or real(name))
        record = b.push_model(model, name="pump", reference=reference, lineage={"by": "b"})
        assert (record.version, record.lineage) == (2, {"by": "b"})
        assert len(stored_files(b)) == 2
