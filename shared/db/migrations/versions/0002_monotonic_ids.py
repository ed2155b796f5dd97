"""monotonic ids: SQLite tables get AUTOINCREMENT so a deleted row's id is never reused

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 15:30:00

PostgreSQL's sequences never hand out an id twice: nothing to do there. On SQLite an
``INTEGER PRIMARY KEY`` without ``AUTOINCREMENT`` gives the next row ``max(id) + 1``, so the id of
a deleted last row comes back. Every table whose key is one integer ``id`` is rebuilt with
``AUTOINCREMENT`` (SQLite cannot add it in place): the new table is created from the stored
definition, the rows are copied with their ids, the old table is dropped, the new one renamed
and the indexes recreated. Copying the ids sets the table's counter to the current maximum.
The migration environment switches foreign keys off on SQLite, so dropping a table does not
cascade into the rows that reference it; the check at the end proves every reference still holds.
"""

import re
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# "CONSTRAINT pk_users PRIMARY KEY (id)" as SQLAlchemy writes a one-column integer key.
_TABLE_KEY = re.compile(r",\s*CONSTRAINT (\w+) PRIMARY KEY \(id\)")
_ID_COLUMN = re.compile(r"\bid INTEGER NOT NULL(?=,)")
_COLUMN_KEY = re.compile(r"\bid INTEGER NOT NULL CONSTRAINT (\w+) PRIMARY KEY AUTOINCREMENT")


def _with_autoincrement(create_sql: str) -> str | None:
    """The definition with ``AUTOINCREMENT`` on ``id``; None when the table has no such key."""
    key = _TABLE_KEY.search(create_sql)
    if key is None or _ID_COLUMN.search(create_sql) is None:
        return None
    without_key = _TABLE_KEY.sub("", create_sql, count=1)
    column_key = f"id INTEGER NOT NULL CONSTRAINT {key.group(1)} PRIMARY KEY AUTOINCREMENT"
    return _ID_COLUMN.sub(column_key, without_key, count=1)


def _without_autoincrement(create_sql: str) -> str | None:
    key = _COLUMN_KEY.search(create_sql)
    if key is None:
        return None
    plain = _COLUMN_KEY.sub("id INTEGER NOT NULL", create_sql, count=1)
    closing = plain.rstrip().rindex(")")
    return f"{plain[:closing].rstrip()}, \n\tCONSTRAINT {key.group(1)} PRIMARY KEY (id)\n)"


def _rebuild(connection: sa.Connection, table: str, create_sql: str) -> None:
    indexes = [
        sql
        for (sql,) in connection.execute(
            sa.text(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = :table "
                "AND sql IS NOT NULL"
            ),
            {"table": table},
        )
    ]
    staging = f"{table}__rebuild"
    head = re.compile(rf"^CREATE TABLE \"?{re.escape(table)}\"?")
    connection.exec_driver_sql(head.sub(f'CREATE TABLE "{staging}"', create_sql, count=1))
    connection.exec_driver_sql(f'INSERT INTO "{staging}" SELECT * FROM "{table}"')
    connection.exec_driver_sql(f'DROP TABLE "{table}"')
    connection.exec_driver_sql(f'ALTER TABLE "{staging}" RENAME TO "{table}"')
    for sql in indexes:
        connection.exec_driver_sql(sql)


def _rebuild_all(transform: Callable[[str], str | None]) -> None:
    connection = op.get_bind()
    if connection.dialect.name != "sqlite":
        return
    if connection.exec_driver_sql("PRAGMA foreign_keys").scalar():
        raise RuntimeError(
            "SQLite foreign keys must be off while tables are rebuilt "
            "(run migrations through skyhook db upgrade)"
        )
    definitions = connection.execute(
        sa.text(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite_%' AND name != 'alembic_version' ORDER BY name"
        )
    ).all()
    for table, create_sql in definitions:
        rebuilt = transform(create_sql)
        if rebuilt is not None:
            _rebuild(connection, table, rebuilt)
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    if broken:
        raise RuntimeError(f"Rebuilding the tables broke references: {broken[:5]}")


def upgrade() -> None:
    _rebuild_all(_with_autoincrement)


def downgrade() -> None:
    _rebuild_all(_without_autoincrement)
