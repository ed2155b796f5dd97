"""Artifact storage in the database, content-addressed and deduplicated.

Two tables (``shared.db.models``): ``artifact_blobs`` holds every distinct content once, keyed
by its SHA-256; ``analysis_artifacts`` links an analysis and a name to a blob. Two analyses
(or two names) with the same bytes share one blob. Every stored artifact is also described by
an :class:`ArtifactRef` (name, path, size, sha256, media type) in ``ObjAnalysis.artifacts``;
its ``path`` is ``<analysis unique_id>/<name>``, a name rather than a place on a disk, and
reads find the bytes by the ref's sha256.

Writes never have a transaction of their own: :func:`write_artifacts` (or the inserts of
:func:`artifact_writes`) runs in the transaction of the change that makes the
artifacts part of an analysis, so an analysis that is not created, a webhook that loses or a
claim that rolls back leaves nothing behind. Deletes (:func:`delete_artifacts`) remove the
links and, in the same transaction, every blob no longer referenced.

Concurrency (PostgreSQL): a blob is upserted with a no-op ``DO UPDATE``, which locks its row
until the writer commits, and the garbage collection skips locked blobs
(``FOR UPDATE SKIP LOCKED``): a writer that shares an existing blob is never left with a link
to a blob a concurrent delete removed. SQLite has a single writer.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    LargeBinary,
    Select,
    and_,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    true,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from shared.db.dialect import RowSet, in_taken, insert_keeping, name_of
from shared.db.models import AnalysisArtifact, ArtifactBlob, table_of

_SAFE = re.compile(r"^[A-Za-z0-9_.\-]+$")
BLOBS = table_of(ArtifactBlob)
LINKS = table_of(AnalysisArtifact)
# Reads of a bigger blob are sent in chunks of this size, one short query each.
CHUNK_BYTES = 1024 * 1024
# Candidates per garbage-collection statement (bound parameters are limited per statement).
_GC_BATCH = 500

Executor = AsyncSession | AsyncConnection


class ArtifactMissing(FileNotFoundError):
    """No blob with the ref's sha256 (e.g. a file that was already gone when it was imported)."""


@dataclass(frozen=True)
class ArtifactRef:
    name: str
    path: str  # "<analysis unique_id>/<name>": a name, never a server path
    size: int
    sha256: str
    media_type: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "size": self.size,
            "sha256": self.sha256,
            "media_type": self.media_type,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArtifactRef:
        return cls(**{k: data[k] for k in ("name", "path", "size", "sha256", "media_type")})


@dataclass(frozen=True)
class NewArtifact:
    """Bytes to store under ``name``; hashing is CPU work (build big ones in a thread)."""

    name: str
    data: bytes
    media_type: str
    sha256: str = field(init=False)

    def __post_init__(self) -> None:
        if not _SAFE.match(self.name) or len(self.name) > 255:
            raise ValueError(f"unsafe artifact name {self.name!r}")
        object.__setattr__(self, "sha256", hashlib.sha256(self.data).hexdigest())

    @property
    def size(self) -> int:
        return len(self.data)

    def ref(self, analysis_uid: str) -> ArtifactRef:
        if not _SAFE.match(analysis_uid):
            raise ValueError(f"unsafe analysis id {analysis_uid!r}")
        return ArtifactRef(
            name=self.name,
            path=f"{analysis_uid}/{self.name}",
            size=self.size,
            sha256=self.sha256,
            media_type=self.media_type,
        )


def _dialect(executor: Executor) -> str:
    return name_of(executor)


def _sha256_of(ref: ArtifactRef | dict[str, Any]) -> str:
    return ref.sha256 if isinstance(ref, ArtifactRef) else str(ref["sha256"])


def _distinct_blobs(files: Iterable[NewArtifact]) -> list[NewArtifact]:
    """One per content, in sha256 order (writers lock blob rows in the same order)."""
    unique = {f.sha256: f for f in files}
    return [unique[sha] for sha in sorted(unique)]


