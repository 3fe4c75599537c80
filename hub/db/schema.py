"""The whole schema of ``hub.db``, in one place: one ordered set of named migrations.

Every table of the hub's database is created and changed here, and only here. Add a
change as a new function decorated with ``@MIGRATIONS(name="00NN_what")`` at the end;
never edit one that has shipped (a database records the names it has applied, in the
``migrations`` table, and applies each once). :func:`hub.db.connection.open_database`
applies what is missing whenever a part of the hub opens the file.

Before this module the store, the registry, the tokens, the audit log, the directive
signer, the rollout store and the alerter each created their own tables (the registry
in a second migration set, ``edgefleet.registry``; the others with ``CREATE TABLE IF NOT
EXISTS``). Migrations 0009-0014 adopt those tables: ``IF NOT EXISTS`` makes them no-ops
on a database written by that release (``tests/fixtures/hub-db-v1.sqlite``) and create
the tables on a new one.
"""

from __future__ import annotations

from typing import Final

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from hub.rollups import HOUR_S


class _HubMigrations(Migrations):
    migrations_table = "migrations"


#: Every table of ``hub.db``, as one ordered list of named migrations.
MIGRATIONS: Final = _HubMigrations("edgefleet-hub")


@MIGRATIONS(name="0001_devices_windows_events")
def _m0001(db: Database) -> None:
    db.execute(
        "CREATE TABLE devices ("
        " id TEXT PRIMARY KEY, tags TEXT NOT NULL DEFAULT '[]', enrolled_at REAL,"
        " last_seen REAL, online INTEGER NOT NULL DEFAULT 0, offline_since REAL,"
        " active_model TEXT, active_version INTEGER, previous_model TEXT,"
        " previous_version INTEGER, shadow_model TEXT, shadow_version INTEGER,"
        " health TEXT NOT NULL DEFAULT '{}', buffer_depth INTEGER NOT NULL DEFAULT 0,"
        " state TEXT)"
    )
    db.execute(
        "CREATE TABLE windows ("
        " id INTEGER PRIMARY KEY, device_id TEXT NOT NULL, seq_lo INTEGER NOT NULL,"
        " seq_hi INTEGER NOT NULL, model TEXT NOT NULL, version INTEGER NOT NULL,"
        ' role TEXT NOT NULL, start REAL NOT NULL, "end" REAL NOT NULL, n INTEGER NOT NULL,'
        " payload TEXT NOT NULL,"
        " UNIQUE (device_id, seq_lo, seq_hi, role, model, version))"
    )
    db.execute("CREATE INDEX windows_device_lo ON windows (device_id, seq_lo)")
    db.execute("CREATE INDEX windows_model_start ON windows (model, version, start)")
    db.execute("CREATE TABLE device_seqs (device_id TEXT PRIMARY KEY, contiguous INTEGER NOT NULL)")
    db.execute(
        "CREATE TABLE events ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT NOT NULL, ts REAL NOT NULL,"
        " kind TEXT NOT NULL, model TEXT, version INTEGER, directive_seq INTEGER,"
        " progress REAL, detail TEXT NOT NULL)"
    )
    db.execute("CREATE INDEX events_device ON events (device_id, id)")


@MIGRATIONS(name="0002_device_epochs")
def _m0002(db: Database) -> None:
    # One row per sequence space a device used (see the module doc, "Epochs").
    db.execute(
        "CREATE TABLE device_epochs ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT NOT NULL, epoch TEXT NOT NULL,"
        " base INTEGER NOT NULL, since REAL NOT NULL, UNIQUE (device_id, epoch))"
    )


