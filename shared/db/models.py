"""SQLAlchemy 2 models: one schema for PostgreSQL and SQLite.

Row-level access is group based: a source, each data row and each analysis carries the groups
it is shared with (link tables named ``<thing>_groups``); a user sees a row when they belong
to one of its groups. System admins see everything.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from shared.db.types import JSONDoc, UTCDateTime, utcnow

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# Ids are never reused: on SQLite an INTEGER PRIMARY KEY without AUTOINCREMENT hands a deleted
# row's id to the next insert (PostgreSQL's sequences never go back).
MONOTONIC_IDS: dict[str, Any] = {"sqlite_autoincrement": True}


def table_of(model: type[DeclarativeBase]) -> Table:
    """A mapped class's table, typed as a ``Table`` (``__table__`` is typed as any FROM)."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSONDoc, list[Any]: JSONDoc}


class Timestamped:
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    modified: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


def _group_link(name: str, target: str, column: str, key_type: Any = Integer) -> Table:
    return Table(
        name,
        Base.metadata,
        Column(column, key_type, ForeignKey(f"{target}.id", ondelete="CASCADE"), primary_key=True),
        Column("group_id", Integer, ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
        Index(f"ix_{name}_group_id", "group_id"),
    )


obj_groups = _group_link("obj_groups", "objs", "obj_id", String(255))
photometry_groups = _group_link("photometry_groups", "photometry", "photometry_id")
spectrum_groups = _group_link("spectrum_groups", "spectra", "spectrum_id")
comment_groups = _group_link("comment_groups", "comments", "comment_id")
classification_groups = _group_link("classification_groups", "classifications", "classification_id")
annotation_groups = _group_link("annotation_groups", "annotations", "annotation_id")
analysis_service_groups = _group_link(
    "analysis_service_groups", "analysis_services", "analysis_service_id"
)
obj_analysis_groups = _group_link("obj_analysis_groups", "obj_analyses", "obj_analysis_id")
default_analysis_groups = _group_link(
    "default_analysis_groups", "default_analyses", "default_analysis_id"
)


class User(Timestamped, Base):
    __tablename__ = "users"
    __table_args__ = MONOTONIC_IDS

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(255), unique=True)
    is_admin: Mapped[bool] = mapped_column(default=False)
    acls: Mapped[list[Any]] = mapped_column(default=list)
    preferences: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Secrets a user stores (e.g. their own LLM key), encrypted; never serialized.
    secrets_ciphertext: Mapped[str | None] = mapped_column(Text)

    memberships: Mapped[list[GroupUser]] = relationship(
        back_populates="user", cascade="all, delete-orphan", lazy="selectin"
    )


class Group(Timestamped, Base):
    __tablename__ = "groups"
    __table_args__ = MONOTONIC_IDS

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str | None] = mapped_column(Text)

    memberships: Mapped[list[GroupUser]] = relationship(
        back_populates="group", cascade="all, delete-orphan"
    )


class GroupUser(Base):
    __tablename__ = "group_users"

    group_id: Mapped[int] = mapped_column(
        ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    admin: Mapped[bool] = mapped_column(default=False)

    group: Mapped[Group] = relationship(back_populates="memberships")
    user: Mapped[User] = relationship(back_populates="memberships")


class Token(Timestamped, Base):
    """An API token; only the SHA-256 of the secret is stored."""

    __tablename__ = "tokens"
    __table_args__ = MONOTONIC_IDS

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    last_used_at: Mapped[datetime | None] = mapped_column()


class AccessVersion(Base):
    """A counter the database raises whenever what it counts changes: ``principals`` (users'
    rights, tokens, group memberships) and ``services`` (analysis services and whom they are
    shared with). Triggers (migration 0006) raise it in the changing transaction, so a value
    read alongside a cached principal or service says whether the copy is still current."""

    __tablename__ = "access_versions"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, default=0)


class Instrument(Timestamped, Base):
    __tablename__ = "instruments"
    __table_args__ = MONOTONIC_IDS

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    telescope: Mapped[str | None] = mapped_column(String(255))
    filters: Mapped[list[Any]] = mapped_column(default=list)


