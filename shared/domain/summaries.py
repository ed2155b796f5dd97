"""Source summaries: ``objs.summary`` is always the newest entry of ``objs.summary_history``.

Privacy: a summary is part of the source, so everyone who can read the source
reads its summary and history, even when the summary was written from comments or
classifications shared with fewer groups. A summarizer only ever receives what the analysis
author can read, but what it writes is then visible to every reader of the source.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.dialect import lock_rows_first
from shared.db.models import Obj
from shared.db.types import utcnow


def prepend_summary(
    obj: Obj,
    summary: str | None,
    *,
    set_by_user_id: int | None,
    is_bot: bool,
    analysis_id: int | None = None,
    origin: str | None = None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "set_by_user_id": set_by_user_id,
        "set_at_utc": utcnow().isoformat(),
        "summary": summary,
        "is_bot": is_bot,
        "analysis_id": analysis_id,
    }
    if origin is not None:
        entry["origin"] = origin
    # A new list (not an in-place insert) so the JSON column change is detected.
    obj.summary_history = [entry, *(obj.summary_history or [])]
    obj.summary = summary
    return entry


def forget_analysis(obj: Obj, analysis_id: int) -> None:
    """Drop the entries an analysis wrote and recompute the current summary (fixes R10)."""
    history = [e for e in obj.summary_history or [] if e.get("analysis_id") != analysis_id]
    obj.summary_history = history
    obj.summary = history[0]["summary"] if history else None


def has_entry_for(obj: Obj, analysis_id: int) -> bool:
    return any(e.get("analysis_id") == analysis_id for e in obj.summary_history or [])


async def lock_obj(session: AsyncSession, obj_id: str) -> Obj | None:
    """The source, locked until the transaction ends, so that concurrent summary writers (and
    deletions of summary analyses) apply one after the other to the latest history."""
    await lock_rows_first(session, obj_id)
    query = (
        select(Obj)
        .where(Obj.id == obj_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await session.execute(query)).scalar_one_or_none()