@MIGRATIONS(name="0003_hourly_rollups")
def _m0003(db: Database) -> None:
    # Per (model, version, role, device, hour): the merge of the device's windows that
    # start in that hour; device_id '' holds the fleet-wide merge of the hour.
    db.execute(
        "CREATE TABLE rollups ("
        " model TEXT NOT NULL, version INTEGER NOT NULL, role TEXT NOT NULL,"
        " device_id TEXT NOT NULL, hour INTEGER NOT NULL, n INTEGER NOT NULL,"
        " windows INTEGER NOT NULL, payload TEXT NOT NULL,"
        " PRIMARY KEY (model, version, role, device_id, hour))"
    )
    # Buckets whose windows changed since they were last rolled up.
    db.execute(
        "CREATE TABLE rollup_dirty ("
        " model TEXT NOT NULL, version INTEGER NOT NULL, role TEXT NOT NULL,"
        " device_id TEXT NOT NULL, hour INTEGER NOT NULL,"
        " PRIMARY KEY (model, version, role, device_id, hour))"
    )
    db.execute(
        "CREATE INDEX windows_device_model_start ON windows (device_id, model, version, role,"
        " start)"
    )
    # Windows stored before this migration: every bucket they fall in is dirty. SQL's
    # division may round across an hour boundary where hour_of (a floor) does not, so
    # the hour before is marked too: rolling up a bucket that did not change is harmless.
    for shift in (0, 1):
        db.execute(
            "INSERT OR IGNORE INTO rollup_dirty SELECT DISTINCT model, version, role,"
            " device_id, CAST(start / ? AS INTEGER) - ? FROM windows",
            [HOUR_S, shift],
        )


@MIGRATIONS(name="0004_drop_windows_device_lo")
def _m0004(db: Database) -> None:
    # The UNIQUE (device_id, seq_lo, seq_hi, ...) index serves every look-up by device
    # and sequence (covering, even); this one only cost a b-tree insert per window.
    db.execute("DROP INDEX IF EXISTS windows_device_lo")


@MIGRATIONS(name="0005_enrollments")
def _m0005(db: Database) -> None:
    # Enrolment records (hub.enroll) live in the store's file; the store reads them to
    # hide revoked devices. ``directive_cleared_at``: when the hub removed a revoked
    # device's retained directive from the broker.
    db.execute(
        "CREATE TABLE IF NOT EXISTS enrollments (device_id TEXT PRIMARY KEY,"
        " enrolled_at REAL NOT NULL, rotated_at REAL, revoked_at REAL)"
    )
    if "directive_cleared_at" not in db["enrollments"].columns_dict:
        db.execute("ALTER TABLE enrollments ADD COLUMN directive_cleared_at REAL")


#: Windows longer than this (coarsened by a device's outbox; a device closes one every
#: 60 s by default) are found by their end in a small partial index; shorter ones by
#: their start, from ``since - LONG_WINDOW_S``.
LONG_WINDOW_S: Final = 300
#: Length of a fleet minute bucket (seconds).
MINUTE_S: Final = 60


@MIGRATIONS(name="0006_windows_long_span")
def _m0006(db: Database) -> None:
    # Exact `since` queries need the windows that start before `since`'s hour and end
    # after `since`: short ones start at most LONG_WINDOW_S before it (start index),
    # long ones (rare: coarsened by an outbox) are in this partial index by their end.
    db.execute(
        'CREATE INDEX IF NOT EXISTS windows_long_span ON windows (model, version, role, "end")'
        f' WHERE "end" - start > {LONG_WINDOW_S}'
    )


@MIGRATIONS(name="0007_fleet_minute_rollups")
def _m0007(db: Database) -> None:
    # Per (model, version, role, minute): the fleet-wide merge of the windows that start
    # in that minute, so an exact `since` inside an hour reads at most a minute of
    # stored windows. Minutes whose windows changed are marked at ingest.
    db.execute(
        "CREATE TABLE rollups_minute ("
        " model TEXT NOT NULL, version INTEGER NOT NULL, role TEXT NOT NULL,"
        " minute INTEGER NOT NULL, n INTEGER NOT NULL, windows INTEGER NOT NULL,"
        " payload TEXT NOT NULL, PRIMARY KEY (model, version, role, minute))"
    )
    db.execute(
        "CREATE TABLE rollup_minute_dirty ("
        " model TEXT NOT NULL, version INTEGER NOT NULL, role TEXT NOT NULL,"
        " minute INTEGER NOT NULL, PRIMARY KEY (model, version, role, minute))"
    )
    for shift in (0, 1):  # as in 0003: SQL's division may round across a boundary
        db.execute(
            "INSERT OR IGNORE INTO rollup_minute_dirty SELECT DISTINCT model, version, role,"
            " CAST(start / ? AS INTEGER) - ? FROM windows",
            [MINUTE_S, shift],
        )


