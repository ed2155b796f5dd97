"""Source summaries: ``objs.summary`` is always the newest entry of ``objs.summary_history``."""

from __future__ import annotations

from typing import Any

from shared.db.models import Obj
from shared.db.types import utcnow


def prepend_summary(
    obj: Obj,
    summary: str,
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
