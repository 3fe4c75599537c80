"""The hub database: one schema, one way to open it, and in-place migration of a
``hub.db`` written by the release before (``tests/fixtures/hub-db-v1.sqlite``, made by
``tests/fixtures/make_hub_db_v1.py``)."""

from __future__ import annotations

import ast
import shutil
import sqlite3
import stat
from pathlib import Path

import pytest
import sqlite_utils
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.contract.trust import TrustRoot
from hub.alerts import read_alerts
from hub.audit import AuditLog
from hub.db import MIGRATIONS, DatabaseError, applied_migrations, migrate, open_database
from hub.dispatch import DirectiveSigner
from hub.registry import Registry
from hub.rollouts import RolloutStore
from hub.store import Store
from hub.tokens import TokenStore

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "hub-db-v1.sqlite"


def schema(path: Path) -> dict[str, list[tuple[str, str, int, int]]]:
    """Every table's columns (name, type, not null, primary key), from SQLite itself."""
    with sqlite3.connect(path) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
                " AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        return {
            t: [(c[1], c[2], c[3], c[5]) for c in conn.execute(f"PRAGMA table_info({t})")]
            for t in tables
        }


@pytest.fixture
def legacy(tmp_path) -> Path:
    db = tmp_path / "hub.db"
    shutil.copyfile(FIXTURE, db)
    return db


def test_a_hub_db_of_the_previous_release_migrates_in_place_and_keeps_every_row(legacy):
    with sqlite3.connect(legacy) as conn:
        before = applied_migrations(conn)
    assert "0009_registry" not in before  # the fixture really is the old layout
    conn = open_database(legacy)
    try:
        assert applied_migrations(conn) == [
            *before,
            *(
                m.name
                for m in MIGRATIONS.pending(sqlite_utils.Database(sqlite3.connect(":memory:")))
                if m.name not in before
            ),
        ]
        assert len(applied_migrations(conn)) == len(
            MIGRATIONS.pending(sqlite_utils.Database(sqlite3.connect(":memory:")))
        )
        assert migrate(conn) == []  # reopening applies nothing twice
    finally:
        conn.close()
    with Store(legacy) as store:
        windows = store.windows_for(device="pump-001")
        assert [(w.model_name, w.n) for w in windows] == [("demo", 11), ("demo", 12)]
        assert [r.event.detail for r in store.events(device="pump-001")] == ["v1"]
        assert store.contiguous("pump-001") == 2
    key = Ed25519PrivateKey.generate()
    trust = TrustRoot.from_keys([key.public_key()], threshold=1)
    with Registry(legacy, legacy.parent / "bundles", trust) as registry:
        [version] = registry.list_versions("pump")
        assert version.version == 1 and version.quantization == "int8"
    tokens = TokenStore(legacy)
    try:
        assert [t.name for t in tokens.list()] == ["ci"]
    finally:
        tokens.close()
    with AuditLog(legacy) as audit:
        assert [e.action for e in audit.entries()] == ["push"]
        assert audit.verify().ok
    assert DirectiveSigner(legacy, [key]).next_seq("pump-001") == 2
    rollouts = RolloutStore(legacy)
    try:
        assert rollouts.get("first").rollout.spec.target_version == 1
    finally:
        rollouts.close()
    assert [a.rule for a in read_alerts(legacy).alerts] == ["drift"]


def test_a_migrated_database_has_the_schema_of_a_new_one(legacy, tmp_path):
    """The adopting migrations create exactly the tables the parts used to create."""
    open_database(legacy).close()
    fresh = tmp_path / "fresh.db"
    open_database(fresh).close()
    assert schema(legacy) == schema(fresh)


def test_a_new_hub_db_is_private_and_in_wal_mode(tmp_path):
    path = tmp_path / "data" / "hub.db"
    conn = open_database(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    finally:
        conn.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_file_that_is_not_a_database_is_refused_in_one_line(tmp_path):
    path = tmp_path / "hub.db"
    path.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(DatabaseError, match=r"hub.db: cannot open \(file is not a database\)"):
        open_database(path)


def test_only_hub_db_creates_tables_or_connects():
    """The whole schema is readable in one place: no other module of the hub creates or
    alters a table, or connects to SQLite by itself."""
    offenders = []
    for path in sorted((ROOT / "hub").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("hub/db/"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), rel)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value.upper()
                if "CREATE TABLE" in text or "ALTER TABLE" in text or "CREATE INDEX" in text:
                    offenders.append(f"{rel}:{node.lineno} DDL")
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "connect"
                and isinstance(node.value, ast.Name)
                and node.value.id == "sqlite3"
            ):
                offenders.append(f"{rel}:{node.lineno} sqlite3.connect")
    assert not offenders, offenders
