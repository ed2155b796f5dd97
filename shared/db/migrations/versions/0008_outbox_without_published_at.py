"""outbox without published_at: a row is deleted once its message is published

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05

The relay deletes a row once the broker has its message, so no row ever had ``published_at``
set; the column's index still took an entry for every event written and every one deleted.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db.types

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Plain ALTER TABLE, not alembic's batch mode: SQLite (3.35 and later) drops and adds a column
# in place, so the table keeps its AUTOINCREMENT and its sequence.


def upgrade() -> None:
    op.drop_index("ix_outbox_published_at", table_name="outbox")
    op.drop_column("outbox", "published_at")


def downgrade() -> None:
    op.add_column(
        "outbox",
        sa.Column("published_at", shared.db.types.UTCDateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_outbox_published_at", "outbox", ["published_at"])
