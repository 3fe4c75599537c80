"""The hub's database, ``hub.db``: one schema (:mod:`hub.db.schema`) and one way to open
it (:mod:`hub.db.connection`). The parts that keep state each hold a connection from
:func:`open_database`; none creates or alters a table itself."""

from hub.db.connection import (
    DatabaseError,
    applied_migrations,
    migrate,
    open_database,
    open_read_only,
)
from hub.db.schema import MIGRATIONS

__all__ = [
    "MIGRATIONS",
    "DatabaseError",
    "applied_migrations",
    "migrate",
    "open_database",
    "open_read_only",
]