def _named(files_of: Mapping[int, Sequence[NewArtifact]]) -> dict[int, dict[str, NewArtifact]]:
    """Each analysis' files by name (of two with one name, the later), analyses with none left
    out."""
    return {a: {f.name: f for f in files} for a, files in files_of.items() if files}


def _artifact_rows(
    named: Mapping[int, Mapping[str, NewArtifact]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the link rows, the blob rows: one per content, in sha256 order) of named files."""
    links = [
        {"analysis_id": a, "name": f.name, "sha256": f.sha256, "media_type": f.media_type}
        for a, files in named.items()
        for f in files.values()
    ]
    blobs = _distinct_blobs(f for files in named.values() for f in files.values())
    return links, [{"sha256": f.sha256, "size": f.size, "data": f.data} for f in blobs]


async def write_artifacts(
    executor: Executor,
    analysis_id: int,
    files: Sequence[NewArtifact],
    *,
    replace: bool = False,
) -> None:
    """Store ``files`` as artifacts of the analysis (see :func:`write_artifacts_of`)."""
    await write_artifacts_of(executor, {analysis_id: files}, replace=replace)


async def write_artifacts_of(
    executor: Executor,
    files_of: Mapping[int, Sequence[NewArtifact]],
    *,
    replace: bool = False,
) -> None:
    """Store each analysis' ``files`` as its artifacts, in the caller's transaction, with one
    statement per table whatever the number of analyses.

    ``replace``: a name an analysis already has now points to the new bytes, and the old
    blob goes if nothing else refers to it. Without it, an existing name is an error.
    """
    named = _named(files_of)
    if not named:
        return
    links, blobs = _artifact_rows(named)
    writes, insert_blobs, insert_links = artifact_inserts(_dialect(executor))
    await executor.execute(insert_blobs, writes.blobs.bound(blobs))
    replaced: list[str] = []
    if replace:
        same_names = or_(
            *(
                and_(LINKS.c.analysis_id == a, LINKS.c.name.in_(sorted(files)))
                for a, files in named.items()
            )
        )
        gone = await executor.execute(delete(LINKS).where(same_names).returning(LINKS.c.sha256))
        replaced = [sha for (sha,) in gone]
    await executor.execute(insert_links, writes.links.bound(links))
    await collect_garbage(executor, replaced)  # a blob the new links share again stays


@functools.cache
def artifact_inserts(dialect: str) -> tuple[ArtifactWrites, Any, Any]:
    """The row sets of :func:`artifact_writes` and the two inserts that store all of them
    (blobs kept when already there, then links): one statement per table per batch, built
    once per dialect."""
    writes = artifact_writes(dialect)
    blobs = select(writes.blobs.table).where(true())  # WHERE: see upsert_selected
    links = select(writes.links.table)
    return (
        writes,
        insert_keeping(dialect, BLOBS, ["sha256"]).from_select(list(_BLOB_COLUMNS), blobs),
        insert(LINKS).from_select(list(_LINK_COLUMNS), links),
    )


@dataclass(frozen=True)
class ArtifactWrites:
    """The blob and link inserts of many analyses' files, built once per dialect, for a
    :func:`~shared.db.dialect.together` write; each runs only for the analyses its guard
    matched: a blob goes in when one of those analyses links to it (one kept already is kept,
    and locked), the links name their analysis. :meth:`bound` gives a batch's parameters."""

    links: RowSet
    blobs: RowSet
    then: tuple[Callable[[Any], Any], ...]

    def bound(self, files_of: Mapping[int, Sequence[NewArtifact]]) -> dict[str, Any]:
        links, blobs = _artifact_rows(_named(files_of))
        return {**self.links.bound(links), **self.blobs.bound(blobs)}


_LINK_COLUMNS = ("analysis_id", "name", "sha256", "media_type")
_BLOB_COLUMNS = ("sha256", "size", "data")


@functools.cache
def artifact_writes(dialect: str) -> ArtifactWrites:
    link_set = RowSet("new_links", {c: LINKS.c[c].type for c in _LINK_COLUMNS}, dialect)
    blob_set = RowSet("new_blobs", {c: BLOBS.c[c].type for c in _BLOB_COLUMNS}, dialect)
    links, blobs = link_set.table, blob_set.table

    def blobs_linked(moved_ids: Any) -> Any:
        linked = select(links.c.sha256).where(links.c.analysis_id.in_(moved_ids))
        rows = select(blobs).where(blobs.c.sha256.in_(linked))
        return insert_keeping(dialect, BLOBS, ["sha256"]).from_select(list(_BLOB_COLUMNS), rows)

    def links_of(moved_ids: Any) -> Any:
        rows = select(links).where(links.c.analysis_id.in_(moved_ids))
        return insert(LINKS).from_select(list(_LINK_COLUMNS), rows)

    return ArtifactWrites(link_set, blob_set, (blobs_linked, links_of))


async def collect_garbage(executor: Executor, candidates: Iterable[str]) -> None:
    """Delete those of these blobs that no link refers to (any more), in the caller's
    transaction; a blob locked by a concurrent writer is left to that writer."""
    pending = sorted(set(candidates))
    for start in range(0, len(pending), _GC_BATCH):
        batch = pending[start : start + _GC_BATCH]
        unreferenced = select(BLOBS.c.sha256).where(
            BLOBS.c.sha256.in_(batch),
            ~exists().where(LINKS.c.sha256 == BLOBS.c.sha256),
        )
        taken = in_taken(BLOBS.c.sha256, unreferenced, name_of(executor))
        await executor.execute(delete(BLOBS).where(taken))


async def delete_artifacts(executor: Executor, analysis_ids: Select[Any] | Sequence[int]) -> None:
    """Delete the artifacts of these analyses (ids, or a SELECT of ids) and every blob left
    unreferenced, in the caller's transaction."""
    gone = await executor.execute(
        delete(LINKS).where(LINKS.c.analysis_id.in_(analysis_ids)).returning(LINKS.c.sha256)
    )
    await collect_garbage(executor, (sha for (sha,) in gone))


class ArtifactStore:
    """Reads of artifact bytes (by the ref's sha256).

    Pass ``executor`` to read inside a transaction already open (the dispatcher's claim) rather
    than on a connection of its own.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def _scalar(self, statement: Select[Any], executor: Executor | None) -> Any:
        if executor is not None:
            return (await executor.execute(statement)).scalar()
        async with self.engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            return (await connection.execute(statement)).scalar()

    async def read(
        self, ref: ArtifactRef | dict[str, Any], executor: Executor | None = None
    ) -> bytes:
        sha256 = _sha256_of(ref)
        query = select(BLOBS.c.data).where(BLOBS.c.sha256 == sha256)
        data = await self._scalar(query, executor)
        if data is None:
            raise ArtifactMissing(f"no artifact blob {sha256}")
        return bytes(data)

    async def size(self, ref: ArtifactRef | dict[str, Any]) -> int:
        """The stored size in bytes; :class:`ArtifactMissing` when there is no such blob."""
        sha256 = _sha256_of(ref)
        size = await self._scalar(select(BLOBS.c.size).where(BLOBS.c.sha256 == sha256), None)
        if size is None:
            raise ArtifactMissing(f"no artifact blob {sha256}")
        return int(size)

    async def chunks(
        self,
        ref: ArtifactRef | dict[str, Any],
        total: int | None = None,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> AsyncIterator[bytes]:
        """The bytes in slices (``substr``), one short query each, so a big artifact is never
        held in memory whole (``total``: its size, when already read). Raises
        :class:`ArtifactMissing` if the blob is not there or goes meanwhile."""
        sha256 = _sha256_of(ref)
        if total is None:
            total = await self.size(ref)
        offset = 0
        while offset < total:
            piece = func.substr(BLOBS.c.data, offset + 1, chunk_bytes, type_=LargeBinary)
            part = await self._scalar(select(piece).where(BLOBS.c.sha256 == sha256), None)
            if not part:
                raise ArtifactMissing(f"no artifact blob {sha256}")
            offset += len(part)
            yield bytes(part)