class Obj(Timestamped, Base):
    """A source. The id is the portal's name for it (e.g. ZTF21aaqjmps)."""

    __tablename__ = "objs"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    ra: Mapped[float] = mapped_column(Float)
    dec: Mapped[float] = mapped_column(Float)
    redshift: Mapped[float | None] = mapped_column(Float)
    redshift_error: Mapped[float | None] = mapped_column(Float)
    redshift_origin: Mapped[str | None] = mapped_column(String(255))
    summary: Mapped[str | None] = mapped_column(Text)
    summary_history: Mapped[list[Any]] = mapped_column(default=list)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    groups: Mapped[list[Group]] = relationship(secondary=obj_groups, lazy="selectin")


class OwnedRow(Timestamped):
    """Columns of every per-source data row."""

    id: Mapped[int] = mapped_column(primary_key=True)
    obj_id: Mapped[str] = mapped_column(ForeignKey("objs.id", ondelete="CASCADE"), index=True)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))


class Photometry(OwnedRow, Base):
    """One photometric point. Fluxes are stored in AB at zero point 23.9 (as SkyPortal does);
    a non-detection has ``flux`` NULL and ``fluxerr`` set so that 5·fluxerr is its limit."""

    __tablename__ = "photometry"
    __table_args__ = MONOTONIC_IDS

    instrument_id: Mapped[int] = mapped_column(
        ForeignKey("instruments.id", ondelete="CASCADE"), index=True
    )
    mjd: Mapped[float] = mapped_column(Float)
    filter: Mapped[str] = mapped_column(String(64))
    flux: Mapped[float | None] = mapped_column(Float)
    fluxerr: Mapped[float] = mapped_column(Float)
    original_limiting_mag: Mapped[float | None] = mapped_column(Float)
    origin: Mapped[str | None] = mapped_column(String(255))

    instrument: Mapped[Instrument] = relationship(lazy="joined")
    groups: Mapped[list[Group]] = relationship(secondary=photometry_groups, lazy="selectin")


class Spectrum(OwnedRow, Base):
    __tablename__ = "spectra"
    __table_args__ = MONOTONIC_IDS

    instrument_id: Mapped[int] = mapped_column(
        ForeignKey("instruments.id", ondelete="CASCADE"), index=True
    )
    observed_at: Mapped[datetime] = mapped_column()
    wavelengths: Mapped[list[Any]] = mapped_column()
    fluxes: Mapped[list[Any]] = mapped_column()
    errors: Mapped[list[Any] | None] = mapped_column(JSONDoc)
    units: Mapped[str | None] = mapped_column(String(64))
    origin: Mapped[str | None] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(32), default="source")
    altdata: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)

    instrument: Mapped[Instrument] = relationship(lazy="joined")
    groups: Mapped[list[Group]] = relationship(secondary=spectrum_groups, lazy="selectin")


class Comment(OwnedRow, Base):
    __tablename__ = "comments"
    __table_args__ = MONOTONIC_IDS

    text: Mapped[str] = mapped_column(Text)
    bot: Mapped[bool] = mapped_column(default=False)
    origin: Mapped[str | None] = mapped_column(String(255))

    groups: Mapped[list[Group]] = relationship(secondary=comment_groups, lazy="selectin")


class Classification(OwnedRow, Base):
    __tablename__ = "classifications"
    __table_args__ = MONOTONIC_IDS

    classification: Mapped[str] = mapped_column(String(255))
    probability: Mapped[float | None] = mapped_column(Float)
    taxonomy: Mapped[str | None] = mapped_column(String(255))
    ml: Mapped[bool] = mapped_column(default=False)

    groups: Mapped[list[Group]] = relationship(secondary=classification_groups, lazy="selectin")


class Annotation(OwnedRow, Base):
    __tablename__ = "annotations"
    __table_args__ = MONOTONIC_IDS

    origin: Mapped[str] = mapped_column(String(255))
    data: Mapped[dict[str, Any]] = mapped_column()

    groups: Mapped[list[Group]] = relationship(secondary=annotation_groups, lazy="selectin")


