"""Embeddings of source summaries, kept in the database, and the summary search over them.

Storage: one ``source_embeddings`` row per source, the vector as little-endian float32 bytes
(no external vector database, and PostgreSQL's pgvector is not required: it is not packaged
for Debian bookworm). Bytes rather than a JSON list because a search reads every readable
vector: bytes are a quarter of the size and decode without parsing. A row records the summary
text it was computed from; a row whose text is no longer the source's summary is stale and is
never returned, so a changed or deleted summary stops matching at once, before its new
embedding is computed.

Search: the caller's readable sources are selected in SQL first (with the redshift and
classification filters), then cosine similarity is computed with numpy over those candidates
only, and the best ``k`` are kept. So every result is readable, and ``k`` results come back
whenever ``k`` readable sources match. The cost grows linearly with the
number of readable summarized sources, which is fine for catalogues of tens of thousands.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Select, delete, exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.dialect import name_of, upsert
from shared.db.models import (
    Classification,
    Obj,
    SourceEmbedding,
    classification_groups,
    obj_groups,
)
from shared.db.types import utcnow
from shared.domain.access import Principal, visible
from shared.llm.client import Endpoint
from shared.runtime.settings import Settings


@dataclass(frozen=True)
class EmbeddingsConfig:
    model: str
    endpoint: Endpoint


def embeddings_config(settings: Settings) -> EmbeddingsConfig | None:
    """The embeddings API, or None when summary search is not configured (no model or key)."""
    key = settings.embeddings_api_key or settings.llm_api_key
    if not settings.embeddings_model or key is None:
        return None
    endpoint = Endpoint(
        base_url=settings.embeddings_base_url or settings.llm_base_url,
        api_key=key.get_secret_value(),
        timeout_seconds=settings.llm_timeout_seconds,
        max_retries=settings.llm_max_retries,
    )
    return EmbeddingsConfig(settings.embeddings_model, endpoint)


@dataclass(frozen=True)
class SearchFilters:
    z_min: float | None = None
    z_max: float | None = None
    classifications: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Match:
    obj_id: str
    score: float
    summary: str
    redshift: float | None
    classes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.obj_id,
            "score": self.score,
            "metadata": {"summary": self.summary, "redshift": self.redshift, "class": self.classes},
        }


# --- writing ----------------------------------------------------------------------------------

VECTOR_DTYPE = np.dtype("<f4")


def to_bytes(vector: Sequence[float]) -> bytes:
    return np.asarray(vector, dtype=VECTOR_DTYPE).tobytes()


def from_bytes(data: bytes) -> np.ndarray[Any, np.dtype[np.float32]]:
    return np.frombuffer(data, dtype=VECTOR_DTYPE)


async def store_embedding(
    session: AsyncSession, obj_id: str, model: str, vector: Sequence[float], summary: str
) -> None:
    """Insert or replace the source's embedding, unless the source's summary changed while
    this text was being embedded (a slow pass must not overwrite the newer summary's row)."""
    current = select(Obj.summary).where(Obj.id == obj_id).scalar_subquery()
    if await session.scalar(select(current)) != summary:
        return
    values = {
        "obj_id": obj_id,
        "model": model,
        "dimensions": len(vector),
        "vector": to_bytes(vector),
        "summary": summary,
        "updated_at": utcnow(),
    }
    # The write wins only while the source still has the summary that was embedded.
    statement = upsert(
        name_of(session), SourceEmbedding, values, ["obj_id"], where=current == summary
    )
    await session.execute(statement)


async def delete_unsummarized(session: AsyncSession) -> int:
    """Remove the embeddings of sources that no longer have a summary."""
    unsummarized = select(Obj.id).where(Obj.summary.is_(None))
    result = await session.execute(
        delete(SourceEmbedding).where(SourceEmbedding.obj_id.in_(unsummarized))
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def sources_to_embed(
    session: AsyncSession, model: str, limit: int, obj_ids: Sequence[str] | None = None
) -> list[tuple[str, str]]:
    """(obj_id, summary) of summarized sources without a current embedding for ``model``."""
    current = exists().where(
        SourceEmbedding.obj_id == Obj.id,
        SourceEmbedding.model == model,
        SourceEmbedding.summary == Obj.summary,
    )
    query = select(Obj.id, Obj.summary).where(Obj.summary.is_not(None), ~current)
    if obj_ids is not None:
        query = query.where(Obj.id.in_(list(obj_ids)))
    rows = await session.execute(query.order_by(Obj.id).limit(limit))
    return [(row.id, row.summary) for row in rows if row.summary and row.summary.strip()]


# --- searching --------------------------------------------------------------------------------


async def current_vector(session: AsyncSession, obj_id: str, model: str) -> list[float] | None:
    """The embedding of the source's current summary, if it has been computed."""
    data = await session.scalar(
        select(SourceEmbedding.vector)
        .join(Obj, Obj.id == SourceEmbedding.obj_id)
        .where(
            SourceEmbedding.obj_id == obj_id,
            SourceEmbedding.model == model,
            SourceEmbedding.summary == Obj.summary,
        )
    )
    return None if data is None else [float(x) for x in from_bytes(data)]


def _candidate_query(
    principal: Principal, model: str, dimensions: int, filters: SearchFilters
) -> Select[str, bytes]:
    query = (
        select(SourceEmbedding.obj_id, SourceEmbedding.vector)
        .join(Obj, Obj.id == SourceEmbedding.obj_id)
        .where(
            SourceEmbedding.model == model,
            SourceEmbedding.dimensions == dimensions,
            SourceEmbedding.summary == Obj.summary,
            visible(obj_groups, Obj.id, principal),
        )
    )
    if filters.z_min is not None:
        query = query.where(Obj.redshift >= filters.z_min)
    if filters.z_max is not None:
        query = query.where(Obj.redshift <= filters.z_max)
    if filters.classifications is not None:
        query = query.where(
            exists().where(
                Classification.obj_id == Obj.id,
                Classification.classification.in_(filters.classifications),
                visible(classification_groups, Classification.id, principal),
            )
        )
    return query


def rank(query: Sequence[float], vectors: Any, k: int) -> list[tuple[int, float]]:
    """(index, cosine similarity) of the ``k`` rows of ``vectors`` (a matrix, a list of
    vectors, or a list of float32 byte strings) nearest to ``query``, best first.
    CPU work: call it in a thread."""
    if len(vectors) == 0 or k < 1:
        return []
    if isinstance(vectors[0], bytes):
        vectors = [from_bytes(v) for v in vectors]
    matrix = np.asarray(vectors, dtype=np.float64)
    target = np.asarray(query, dtype=np.float64)
    norms = np.linalg.norm(matrix, axis=1) * np.linalg.norm(target)
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = np.where(norms > 0, matrix @ target / norms, 0.0)
    count = min(k, len(scores))
    best = np.argpartition(-scores, count - 1)[:count]
    ordered = best[np.argsort(-scores[best], kind="stable")]
    return [(int(i), float(scores[i])) for i in ordered]


async def readable_classes(
    session: AsyncSession, principal: Principal, obj_ids: Sequence[str]
) -> dict[str, list[str]]:
    """The distinct classification names of each source that the caller can read."""
    rows = await session.execute(
        select(Classification.obj_id, Classification.classification)
        .where(
            Classification.obj_id.in_(list(obj_ids)),
            visible(classification_groups, Classification.id, principal),
        )
        .order_by(Classification.created_at.desc(), Classification.id.desc())
    )
    found: dict[str, list[str]] = defaultdict(list)
    for obj_id, name in rows:
        if name not in found[obj_id]:
            found[obj_id].append(name)
    return found


async def search(
    session: AsyncSession,
    principal: Principal,
    vector: Sequence[float],
    model: str,
    k: int,
    filters: SearchFilters,
) -> list[Match]:
    """The ``k`` readable sources whose summaries are nearest to ``vector``."""
    rows = (await session.execute(_candidate_query(principal, model, len(vector), filters))).all()
    ranked = await asyncio.to_thread(rank, vector, [row.vector for row in rows], k)
    chosen = [(rows[i].obj_id, score) for i, score in ranked]
    ids = [obj_id for obj_id, _ in chosen]
    objs = {
        row.id: row
        for row in await session.execute(
            select(Obj.id, Obj.summary, Obj.redshift).where(Obj.id.in_(ids))
        )
    }
    classes = await readable_classes(session, principal, ids)
    return [
        Match(
            obj_id,
            round(score, 6),
            objs[obj_id].summary,
            objs[obj_id].redshift,
            classes.get(obj_id, []),
        )
        for obj_id, score in chosen
        if obj_id in objs and objs[obj_id].summary is not None
    ]
