"""artifacts in the database: content-addressed blobs and the links of analyses to them

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05

Creates ``artifact_blobs`` (sha256 → bytes, each distinct content once) and
``analysis_artifacts`` ((analysis, name) → sha256), then imports the artifact files of the
former storage: every ref in ``obj_analyses.artifacts`` whose file exists under the artifact
folder (``SKYHOOK_ARTIFACT_DIR`` from the environment or the config file, default
``./var/artifacts``) becomes a blob and a link. A missing file is skipped with a warning (reads
of that artifact answer as before: the file is missing). A file whose bytes no longer match the
ref's sha256 is imported as it is and the ref's sha256 and size are corrected. The files are
left where they are; once the upgrade has run they are no longer read and may be removed.
When analyses name files but the folder itself does not exist (a volume not mounted where the
migration runs), the upgrade stops before changing anything; point ``SKYHOOK_ARTIFACT_DIR`` at
the folder (or at an empty one, to go on without the files) and run it again.

The downgrade drops both tables: the artifacts are not written back to files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("skyhook.migrations")

_ANALYSES = sa.table(
    "obj_analyses",
    sa.column("id", sa.Integer()),
    sa.column("artifacts", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")),
)
_BLOBS = sa.table(
    "artifact_blobs",
    sa.column("sha256", sa.String()),
    sa.column("size", sa.BigInteger()),
    sa.column("data", sa.LargeBinary()),
)
_LINKS = sa.table(
    "analysis_artifacts",
    sa.column("analysis_id", sa.Integer()),
    sa.column("name", sa.String()),
    sa.column("sha256", sa.String()),
    sa.column("media_type", sa.String()),
)


def upgrade() -> None:
    connection = op.get_bind()
    root = _artifact_dir().resolve()
    manifests = _manifests(connection)
    if manifests and not root.is_dir():
        # Not a missing file but a missing folder: most likely the volume is not mounted here.
        # Stopping (before any change) keeps the import possible; an empty folder lets it go on.
        raise RuntimeError(
            f"{len(manifests)} analyses have artifact files to import, but the artifact folder "
            f"{root} does not exist: set SKYHOOK_ARTIFACT_DIR to the folder (volume) the former "
            "storage used and run the upgrade again"
        )
    op.create_table(
        "artifact_blobs",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_artifact_blobs")),
    )
    if op.get_bind().dialect.name == "postgresql":
        # Stored uncompressed out of line, so a slice (substr) of a big blob reads only the
        # chunks it needs; most artifacts (PNG, netCDF) are compressed already.
        op.execute("ALTER TABLE artifact_blobs ALTER COLUMN data SET STORAGE EXTERNAL")
    op.create_table(
        "analysis_artifacts",
        sa.Column("analysis_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("media_type", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["analysis_id"],
            ["obj_analyses.id"],
            name=op.f("fk_analysis_artifacts_analysis_id_obj_analyses"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["sha256"],
            ["artifact_blobs.sha256"],
            name=op.f("fk_analysis_artifacts_sha256_artifact_blobs"),
        ),
        sa.PrimaryKeyConstraint("analysis_id", "name", name=op.f("pk_analysis_artifacts")),
    )
    with op.batch_alter_table("analysis_artifacts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_analysis_artifacts_sha256"), ["sha256"], unique=False)
    _import_files(connection, root, manifests)


def downgrade() -> None:
    with op.batch_alter_table("analysis_artifacts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_analysis_artifacts_sha256"))
    op.drop_table("analysis_artifacts")
    op.drop_table("artifact_blobs")


def _artifact_dir() -> Path:
    """Where the former storage kept its files (the setting exists for this import only)."""
    value = os.environ.get("SKYHOOK_ARTIFACT_DIR")
    if value:
        return Path(value)
    try:
        from shared.runtime.settings import load_settings

        return load_settings().artifact_dir
    except Exception:  # settings unreadable here: the documented default
        return Path("./var/artifacts")


def _refs(manifest: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(manifest key, ref) for every entry that names a file (list entries: plots)."""
    for key, entry in manifest.items():
        items = entry if isinstance(entry, list) else [entry]
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("path"), str):
                yield key, item


def _file_of(root: Path, ref: dict[str, Any]) -> Path | None:
    path = (root / ref["path"]).resolve()
    return path if root in path.parents else None


def _manifests(connection: sa.Connection) -> list[tuple[int, dict[str, Any]]]:
    rows = connection.execute(sa.select(_ANALYSES.c.id, _ANALYSES.c.artifacts)).all()
    found = []
    for analysis_id, stored in rows:
        manifest = json.loads(stored) if isinstance(stored, str) else stored
        if isinstance(manifest, dict) and any(True for _ in _refs(manifest)):
            found.append((analysis_id, manifest))
    return found


def _import_files(
    connection: sa.Connection, root: Path, manifests: list[tuple[int, dict[str, Any]]]
) -> None:
    imported = missing = 0
    for analysis_id, manifest in manifests:
        linked: set[str] = set()
        corrected = False
        for key, ref in _refs(manifest):
            path = _file_of(root, ref)
            if path is None or not path.is_file():
                log.warning(
                    "analysis %s: artifact %s (%s) not found under %s; skipped",
                    analysis_id,
                    key,
                    ref["path"],
                    root,
                )
                missing += 1
                continue
            data = path.read_bytes()
            sha256 = hashlib.sha256(data).hexdigest()
            if sha256 != ref.get("sha256") or len(data) != ref.get("size"):
                log.warning(
                    "analysis %s: artifact %s changed on disk; its ref now describes the file",
                    analysis_id,
                    key,
                )
                ref["sha256"], ref["size"] = sha256, len(data)
                corrected = True
            _store_blob(connection, sha256, data)
            name = path.name
            if name not in linked:
                connection.execute(
                    sa.insert(_LINKS).values(
                        analysis_id=analysis_id,
                        name=name,
                        sha256=sha256,
                        media_type=str(ref.get("media_type") or "application/octet-stream"),
                    )
                )
                linked.add(name)
                imported += 1
        if corrected:
            connection.execute(
                sa.update(_ANALYSES).where(_ANALYSES.c.id == analysis_id).values(artifacts=manifest)
            )
    if imported or missing:
        log.log(
            logging.WARNING if missing else logging.INFO,
            "artifacts imported from %s: %d stored, %d missing file(s) skipped",
            root,
            imported,
            missing,
        )


def _store_blob(connection: sa.Connection, sha256: str, data: bytes) -> None:
    known = connection.execute(sa.select(_BLOBS.c.sha256).where(_BLOBS.c.sha256 == sha256)).first()
    if known is None:
        connection.execute(sa.insert(_BLOBS).values(sha256=sha256, size=len(data), data=data))
