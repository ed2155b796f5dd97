"""access versions: counters raised by triggers when principals or services change

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05

``access_versions`` holds two counters, ``principals`` and ``services``. Triggers raise the
first in any transaction that deletes a user or token, changes a user's name, admin flag or
ACLs, a token's hash or owner, or any group membership; the second in any that changes or
deletes an analysis service or changes whom one is shared with. Deleting a group or a user
reaches the memberships and sharing rows through their foreign keys' cascades, which fire
the triggers of those tables. A process that caches principals or services keeps the
counter it read with each copy; a write that relies on a copy reads the counter again in its
own transaction and refuses the copy when it moved (see ``shared.domain.access_versions``).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, counter, events): what changes a cached principal or service.
WATCHED = (
    ("users", "principals", ("DELETE", "UPDATE OF id, username, is_admin, acls")),
    ("tokens", "principals", ("DELETE", "UPDATE OF token_hash, user_id")),
    ("group_users", "principals", ("INSERT", "DELETE", "UPDATE")),
    ("analysis_services", "services", ("DELETE", "UPDATE")),
    ("analysis_service_groups", "services", ("INSERT", "DELETE", "UPDATE")),
)
FUNCTION = "skyhook_raise_access_version"


def _trigger_name(table: str, event: str) -> str:
    return f"{table}_{event.split()[0].lower()}_raises_access_version"


def upgrade() -> None:
    op.create_table(
        "access_versions",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_access_versions")),
    )
    op.execute("INSERT INTO access_versions (name, version) VALUES ('principals', 0)")
    op.execute("INSERT INTO access_versions (name, version) VALUES ('services', 0)")
    if op.get_bind().dialect.name == "postgresql":
        _create_postgresql_triggers()
    else:
        _create_sqlite_triggers()


def _create_postgresql_triggers() -> None:
    op.execute(
        f"CREATE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "UPDATE access_versions SET version = version + 1 WHERE name = TG_ARGV[0]; "
        "RETURN NULL; END $$"
    )
    for table, counter, events in WATCHED:
        # Once per statement, however many rows it touched; TRUNCATE too.
        for event in (*events, "TRUNCATE"):
            op.execute(
                f"CREATE TRIGGER {_trigger_name(table, event)} AFTER {event} ON {table} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION {FUNCTION}('{counter}')"
            )


def _create_sqlite_triggers() -> None:
    for table, counter, events in WATCHED:
        for event in events:
            op.execute(
                f"CREATE TRIGGER {_trigger_name(table, event)} AFTER {event} ON {table} "
                f"BEGIN UPDATE access_versions SET version = version + 1 "
                f"WHERE name = '{counter}'; END"
            )


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for table, _, events in WATCHED:
        for event in (*events, "TRUNCATE") if postgresql else events:
            on_table = f" ON {table}" if postgresql else ""
            op.execute(f"DROP TRIGGER IF EXISTS {_trigger_name(table, event)}{on_table}")
    if postgresql:
        op.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}()")
    op.drop_table("access_versions")
