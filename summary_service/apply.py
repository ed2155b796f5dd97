"""Applying a finished summary analysis to its source (``obj.summary`` and its history).

Idempotent: the history records the ``analysis_id`` of each bot entry, and an analysis that
already has an entry is skipped, inside a transaction that holds the source's row lock (on
SQLite, the database write lock), so a redelivered ``analysis.completed`` changes nothing.
An analysis deleted meanwhile is not applied (its entry would outlive it).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db.models import ObjAnalysis
from shared.domain.artifacts import ArtifactStore
from shared.domain.summaries import has_entry_for, lock_obj, prepend_summary

log = logging.getLogger("skyhook.summary_service")

MAX_SUMMARY_CHARS = 100_000


class UnreadableResults(ValueError):
    """The results cannot be decoded; retrying will not help."""


def _decode(raw: bytes, fmt: str) -> Any:
    """The stored JSON form. Results are decoded once, at ingest, so nothing is unpickled
    here; results stored as joblib before that (their summary was applied when they
    completed) are not read."""
    if fmt != "json":
        raise UnreadableResults(f"results stored as {fmt} are not read here")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise UnreadableResults(f"JSON results unreadable: {exc}") from None


async def read_summary(store: ArtifactStore, analysis: ObjAnalysis) -> str | None:
    """``results.summary`` of an analysis, or None when there is none to apply."""
    ref = (analysis.artifacts or {}).get("results")
    if not isinstance(ref, dict) or "path" not in ref:
        return None
    try:
        raw = await store.read(ref)
    except FileNotFoundError:
        log.error("analysis %d: the results file is missing", analysis.id)
        return None
    try:
        results = await asyncio.to_thread(_decode, raw, str(ref.get("format", "json")))
    except UnreadableResults as exc:
        log.warning("analysis %d: %s; no summary applied", analysis.id, exc)
        return None
    summary = results.get("summary") if isinstance(results, dict) else None
    if not isinstance(summary, str) or not summary.strip():
        log.warning("analysis %d: the results hold no summary; nothing applied", analysis.id)
        return None
    return summary.strip()[:MAX_SUMMARY_CHARS]


async def _still_exists(session: AsyncSession, analysis_id: int) -> bool:
    found = await session.scalar(select(ObjAnalysis.id).where(ObjAnalysis.id == analysis_id))
    return found is not None


async def record_summary(
    sessions: async_sessionmaker[AsyncSession], analysis: ObjAnalysis, summary: str
) -> bool:
    """Prepend the analysis' summary to its source's history; False when nothing changed."""
    async with sessions.begin() as session:
        obj = await lock_obj(session, analysis.obj_id)
        if obj is None or has_entry_for(obj, analysis.id):
            return False
        if not await _still_exists(session, analysis.id):
            return False
        prepend_summary(
            obj,
            summary,
            set_by_user_id=analysis.author_id,
            is_bot=True,
            analysis_id=analysis.id,
        )
    return True


async def apply_analysis_summary(
    sessions: async_sessionmaker[AsyncSession], store: ArtifactStore, analysis_id: int
) -> str | None:
    """Apply a summary analysis' result; returns the source id when its summary changed.

    As in SkyPortal, the summary is applied whenever the results carry one,
    whatever status the service reported.
    """
    async with sessions() as session:
        analysis = await session.get(ObjAnalysis, analysis_id)
    if analysis is None:
        return None
    summary = await read_summary(store, analysis)
    if summary is None:
        return None
    if not await record_summary(sessions, analysis, summary):
        return None
    log.info("source %s: summary from analysis %d applied", analysis.obj_id, analysis_id)
    return analysis.obj_id
