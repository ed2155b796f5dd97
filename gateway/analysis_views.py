"""The one place analyses become API dicts. Nothing secret is ever included: the callback
token is not stored at all, and ``analysis_parameters`` is stored already stripped of keys."""

from __future__ import annotations

from typing import Any

from gateway.serialize import groups_brief
from shared.db.models import ObjAnalysis

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
    "created_at",
    "modified",
)


def analysis_dict(analysis: ObjAnalysis) -> dict[str, Any]:
    data: dict[str, Any] = {name: getattr(analysis, name) for name in _FIELDS}
    data["groups"] = groups_brief(analysis.groups)
    data["analysis_service_name"] = analysis.service.display_name
    data["analysis_service_description"] = analysis.service.description
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
