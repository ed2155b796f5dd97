"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25 00:58:23.877380
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import shared.db.types

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "analysis_services",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("display_name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("version", sa.String(length=255), nullable=True),
        sa.Column("contact_name", sa.String(length=255), nullable=True),
        sa.Column("contact_email", sa.String(length=255), nullable=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column(
            "optional_analysis_parameters",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("authentication_type", sa.String(length=32), nullable=False),
        sa.Column("authinfo_ciphertext", sa.Text(), nullable=True),
        sa.Column("signing_secret_ciphertext", sa.Text(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("analysis_type", sa.String(length=32), nullable=False),
        sa.Column(
            "input_data_types",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("inputs_format", sa.String(length=16), nullable=False),
        sa.Column("timeout", sa.Float(), nullable=False),
        sa.Column("upload_only", sa.Boolean(), nullable=False),
        sa.Column("is_summary", sa.Boolean(), nullable=False),
        sa.Column("display_on_resource_dropdown", sa.Boolean(), nullable=False),
        sa.Column("created_at", shared.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("modified", shared.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_analysis_services")),
        sa.UniqueConstraint("name", name=op.f("uq_analysis_services_name")),
    )
    with op.batch_alter_table("analysis_services", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_analysis_services_created_at"), ["created_at"], unique=False
        )

    op.create_table(
        "groups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", shared.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("modified", shared.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_groups")),
        sa.UniqueConstraint("name", name=op.f("uq_groups_name")),
    )
    with op.batch_alter_table("groups", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_groups_created_at"), ["created_at"], unique=False)

    op.create_table(
        "instruments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("telescope", sa.String(length=255), nullable=True),
        sa.Column(
            "filters",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", shared.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("modified", shared.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instruments")),
        sa.UniqueConstraint("name", name=op.f("uq_instruments_name")),
    )
    with op.batch_alter_table("instruments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_instruments_created_at"), ["created_at"], unique=False)

    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.String(length=36), nullable=False),
        sa.Column("routing_key", sa.String(length=255), nullable=False),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", shared.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("published_at", shared.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sa.UniqueConstraint("message_id", name=op.f("uq_outbox_message_id")),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_outbox_published_at"), ["published_at"], unique=False)

    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=255), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column(
            "acls",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "preferences",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("secrets_ciphertext", sa.Text(), nullable=True),
        sa.Column("created_at", shared.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("modified", shared.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
    )
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_users_created_at"), ["created_at"], unique=False)

    op.create_table(
        "analysis_service_groups",
        sa.Column("analysis_service_id", sa.Integer(), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["analysis_service_id"],
            ["analysis_services.id"],
            name=op.f("fk_analysis_service_groups_analysis_service_id_analysis_services"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["groups.id"],
            name=op.f("fk_analysis_service_groups_group_id_groups"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "analysis_service_id", "group_id", name=op.f("pk_analysis_service_groups")
        ),
    )
    with op.batch_alter_table("analysis_service_groups", schema=None) as batch_op:
        batch_op.create_index("ix_analysis_service_groups_group_id", ["group_id"], unique=False)

    op.create_table(
        "group_users",
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("admin", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["groups.id"],
            name=op.f("fk_group_users_group_id_groups"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_group_users_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("group_id", "user_id", name=op.f("pk_group_users")),
    )
    with op.batch_alter_table("group_users", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_group_users_user_id"), ["user_id"], unique=False)

    op.create_table(
        "objs",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("ra", sa.Float(), nullable=False),
        sa.Column("dec", sa.Float(), nullable=False),
        sa.Column("redshift", sa.Float(), nullable=True),
        sa.Column("redshift_error", sa.Float(), nullable=True),
        sa.Column("redshift_origin", sa.String(length=255), nullable=True),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.Column(
            "summary_history",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", shared.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("modified", shared.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by_id"],
            ["users.id"],
            name=op.f("fk_objs_created_by_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_objs")),
    )
    with op.batch_alter_table("objs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_objs_created_at"), ["created_at"], unique=False)

    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("last_used_at", shared.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", shared.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("modified", shared.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_tokens_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_tokens_token_hash")),
    )
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tokens_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_tokens_user_id"), ["user_id"], unique=False)

    op.create_table(
        "annotations",
        sa.Column("origin", sa.String(length=255), nullable=False),
        sa.Column(
            "data",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("obj_id", sa.String(length=255), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=True),
        sa.Column("created_at", shared.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("modified", shared.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["obj_id"], ["objs.id"], name=op.f("fk_annotations_obj_id_objs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["users.id"],
            name=op.f("fk_annotations_owner_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_annotations")),
    )
    with op.batch_alter_table("annotations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_annotations_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_annotations_obj_id"), ["obj_id"], unique=False)

    op.create_table(
        "classifications",
        sa.Column("classification", sa.String(length=255), nullable=False),
        sa.Column("probability", sa.Float(), nullable=True),
        sa.Column("taxonomy", sa.String(length=255), nullable=True),
        sa.Column("ml", sa.Boolean(), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("obj_id", sa.String(length=255), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=True),
        sa.Column("created_at", shared.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("modified", shared.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["obj_id"], ["objs.id"], name=op.f("fk_classifications_obj_id_objs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["users.id"],
            name=op.f("fk_classifications_owner_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_classifications")),
    )
    with op.batch_alter_table("classifications", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_classifications_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_classifications_obj_id"), ["obj_id"], unique=False)

    op.create_table(
        "comments",
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("bot", sa.Boolean(), nullable=False),
        sa.Column("origin", sa.String(length=255), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("obj_id", sa.String(length=255), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=True),
        sa.Column("created_at", shared.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("modified", shared.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["obj_id"], ["objs.id"], name=op.f("fk_comments_obj_id_objs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_comments_owner_id_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_comments")),
    )
    with op.batch_alter_table("comments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_comments_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_comments_obj_id"), ["obj_id"], unique=False)

    op.create_table(
        "obj_analyses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("unique_id", sa.String(length=36), nullable=False),
        sa.Column("obj_id", sa.String(length=255), nullable=False),
        sa.Column("author_id", sa.Integer(), nullable=False),
        sa.Column("analysis_service_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_message", sa.Text(), nullable=True),
        sa.Column(
            "analysis_parameters",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "input_filters",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("show_parameters", sa.Boolean(), nullable=False),
        sa.Column("show_plots", sa.Boolean(), nullable=False),
        sa.Column("show_corner", sa.Boolean(), nullable=False),
        sa.Column("invalid_after", shared.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_activity", shared.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.Column("handled_by_url", sa.String(length=255), nullable=False),
        sa.Column("input_hash", sa.String(length=64), nullable=True),
        sa.Column(
            "artifacts",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "data_summary",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("dispatch_attempts_count", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", shared.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", shared.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("modified", shared.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["analysis_service_id"],
            ["analysis_services.id"],
            name=op.f("fk_obj_analyses_analysis_service_id_analysis_services"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["author_id"],
            ["users.id"],
            name=op.f("fk_obj_analyses_author_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["obj_id"], ["objs.id"], name=op.f("fk_obj_analyses_obj_id_objs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_obj_analyses")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_obj_analyses_token_hash")),
        sa.UniqueConstraint("unique_id", name=op.f("uq_obj_analyses_unique_id")),
    )
    with op.batch_alter_table("obj_analyses", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_obj_analyses_analysis_service_id"), ["analysis_service_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_obj_analyses_author_id"), ["author_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_obj_analyses_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_obj_analyses_invalid_after"), ["invalid_after"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_obj_analyses_obj_id"), ["obj_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_obj_analyses_status"), ["status"], unique=False)

    op.create_table(
        "obj_groups",
        sa.Column("obj_id", sa.String(length=255), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["groups.id"],
            name=op.f("fk_obj_groups_group_id_groups"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["obj_id"], ["objs.id"], name=op.f("fk_obj_groups_obj_id_objs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("obj_id", "group_id", name=op.f("pk_obj_groups")),
    )
    with op.batch_alter_table("obj_groups", schema=None) as batch_op:
        batch_op.create_index("ix_obj_groups_group_id", ["group_id"], unique=False)

    op.create_table(
        "photometry",
        sa.Column("instrument_id", sa.Integer(), nullable=False),
        sa.Column("mjd", sa.Float(), nullable=False),
        sa.Column("filter", sa.String(length=64), nullable=False),
        sa.Column("flux", sa.Float(), nullable=True),
        sa.Column("fluxerr", sa.Float(), nullable=False),
        sa.Column("original_limiting_mag", sa.Float(), nullable=True),
        sa.Column("origin", sa.String(length=255), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("obj_id", sa.String(length=255), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=True),
        sa.Column("created_at", shared.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("modified", shared.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["instrument_id"],
            ["instruments.id"],
            name=op.f("fk_photometry_instrument_id_instruments"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["obj_id"], ["objs.id"], name=op.f("fk_photometry_obj_id_objs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["users.id"],
            name=op.f("fk_photometry_owner_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_photometry")),
    )
    with op.batch_alter_table("photometry", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_photometry_created_at"), ["created_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_photometry_instrument_id"), ["instrument_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_photometry_obj_id"), ["obj_id"], unique=False)

    op.create_table(
        "spectra",
        sa.Column("instrument_id", sa.Integer(), nullable=False),
        sa.Column("observed_at", shared.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column(
            "wavelengths",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "fluxes",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "errors",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("units", sa.String(length=64), nullable=True),
        sa.Column("origin", sa.String(length=255), nullable=True),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column(
            "altdata",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("obj_id", sa.String(length=255), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=True),
        sa.Column("created_at", shared.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("modified", shared.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["instrument_id"],
            ["instruments.id"],
            name=op.f("fk_spectra_instrument_id_instruments"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["obj_id"], ["objs.id"], name=op.f("fk_spectra_obj_id_objs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_spectra_owner_id_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_spectra")),
    )
    with op.batch_alter_table("spectra", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_spectra_created_at"), ["created_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_spectra_instrument_id"), ["instrument_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_spectra_obj_id"), ["obj_id"], unique=False)

    op.create_table(
        "annotation_groups",
        sa.Column("annotation_id", sa.Integer(), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["annotation_id"],
            ["annotations.id"],
            name=op.f("fk_annotation_groups_annotation_id_annotations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["groups.id"],
            name=op.f("fk_annotation_groups_group_id_groups"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("annotation_id", "group_id", name=op.f("pk_annotation_groups")),
    )
    with op.batch_alter_table("annotation_groups", schema=None) as batch_op:
        batch_op.create_index("ix_annotation_groups_group_id", ["group_id"], unique=False)

    op.create_table(
        "classification_groups",
        sa.Column("classification_id", sa.Integer(), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["classification_id"],
            ["classifications.id"],
            name=op.f("fk_classification_groups_classification_id_classifications"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["groups.id"],
            name=op.f("fk_classification_groups_group_id_groups"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "classification_id", "group_id", name=op.f("pk_classification_groups")
        ),
    )
    with op.batch_alter_table("classification_groups", schema=None) as batch_op:
        batch_op.create_index("ix_classification_groups_group_id", ["group_id"], unique=False)

    op.create_table(
        "comment_groups",
        sa.Column("comment_id", sa.Integer(), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["comment_id"],
            ["comments.id"],
            name=op.f("fk_comment_groups_comment_id_comments"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["groups.id"],
            name=op.f("fk_comment_groups_group_id_groups"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("comment_id", "group_id", name=op.f("pk_comment_groups")),
    )
    with op.batch_alter_table("comment_groups", schema=None) as batch_op:
        batch_op.create_index("ix_comment_groups_group_id", ["group_id"], unique=False)

    op.create_table(
        "dispatch_attempts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("analysis_id", sa.Integer(), nullable=False),
        sa.Column("attempt_number", sa.Integer(), nullable=False),
        sa.Column("started_at", shared.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["analysis_id"],
            ["obj_analyses.id"],
            name=op.f("fk_dispatch_attempts_analysis_id_obj_analyses"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dispatch_attempts")),
        sa.UniqueConstraint(
            "analysis_id", "attempt_number", name=op.f("uq_dispatch_attempts_analysis_id")
        ),
    )
    with op.batch_alter_table("dispatch_attempts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_dispatch_attempts_analysis_id"), ["analysis_id"], unique=False
        )

    op.create_table(
        "obj_analysis_groups",
        sa.Column("obj_analysis_id", sa.Integer(), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["groups.id"],
            name=op.f("fk_obj_analysis_groups_group_id_groups"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["obj_analysis_id"],
            ["obj_analyses.id"],
            name=op.f("fk_obj_analysis_groups_obj_analysis_id_obj_analyses"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("obj_analysis_id", "group_id", name=op.f("pk_obj_analysis_groups")),
    )
    with op.batch_alter_table("obj_analysis_groups", schema=None) as batch_op:
        batch_op.create_index("ix_obj_analysis_groups_group_id", ["group_id"], unique=False)

    op.create_table(
        "photometry_groups",
        sa.Column("photometry_id", sa.Integer(), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["groups.id"],
            name=op.f("fk_photometry_groups_group_id_groups"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["photometry_id"],
            ["photometry.id"],
            name=op.f("fk_photometry_groups_photometry_id_photometry"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("photometry_id", "group_id", name=op.f("pk_photometry_groups")),
    )
    with op.batch_alter_table("photometry_groups", schema=None) as batch_op:
        batch_op.create_index("ix_photometry_groups_group_id", ["group_id"], unique=False)

    op.create_table(
        "spectrum_groups",
        sa.Column("spectrum_id", sa.Integer(), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["groups.id"],
            name=op.f("fk_spectrum_groups_group_id_groups"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["spectrum_id"],
            ["spectra.id"],
            name=op.f("fk_spectrum_groups_spectrum_id_spectra"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("spectrum_id", "group_id", name=op.f("pk_spectrum_groups")),
    )
    with op.batch_alter_table("spectrum_groups", schema=None) as batch_op:
        batch_op.create_index("ix_spectrum_groups_group_id", ["group_id"], unique=False)

    op.create_table(
        "source_embeddings",
        sa.Column("obj_id", sa.String(length=255), nullable=False),
        sa.Column("model", sa.String(length=255), nullable=False),
        sa.Column("dimensions", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("updated_at", shared.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["obj_id"],
            ["objs.id"],
            name=op.f("fk_source_embeddings_obj_id_objs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("obj_id", name=op.f("pk_source_embeddings")),
    )


def downgrade() -> None:

    op.drop_table("source_embeddings")

    with op.batch_alter_table("spectrum_groups", schema=None) as batch_op:
        batch_op.drop_index("ix_spectrum_groups_group_id")

    op.drop_table("spectrum_groups")
    with op.batch_alter_table("photometry_groups", schema=None) as batch_op:
        batch_op.drop_index("ix_photometry_groups_group_id")

    op.drop_table("photometry_groups")
    with op.batch_alter_table("obj_analysis_groups", schema=None) as batch_op:
        batch_op.drop_index("ix_obj_analysis_groups_group_id")

    op.drop_table("obj_analysis_groups")
    with op.batch_alter_table("dispatch_attempts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dispatch_attempts_analysis_id"))

    op.drop_table("dispatch_attempts")
    with op.batch_alter_table("comment_groups", schema=None) as batch_op:
        batch_op.drop_index("ix_comment_groups_group_id")

    op.drop_table("comment_groups")
    with op.batch_alter_table("classification_groups", schema=None) as batch_op:
        batch_op.drop_index("ix_classification_groups_group_id")

    op.drop_table("classification_groups")
    with op.batch_alter_table("annotation_groups", schema=None) as batch_op:
        batch_op.drop_index("ix_annotation_groups_group_id")

    op.drop_table("annotation_groups")
    with op.batch_alter_table("spectra", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_spectra_obj_id"))
        batch_op.drop_index(batch_op.f("ix_spectra_instrument_id"))
        batch_op.drop_index(batch_op.f("ix_spectra_created_at"))

    op.drop_table("spectra")
    with op.batch_alter_table("photometry", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_photometry_obj_id"))
        batch_op.drop_index(batch_op.f("ix_photometry_instrument_id"))
        batch_op.drop_index(batch_op.f("ix_photometry_created_at"))

    op.drop_table("photometry")
    with op.batch_alter_table("obj_groups", schema=None) as batch_op:
        batch_op.drop_index("ix_obj_groups_group_id")

    op.drop_table("obj_groups")
    with op.batch_alter_table("obj_analyses", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_obj_analyses_status"))
        batch_op.drop_index(batch_op.f("ix_obj_analyses_obj_id"))
        batch_op.drop_index(batch_op.f("ix_obj_analyses_invalid_after"))
        batch_op.drop_index(batch_op.f("ix_obj_analyses_created_at"))
        batch_op.drop_index(batch_op.f("ix_obj_analyses_author_id"))
        batch_op.drop_index(batch_op.f("ix_obj_analyses_analysis_service_id"))

    op.drop_table("obj_analyses")
    with op.batch_alter_table("comments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_comments_obj_id"))
        batch_op.drop_index(batch_op.f("ix_comments_created_at"))

    op.drop_table("comments")
    with op.batch_alter_table("classifications", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_classifications_obj_id"))
        batch_op.drop_index(batch_op.f("ix_classifications_created_at"))

    op.drop_table("classifications")
    with op.batch_alter_table("annotations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_annotations_obj_id"))
        batch_op.drop_index(batch_op.f("ix_annotations_created_at"))

    op.drop_table("annotations")
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tokens_user_id"))
        batch_op.drop_index(batch_op.f("ix_tokens_created_at"))

    op.drop_table("tokens")
    with op.batch_alter_table("objs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_objs_created_at"))

    op.drop_table("objs")
    with op.batch_alter_table("group_users", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_group_users_user_id"))

    op.drop_table("group_users")
    with op.batch_alter_table("analysis_service_groups", schema=None) as batch_op:
        batch_op.drop_index("ix_analysis_service_groups_group_id")

    op.drop_table("analysis_service_groups")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_users_created_at"))

    op.drop_table("users")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_published_at"))

    op.drop_table("outbox")
    with op.batch_alter_table("instruments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_instruments_created_at"))

    op.drop_table("instruments")
    with op.batch_alter_table("groups", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_groups_created_at"))

    op.drop_table("groups")
    with op.batch_alter_table("analysis_services", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_analysis_services_created_at"))

    op.drop_table("analysis_services")
