"""The one place analyses become API dicts. Nothing secret is ever included: the callback
token is not stored at all, and ``analysis_parameters`` is stored already stripped of keys."""

from __future__ import annotations

from typing import Any

from gateway.serialize import groups_brief
from shared.db.models import DispatchAttempt, ObjAnalysis
from shared.domain.access import Principal

_FIELDS = (
    "id",
    "obj_id",
    "author_id",
    "analysis_service_id",
    "status",
    "status_message",
    "analysis_parameters",
    "input_filters",
    "show_parameters",
    "show_plots",
    "show_corner",
    "invalid_after",
    "last_activity",
    "duration",
    "handled_by_url",
    "input_hash",
    "default_analysis_id",
    "trigger",
    "created_at",
    "modified",
)


# Small scalars of the results kept inline, so lists never read artifact files (R8).
_SUMMARY_FIELDS = ("model_name", "n_detections")
_BRIEF_FIELDS = (
    "id",
    "obj_id",
    "status",
    "status_message",
    "created_at",
    "last_activity",
    "analysis_service_id",
)


def _groups(analysis: ObjAnalysis, viewer: Principal | None) -> list[dict[str, Any]]:
    """All groups, or with a viewer only the ones the viewer belongs to (admins: all)."""
    groups = analysis.groups
    if viewer is not None and not viewer.is_admin:
        groups = [g for g in groups if g.id in viewer.group_ids]
    return groups_brief(groups)


def _service_names(analysis: ObjAnalysis) -> dict[str, Any]:
    return {
        "analysis_service_name": analysis.service.display_name,
        "analysis_service_description": analysis.service.description,
    }


def analysis_dict(analysis: ObjAnalysis, viewer: Principal | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {name: getattr(analysis, name) for name in _FIELDS}
    data["groups"] = _groups(analysis, viewer)
    data.update(_service_names(analysis))
    summary = analysis.data_summary or {}
    data.update({name: summary.get(name) for name in _SUMMARY_FIELDS})
    data["num_plots"] = len(analysis.artifacts.get("plots", []))
    data["artifacts"] = {
        name: _public_manifest(entry) for name, entry in sorted(analysis.artifacts.items())
    }
    data["dispatch_attempts"] = analysis.dispatch_attempts_count
    return data


def _public_manifest(entry: Any) -> Any:
    """Sizes, hashes and media types of stored artifacts; never their paths."""
    if isinstance(entry, list):
        return [_public_manifest(e) for e in entry]
    if isinstance(entry, dict):
        return {k: v for k, v in entry.items() if k != "path"}
    return entry


def analysis_brief(analysis: ObjAnalysis) -> dict[str, Any]:
    """SkyPortal's short form, used by the list of analyses across objects."""
    data: dict[str, Any] = {name: getattr(analysis, name) for name in _BRIEF_FIELDS}
    data.update(_service_names(analysis))
    return data


def attempt_dict(attempt: DispatchAttempt) -> dict[str, Any]:
    return {
        "attempt_number": attempt.attempt_number,
        "started_at": attempt.started_at,
        "http_status": attempt.http_status,
        "latency_ms": attempt.latency_ms,
        "outcome": attempt.outcome,
        "error": attempt.error,
    }
