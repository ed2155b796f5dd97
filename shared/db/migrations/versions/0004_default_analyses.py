"""default analyses

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import shared.db.types

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "default_analyses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("analysis_service_id", sa.Integer(), nullable=False),
        sa.Column("author_id", sa.Integer(), nullable=False),
        sa.Column(
            "default_analysis_parameters",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "source_filter",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("daily_limit", sa.Integer(), nullable=False),
        sa.Column("show_parameters", sa.Boolean(), nullable=False),
        sa.Column("show_plots", sa.Boolean(), nullable=False),
        sa.Column("show_corner", sa.Boolean(), nullable=False),
        sa.Column("created_at", shared.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("modified", shared.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["analysis_service_id"],
            ["analysis_services.id"],
            name=op.f("fk_default_analyses_analysis_service_id_analysis_services"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["author_id"],
            ["users.id"],
            name=op.f("fk_default_analyses_author_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_default_analyses")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("default_analyses", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_default_analyses_analysis_service_id"),
            ["analysis_service_id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_default_analyses_author_id"), ["author_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_default_analyses_created_at"), ["created_at"], unique=False
        )

    op.create_table(
        "default_analysis_groups",
        sa.Column("default_analysis_id", sa.Integer(), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["default_analysis_id"],
            ["default_analyses.id"],
            name=op.f("fk_default_analysis_groups_default_analysis_id_default_analyses"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["groups.id"],
            name=op.f("fk_default_analysis_groups_group_id_groups"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "default_analysis_id", "group_id", name=op.f("pk_default_analysis_groups")
        ),
    )
    with op.batch_alter_table("default_analysis_groups", schema=None) as batch_op:
        batch_op.create_index("ix_default_analysis_groups_group_id", ["group_id"], unique=False)

    op.create_table(
        "default_analysis_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("default_analysis_id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("obj_id", sa.String(length=255), nullable=False),
        sa.Column("analysis_id", sa.Integer(), nullable=True),
        sa.Column("created_at", shared.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["default_analysis_id"],
            ["default_analyses.id"],
            name=op.f("fk_default_analysis_runs_default_analysis_id_default_analyses"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_default_analysis_runs")),
        sa.UniqueConstraint(
            "default_analysis_id",
            "event_id",
            name=op.f("uq_default_analysis_runs_default_analysis_id"),
        ),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("default_analysis_runs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_default_analysis_runs_default_created",
            ["default_analysis_id", "created_at"],
            unique=False,
        )

    op.create_table(
        "pending_photometry_triggers",
        sa.Column("default_analysis_id", sa.Integer(), nullable=False),
        sa.Column("obj_id", sa.String(length=255), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("due_at", shared.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["default_analysis_id"],
            ["default_analyses.id"],
            name=op.f("fk_pending_photometry_triggers_default_analysis_id_default_analyses"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["obj_id"],
            ["objs.id"],
            name=op.f("fk_pending_photometry_triggers_obj_id_objs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "default_analysis_id", "obj_id", name=op.f("pk_pending_photometry_triggers")
        ),
    )
    with op.batch_alter_table("pending_photometry_triggers", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_pending_photometry_triggers_due_at"), ["due_at"], unique=False
        )

    with op.batch_alter_table("obj_analyses", schema=None) as batch_op:
        batch_op.add_column(sa.Column("default_analysis_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("trigger", sa.Text(), nullable=True))


def downgrade() -> None:

    with op.batch_alter_table("obj_analyses", schema=None) as batch_op:
        batch_op.drop_column("trigger")
        batch_op.drop_column("default_analysis_id")

    with op.batch_alter_table("pending_photometry_triggers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pending_photometry_triggers_due_at"))

    op.drop_table("pending_photometry_triggers")
    with op.batch_alter_table("default_analysis_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_default_analysis_runs_default_created")

    op.drop_table("default_analysis_runs")
    with op.batch_alter_table("default_analysis_groups", schema=None) as batch_op:
        batch_op.drop_index("ix_default_analysis_groups_group_id")

    op.drop_table("default_analysis_groups")
    with op.batch_alter_table("default_analyses", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_default_analyses_created_at"))
        batch_op.drop_index(batch_op.f("ix_default_analyses_author_id"))
        batch_op.drop_index(batch_op.f("ix_default_analyses_analysis_service_id"))

    op.drop_table("default_analyses")
