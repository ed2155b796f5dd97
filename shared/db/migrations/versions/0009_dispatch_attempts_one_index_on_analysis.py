"""dispatch_attempts: one index leading with analysis_id

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05

The unique constraint on (analysis_id, attempt_number) is an index that leads with
analysis_id, so it serves every look-up and cascade by analysis; the separate index on
analysis_id alone only cost an entry for every attempt written.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_dispatch_attempts_analysis_id", table_name="dispatch_attempts")


def downgrade() -> None:
    op.create_index("ix_dispatch_attempts_analysis_id", "dispatch_attempts", ["analysis_id"])