@MIGRATIONS(name="0008_epoch_marks")
def _m0008(db: Database) -> None:
    # Each epoch's own contiguous mark (its numbering), for the epochs that are not the
    # device's current one: an older epoch still alive is acknowledged too.
    if "contiguous" not in db["device_epochs"].columns_dict:
        db.execute("ALTER TABLE device_epochs ADD COLUMN contiguous INTEGER NOT NULL DEFAULT 0")


@MIGRATIONS(name="0009_registry")
def _m0009(db: Database) -> None:
    # The model registry (hub.registry): model names, and one row per registered bundle.
    db.execute(
        "CREATE TABLE IF NOT EXISTS models ("
        " name TEXT PRIMARY KEY, created REAL NOT NULL, description TEXT NOT NULL DEFAULT '')"
    )
    db.execute(
        "CREATE TABLE IF NOT EXISTS model_versions ("
        " name TEXT NOT NULL REFERENCES models (name), version INTEGER NOT NULL,"
        " sha256 TEXT NOT NULL UNIQUE, size INTEGER NOT NULL, created REAL NOT NULL,"
        " manifest TEXT NOT NULL, lineage TEXT NOT NULL, inputs TEXT NOT NULL,"
        " outputs TEXT NOT NULL, quantization TEXT NOT NULL,"
        " status TEXT NOT NULL DEFAULT 'registered'"
        " CHECK (status IN ('registered', 'active', 'retired')),"
        " PRIMARY KEY (name, version))"
    )


@MIGRATIONS(name="0010_api_tokens")
def _m0010(db: Database) -> None:
    # API tokens (hub.tokens): only the SHA-256 of each secret is kept.
    db.execute(
        "CREATE TABLE IF NOT EXISTS api_tokens (id TEXT PRIMARY KEY, name TEXT NOT NULL,"
        " secret_sha256 TEXT NOT NULL, scopes TEXT NOT NULL, created REAL NOT NULL,"
        " revoked INTEGER NOT NULL DEFAULT 0)"
    )


@MIGRATIONS(name="0011_audit")
def _m0011(db: Database) -> None:
    # The hash-chained audit log (hub.audit).
    db.execute(
        "CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " ts REAL NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL,"
        " details TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL)"
    )


@MIGRATIONS(name="0012_directive_seqs")
def _m0012(db: Database) -> None:
    # Each device's last directive sequence (hub.dispatch), reserved before use.
    db.execute(
        "CREATE TABLE IF NOT EXISTS directive_seqs (device_id TEXT PRIMARY KEY,"
        " seq INTEGER NOT NULL)"
    )


@MIGRATIONS(name="0013_rollouts")
def _m0013(db: Database) -> None:
    # Rollouts (hub.rollouts.RolloutStore) as versioned JSON documents.
    db.execute(
        "CREATE TABLE IF NOT EXISTS rollouts ("
        " id TEXT PRIMARY KEY, model TEXT NOT NULL, state TEXT NOT NULL,"
        " active INTEGER NOT NULL, version INTEGER NOT NULL, doc TEXT NOT NULL)"
    )


@MIGRATIONS(name="0014_alerts")
def _m0014(db: Database) -> None:
    # Alert transitions (hub.alerts) and how their webhook delivery went.
    db.execute(
        "CREATE TABLE IF NOT EXISTS alerts (id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " rule TEXT NOT NULL, state TEXT NOT NULL, value REAL, ts REAL NOT NULL,"
        " delivery TEXT NOT NULL DEFAULT 'pending')"
    )


@MIGRATIONS(name="0015_windows_original")
def _m0015(db: Database) -> None:
    # A window the hub restamped (it ended more than a day after the hub's clock:
    # hub.plausibility) is stored at the hub's times (start, "end" and payload, so every
    # query and roll-up sees them); the device's own document is kept here, and a resent
    # range is compared on it. NULL: payload is what the device sent.
    db.execute("ALTER TABLE windows ADD COLUMN original TEXT")
