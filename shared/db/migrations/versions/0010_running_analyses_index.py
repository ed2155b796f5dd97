"""obj_analyses: no index on a column that changes while an analysis runs

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05

Each analysis is updated three or four times while it runs (claimed, inputs stored, accepted,
completed). Two indexes held ``status``, so almost every one of those updates wrote a new
entry into all nine indexes of the table, and the cap's count walked every old version. With
no index on a changing column and room left on each page (fillfactor), PostgreSQL writes them
beside the row as HOT updates. The running analyses, which the sweeps read, get a partial
index on ``finished_at IS NULL``: ``finished_at`` is set once, by the transition to a final
status, so only that update (and the insert) touches the indexes.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db.types

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RUNNING = "('queued', 'dispatching', 'pending')"


def upgrade() -> None:
    op.add_column(
        "obj_analyses",
        sa.Column("finished_at", shared.db.types.UTCDateTime(timezone=True), nullable=True),
    )
    op.execute(f"UPDATE obj_analyses SET finished_at = last_activity WHERE status NOT IN {RUNNING}")
    op.create_index("ix_obj_analyses_obj_author", "obj_analyses", ["obj_id", "author_id"])
    op.create_index(
        "ix_obj_analyses_running",
        "obj_analyses",
        ["invalid_after"],
        postgresql_where=sa.text("finished_at IS NULL"),
        sqlite_where=sa.text("finished_at IS NULL"),
    )
    op.drop_index("ix_obj_analyses_obj_author_status", table_name="obj_analyses")
    op.drop_index("ix_obj_analyses_status", table_name="obj_analyses")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE obj_analyses SET (fillfactor = 50)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE obj_analyses RESET (fillfactor)")
    op.create_index("ix_obj_analyses_status", "obj_analyses", ["status"])
    op.create_index(
        "ix_obj_analyses_obj_author_status", "obj_analyses", ["obj_id", "author_id", "status"]
    )
    op.drop_index("ix_obj_analyses_running", table_name="obj_analyses")
    op.drop_index("ix_obj_analyses_obj_author", table_name="obj_analyses")
    op.drop_column("obj_analyses", "finished_at")