class PhotStat(Timestamped, Base):
    """A source's photometry statistics over all its points (see shared.science.phot_stats), kept
    current in the transaction of every change to its photometry."""

    __tablename__ = "phot_stats"
    __table_args__ = MONOTONIC_IDS

    id: Mapped[int] = mapped_column(primary_key=True)
    obj_id: Mapped[str] = mapped_column(
        ForeignKey("objs.id", ondelete="CASCADE"), unique=True, index=True
    )
    num_obs_global: Mapped[int] = mapped_column(Integer, default=0)
    num_obs_per_filter: Mapped[dict[str, Any]] = mapped_column(default=dict)
    num_det_global: Mapped[int] = mapped_column(Integer, default=0, index=True)
    num_det_no_forced_phot_global: Mapped[int] = mapped_column(Integer, default=0)
    num_det_per_filter: Mapped[dict[str, Any]] = mapped_column(default=dict)
    first_detected_mjd: Mapped[float | None] = mapped_column(Float, index=True)
    first_detected_mag: Mapped[float | None] = mapped_column(Float)
    first_detected_filter: Mapped[str | None] = mapped_column(String(64))
    last_detected_mjd: Mapped[float | None] = mapped_column(Float, index=True)
    last_detected_mag: Mapped[float | None] = mapped_column(Float)
    last_detected_filter: Mapped[str | None] = mapped_column(String(64))
    first_detected_no_forced_phot_mjd: Mapped[float | None] = mapped_column(Float)
    first_detected_no_forced_phot_mag: Mapped[float | None] = mapped_column(Float)
    first_detected_no_forced_phot_filter: Mapped[str | None] = mapped_column(String(64))
    last_detected_no_forced_phot_mjd: Mapped[float | None] = mapped_column(Float)
    last_detected_no_forced_phot_mag: Mapped[float | None] = mapped_column(Float)
    last_detected_no_forced_phot_filter: Mapped[str | None] = mapped_column(String(64))
    recent_obs_mjd: Mapped[float | None] = mapped_column(Float)
    predetection_mjds: Mapped[list[Any]] = mapped_column(default=list)
    last_non_detection_mjd: Mapped[float | None] = mapped_column(Float)
    time_to_non_detection: Mapped[float | None] = mapped_column(Float)
    mean_mag_global: Mapped[float | None] = mapped_column(Float)
    mean_mag_per_filter: Mapped[dict[str, Any]] = mapped_column(default=dict)
    mean_color: Mapped[dict[str, Any]] = mapped_column(default=dict)
    peak_mjd_global: Mapped[float | None] = mapped_column(Float)
    peak_mjd_per_filter: Mapped[dict[str, Any]] = mapped_column(default=dict)
    peak_mag_global: Mapped[float | None] = mapped_column(Float, index=True)
    peak_mag_per_filter: Mapped[dict[str, Any]] = mapped_column(default=dict)
    faintest_mag_global: Mapped[float | None] = mapped_column(Float)
    faintest_mag_per_filter: Mapped[dict[str, Any]] = mapped_column(default=dict)
    deepest_limit_global: Mapped[float | None] = mapped_column(Float)
    deepest_limit_per_filter: Mapped[dict[str, Any]] = mapped_column(default=dict)
    rise_rate: Mapped[float | None] = mapped_column(Float)
    decay_rate: Mapped[float | None] = mapped_column(Float)
    mag_rms_global: Mapped[float | None] = mapped_column(Float)
    mag_rms_per_filter: Mapped[dict[str, Any]] = mapped_column(default=dict)
    last_update: Mapped[datetime] = mapped_column(default=utcnow)
    last_full_update: Mapped[datetime] = mapped_column(default=utcnow)


