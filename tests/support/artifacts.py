"""What the database holds of analyses' artifacts, for tests: link names, bytes, and blobs no
link refers to (there must never be any)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import func, select, update

from shared.db.models import AnalysisArtifact, ArtifactBlob, ObjAnalysis
from shared.domain.artifacts import NewArtifact, write_artifacts
from shared.runtime.resources import Resources


async def artifact_names(resources: Resources, unique_id: str) -> list[str]:
    """The names stored for the analysis (none once it is deleted)."""
    query = (
        select(AnalysisArtifact.name)
        .join(ObjAnalysis, ObjAnalysis.id == AnalysisArtifact.analysis_id)
        .where(ObjAnalysis.unique_id == unique_id)
        .order_by(AnalysisArtifact.name)
    )
    async with resources.sessions() as session:
        return list(await session.scalars(query))


async def links_of(resources: Resources, analysis_ids: list[int]) -> int:
    """How many link rows these analyses have (ids stay meaningful after a delete)."""
    query = select(func.count()).where(AnalysisArtifact.analysis_id.in_(analysis_ids))
    async with resources.sessions() as session:
        return int(await session.scalar(query) or 0)


async def unreferenced_blobs(resources: Resources) -> list[str]:
    query = select(ArtifactBlob.sha256).where(
        ~select(AnalysisArtifact.sha256)
        .where(AnalysisArtifact.sha256 == ArtifactBlob.sha256)
        .exists()
    )
    async with resources.sessions() as session:
        return list(await session.scalars(query))


async def blob_exists(resources: Resources, sha256: str) -> bool:
    async with resources.sessions() as session:
        found = await session.scalar(
            select(ArtifactBlob.sha256).where(ArtifactBlob.sha256 == sha256)
        )
    return found is not None


async def stored_bytes(resources: Resources, ref: dict[str, Any]) -> bytes:
    """The bytes a manifest entry names, checked against its size and sha256."""
    data = await resources.artifacts.read(ref)
    assert (len(data), hashlib.sha256(data).hexdigest()) == (ref["size"], ref["sha256"])
    return data


async def put_artifact(
    resources: Resources, analysis_id: int, name: str, data: bytes, media_type: str
) -> dict[str, Any]:
    """Store bytes as an artifact of an existing analysis (not in its manifest); its ref."""
    async with resources.sessions.begin() as session:
        unique_id = await session.scalar(
            select(ObjAnalysis.unique_id).where(ObjAnalysis.id == analysis_id)
        )
        assert unique_id is not None
        file = NewArtifact(name, data, media_type)
        await write_artifacts(session, analysis_id, [file], replace=True)
    return file.ref(unique_id).to_dict()


@asynccontextmanager
async def ruined_blob(
    resources: Resources, ref: dict[str, Any], data: bytes
) -> AsyncIterator[None]:
    """Within the block, the stored bytes are ``data`` (the sha256 no longer matches): for
    tests that prove the bytes are not read again. Blobs are shared by content across the
    session's tests, so the original bytes are put back afterwards."""

    async def store(content: bytes) -> None:
        async with resources.sessions.begin() as session:
            blob = update(ArtifactBlob).where(ArtifactBlob.sha256 == ref["sha256"])
            await session.execute(blob.values(data=content))

    original = await resources.artifacts.read(ref)
    await store(data)
    try:
        yield
    finally:
        await store(original)


async def stored_artifacts(resources: Resources) -> tuple[set[str], set[str]]:
    """(unique_ids of the analyses that have artifacts, sha256 of every blob)."""
    with_links = (
        select(ObjAnalysis.unique_id)
        .join(AnalysisArtifact, AnalysisArtifact.analysis_id == ObjAnalysis.id)
        .distinct()
    )
    async with resources.sessions() as session:
        analyses = set(await session.scalars(with_links))
        blobs = set(await session.scalars(select(ArtifactBlob.sha256)))
    return analyses, blobs
