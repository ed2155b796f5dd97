"""obj_analyses: drop the index on invalid_after over every analysis

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06

The sweeps read the running analyses through ``ix_obj_analyses_running`` (invalid_after,
running rows only). The index on invalid_after over every analysis served no statement; it
cost an entry for each analysis created and for each update that ends one.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_obj_analyses_invalid_after", table_name="obj_analyses")


def downgrade() -> None:
    op.create_index("ix_obj_analyses_invalid_after", "obj_analyses", ["invalid_after"])