class SourceEmbedding(Base):
    """The embedding of a source's summary, for summary search. ``summary`` is the text that was
    embedded: a row whose text differs from ``objs.summary`` is stale and is never searched."""

    __tablename__ = "source_embeddings"

    obj_id: Mapped[str] = mapped_column(ForeignKey("objs.id", ondelete="CASCADE"), primary_key=True)
    model: Mapped[str] = mapped_column(String(255))
    dimensions: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # little-endian float32
    summary: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class AnalysisService(Timestamped, Base):
    __tablename__ = "analysis_services"
    __table_args__ = MONOTONIC_IDS

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    display_name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    version: Mapped[str | None] = mapped_column(String(255))
    contact_name: Mapped[str | None] = mapped_column(String(255))
    contact_email: Mapped[str | None] = mapped_column(String(255))
    url: Mapped[str] = mapped_column(Text)
    # Kept exactly as the client sent it (a JSON string or an object) so that reads round-trip.
    optional_analysis_parameters: Mapped[Any] = mapped_column(JSONDoc, default=dict)
    authentication_type: Mapped[str] = mapped_column(String(32))
    authinfo_ciphertext: Mapped[str | None] = mapped_column(Text)
    signing_secret_ciphertext: Mapped[str | None] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(default=True)
    analysis_type: Mapped[str] = mapped_column(String(32))
    input_data_types: Mapped[list[Any]] = mapped_column(default=list)
    inputs_format: Mapped[str] = mapped_column(String(16), default="csv")
    timeout: Mapped[float] = mapped_column(Float, default=3600.0)
    upload_only: Mapped[bool] = mapped_column(default=False)
    is_summary: Mapped[bool] = mapped_column(default=False)
    display_on_resource_dropdown: Mapped[bool] = mapped_column(default=True)

    groups: Mapped[list[Group]] = relationship(secondary=analysis_service_groups, lazy="selectin")


