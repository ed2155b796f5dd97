"""capped count index: obj_analyses (obj_id, author_id, status) replaces (obj_id)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05

Every start counts the author's analyses on the object toward the cap. Through the index on
``obj_id`` alone that count read every analysis of the object, whoever its author and
whatever its status, from the table; with ``(obj_id, author_id, status)`` it reads only the
ones it counts, from the index. The new index also serves every look-up by object (its first
column), so the old one goes and the table keeps as many indexes as before.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_obj_analyses_obj_author_status", "obj_analyses", ["obj_id", "author_id", "status"]
    )
    op.drop_index("ix_obj_analyses_obj_id", table_name="obj_analyses")


def downgrade() -> None:
    op.create_index("ix_obj_analyses_obj_id", "obj_analyses", ["obj_id"])
    op.drop_index("ix_obj_analyses_obj_author_status", table_name="obj_analyses")
