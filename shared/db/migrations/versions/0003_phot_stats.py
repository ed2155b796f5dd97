"""phot_stats: photometry statistics per source

Revision ID: 0003
Revises: 0002
Existing sources get their rows from `skyhook phot-stats recompute` (or PATCH /api/phot_stats).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import shared.db.types

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "phot_stats",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("obj_id", sa.String(length=255), nullable=False),
        sa.Column("num_obs_global", sa.Integer(), nullable=False),
        sa.Column(
            "num_obs_per_filter",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("num_det_global", sa.Integer(), nullable=False),
        sa.Column("num_det_no_forced_phot_global", sa.Integer(), nullable=False),
        sa.Column(
            "num_det_per_filter",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("first_detected_mjd", sa.Float(), nullable=True),
        sa.Column("first_detected_mag", sa.Float(), nullable=True),
        sa.Column("first_detected_filter", sa.String(length=64), nullable=True),
        sa.Column("last_detected_mjd", sa.Float(), nullable=True),
        sa.Column("last_detected_mag", sa.Float(), nullable=True),
        sa.Column("last_detected_filter", sa.String(length=64), nullable=True),
        sa.Column("first_detected_no_forced_phot_mjd", sa.Float(), nullable=True),
        sa.Column("first_detected_no_forced_phot_mag", sa.Float(), nullable=True),
        sa.Column("first_detected_no_forced_phot_filter", sa.String(length=64), nullable=True),
        sa.Column("last_detected_no_forced_phot_mjd", sa.Float(), nullable=True),
        sa.Column("last_detected_no_forced_phot_mag", sa.Float(), nullable=True),
        sa.Column("last_detected_no_forced_phot_filter", sa.String(length=64), nullable=True),
        sa.Column("recent_obs_mjd", sa.Float(), nullable=True),
        sa.Column(
            "predetection_mjds",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("last_non_detection_mjd", sa.Float(), nullable=True),
        sa.Column("time_to_non_detection", sa.Float(), nullable=True),
        sa.Column("mean_mag_global", sa.Float(), nullable=True),
        sa.Column(
            "mean_mag_per_filter",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "mean_color",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("peak_mjd_global", sa.Float(), nullable=True),
        sa.Column(
            "peak_mjd_per_filter",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("peak_mag_global", sa.Float(), nullable=True),
        sa.Column(
            "peak_mag_per_filter",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("faintest_mag_global", sa.Float(), nullable=True),
        sa.Column(
            "faintest_mag_per_filter",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("deepest_limit_global", sa.Float(), nullable=True),
        sa.Column(
            "deepest_limit_per_filter",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("rise_rate", sa.Float(), nullable=True),
        sa.Column("decay_rate", sa.Float(), nullable=True),
        sa.Column("mag_rms_global", sa.Float(), nullable=True),
        sa.Column(
            "mag_rms_per_filter",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("last_update", shared.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_full_update", shared.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", shared.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("modified", shared.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["obj_id"], ["objs.id"], name=op.f("fk_phot_stats_obj_id_objs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_phot_stats")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("phot_stats", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_phot_stats_created_at"), ["created_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_phot_stats_first_detected_mjd"), ["first_detected_mjd"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_phot_stats_last_detected_mjd"), ["last_detected_mjd"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_phot_stats_num_det_global"), ["num_det_global"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_phot_stats_obj_id"), ["obj_id"], unique=True)
        batch_op.create_index(
            batch_op.f("ix_phot_stats_peak_mag_global"), ["peak_mag_global"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("phot_stats", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_phot_stats_peak_mag_global"))
        batch_op.drop_index(batch_op.f("ix_phot_stats_obj_id"))
        batch_op.drop_index(batch_op.f("ix_phot_stats_num_det_global"))
        batch_op.drop_index(batch_op.f("ix_phot_stats_last_detected_mjd"))
        batch_op.drop_index(batch_op.f("ix_phot_stats_first_detected_mjd"))
        batch_op.drop_index(batch_op.f("ix_phot_stats_created_at"))

    op.drop_table("phot_stats")