class ObjAnalysis(Timestamped, Base):
    """One run of an analysis service on a source.

    The webhook token is never stored: it is derived from ``unique_id`` with the secret key
    (see shared.security.secrets.callback_token) and only its SHA-256 is kept for look-up.
    """

    __tablename__ = "obj_analyses"
    # No index holds a column that changes while an analysis runs (status, last_activity,
    # attempts, inputs, messages): then PostgreSQL writes each of those updates beside the row
    # without touching an index (a HOT update; migration 0010 leaves room on each page for
    # them), instead of an entry in every index per update. ``finished_at`` is set once, by the
    # transition to a final status, so the running analyses have an index of their own.
    __table_args__ = (
        # The cap counts the author's analyses on the object; the object's are found by obj_id.
        Index("ix_obj_analyses_obj_author", "obj_id", "author_id"),
        Index(
            "ix_obj_analyses_running",
            "invalid_after",
            postgresql_where=text("finished_at IS NULL"),
            sqlite_where=text("finished_at IS NULL"),
        ),
        MONOTONIC_IDS,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    unique_id: Mapped[str] = mapped_column(String(36), unique=True)
    obj_id: Mapped[str] = mapped_column(ForeignKey("objs.id", ondelete="CASCADE"))
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    analysis_service_id: Mapped[int] = mapped_column(
        ForeignKey("analysis_services.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16))
    status_message: Mapped[str | None] = mapped_column(Text)
    analysis_parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    input_filters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    show_parameters: Mapped[bool] = mapped_column(default=False)
    show_plots: Mapped[bool] = mapped_column(default=False)
    show_corner: Mapped[bool] = mapped_column(default=False)
    invalid_after: Mapped[datetime] = mapped_column()
    last_activity: Mapped[datetime] = mapped_column(default=utcnow)
    duration: Mapped[float | None] = mapped_column(Float)
    handled_by_url: Mapped[str] = mapped_column(String(255), default="api/webhook/obj_analysis")
    # Provenance of what was sent: sha256 of the exact inputs, and the artifact holding them.
    input_hash: Mapped[str | None] = mapped_column(String(64))
    # Manifest of stored artifacts: {name: {path, size, sha256, format, ...}}.
    artifacts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Small parts of the webhook body kept inline (message, model_name, n_detections, ...).
    data_summary: Mapped[dict[str, Any]] = mapped_column(default=dict)
    dispatch_attempts_count: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column()
    # When it reached a final status; NULL while it runs.
    finished_at: Mapped[datetime | None] = mapped_column()
    # What started it, when a default analysis did (the default may since have been deleted).
    default_analysis_id: Mapped[int | None] = mapped_column(Integer)
    trigger: Mapped[str | None] = mapped_column(Text)

    groups: Mapped[list[Group]] = relationship(secondary=obj_analysis_groups, lazy="selectin")
    service: Mapped[AnalysisService] = relationship(lazy="joined")


class DefaultAnalysis(Timestamped, Base):
    """A service that starts by itself, as its author, when a source meets ``source_filter``."""

    __tablename__ = "default_analyses"
    __table_args__ = MONOTONIC_IDS

    id: Mapped[int] = mapped_column(primary_key=True)
    analysis_service_id: Mapped[int] = mapped_column(
        ForeignKey("analysis_services.id", ondelete="CASCADE"), index=True
    )
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    default_analysis_parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    source_filter: Mapped[dict[str, Any]] = mapped_column()
    daily_limit: Mapped[int] = mapped_column(Integer, default=10)
    show_parameters: Mapped[bool] = mapped_column(default=True)
    show_plots: Mapped[bool] = mapped_column(default=True)
    show_corner: Mapped[bool] = mapped_column(default=True)

    groups: Mapped[list[Group]] = relationship(secondary=default_analysis_groups, lazy="selectin")
    service: Mapped[AnalysisService] = relationship(lazy="joined")
    author: Mapped[User] = relationship(lazy="joined")


class DefaultAnalysisRun(Base):
    """One analysis a default started. Unique per (default, event): the same event delivered
    twice starts one analysis; the rows of the current UTC day count toward the daily limit."""

    __tablename__ = "default_analysis_runs"
    __table_args__ = (
        UniqueConstraint("default_analysis_id", "event_id"),
        Index("ix_default_analysis_runs_default_created", "default_analysis_id", "created_at"),
        MONOTONIC_IDS,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    default_analysis_id: Mapped[int] = mapped_column(
        ForeignKey("default_analyses.id", ondelete="CASCADE")
    )
    event_id: Mapped[str] = mapped_column(String(64))
    obj_id: Mapped[str] = mapped_column(String(255))
    analysis_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PendingPhotometryTrigger(Base):
    """New photometry on a source for a default that runs on it: started once the source has
    been quiet for the configured period (each new batch pushes ``due_at`` back)."""

    __tablename__ = "pending_photometry_triggers"

    default_analysis_id: Mapped[int] = mapped_column(
        ForeignKey("default_analyses.id", ondelete="CASCADE"), primary_key=True
    )
    obj_id: Mapped[str] = mapped_column(ForeignKey("objs.id", ondelete="CASCADE"), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64))
    due_at: Mapped[datetime] = mapped_column(index=True)


class ArtifactBlob(Base):
    """The bytes of an artifact, stored once per distinct content (its SHA-256 is the key).

    A blob lives as long as a link refers to it: whatever deletes links deletes in the same
    transaction the blobs they leave unreferenced (``shared.domain.artifacts``).
    """

    __tablename__ = "artifact_blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class AnalysisArtifact(Base):
    """An analysis' artifact ``name`` (the file name of its ``ArtifactRef``) and its bytes."""

    __tablename__ = "analysis_artifacts"

    analysis_id: Mapped[int] = mapped_column(
        ForeignKey("obj_analyses.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    sha256: Mapped[str] = mapped_column(ForeignKey("artifact_blobs.sha256"), index=True)
    media_type: Mapped[str] = mapped_column(String(255))


class DispatchAttempt(Base):
    __tablename__ = "dispatch_attempts"
    # The unique constraint's index leads with analysis_id: it serves the look-ups by analysis.
    __table_args__ = (UniqueConstraint("analysis_id", "attempt_number"), MONOTONIC_IDS)

    id: Mapped[int] = mapped_column(primary_key=True)
    analysis_id: Mapped[int] = mapped_column(ForeignKey("obj_analyses.id", ondelete="CASCADE"))
    attempt_number: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column()
    latency_ms: Mapped[float | None] = mapped_column(Float)
    http_status: Mapped[int | None] = mapped_column(Integer)
    # sending (under way) | accepted | retry | failed | interrupted (its dispatcher died)
    outcome: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)


class OutboxMessage(Base):
    """A message written in the same transaction as the state change that caused it."""

    __tablename__ = "outbox"
    __table_args__ = MONOTONIC_IDS

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[str] = mapped_column(String(36), unique=True)
    routing_key: Mapped[str] = mapped_column(String(255))
    payload: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
