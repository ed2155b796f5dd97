"""Turning rows into API dicts. Secrets never pass through here."""

from __future__ import annotations

from typing import Any

from shared.db.models import (
    Annotation,
    Classification,
    Comment,
    Group,
    Instrument,
    Obj,
    Photometry,
    Spectrum,
    Token,
    User,
)
from shared.domain.access import Principal
from shared.science.photometry import export_point


def group_brief(group: Group) -> dict[str, Any]:
    return {"id": group.id, "name": group.name}


def groups_brief(groups: list[Group]) -> list[dict[str, Any]]:
    return [group_brief(g) for g in sorted(groups, key=lambda g: g.id)]


def user_dict(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "is_admin": user.is_admin,
        "acls": list(user.acls),
        "groups": [
            {"id": m.group_id, "admin": m.admin}
            for m in sorted(user.memberships, key=lambda m: m.group_id)
        ],
        "created_at": user.created_at,
    }


def token_dict(token: Token) -> dict[str, Any]:
    return {
        "id": token.id,
        "name": token.name,
        "user_id": token.user_id,
        "created_at": token.created_at,
        "last_used_at": token.last_used_at,
    }


def visible_groups_brief(groups: list[Group], principal: Principal) -> list[dict[str, Any]]:
    """The groups of a row that the caller belongs to (all of them for system admins), so a
    shared row never reveals the other groups it is in."""
    shown = groups if principal.is_admin else [g for g in groups if g.id in principal.group_ids]
    return groups_brief(shown)


def instrument_dict(instrument: Instrument) -> dict[str, Any]:
    return {
        "id": instrument.id,
        "name": instrument.name,
        "telescope": instrument.telescope,
        "filters": list(instrument.filters),
        "created_at": instrument.created_at,
    }


def source_dict(obj: Obj, principal: Principal) -> dict[str, Any]:
    return {
        "id": obj.id,
        "ra": obj.ra,
        "dec": obj.dec,
        "redshift": obj.redshift,
        "redshift_error": obj.redshift_error,
        "redshift_origin": obj.redshift_origin,
        "summary": obj.summary,
        "summary_history": list(obj.summary_history or []),
        "groups": visible_groups_brief(obj.groups, principal),
        "created_by_id": obj.created_by_id,
        "created_at": obj.created_at,
        "modified": obj.modified,
    }


def _owned_fields(
    row: Photometry | Spectrum | Comment | Classification | Annotation,
) -> dict[str, Any]:
    return {
        "id": row.id,
        "obj_id": row.obj_id,
        "owner_id": row.owner_id,
        "created_at": row.created_at,
        "modified": row.modified,
    }


def photometry_dict(point: Photometry, principal: Principal) -> dict[str, Any]:
    return {
        **_owned_fields(point),
        **export_point(point, point.instrument.name),
        "origin": point.origin,
        "groups": visible_groups_brief(point.groups, principal),
    }


def spectrum_dict(spectrum: Spectrum, principal: Principal) -> dict[str, Any]:
    return {
        **_owned_fields(spectrum),
        "instrument_id": spectrum.instrument_id,
        "instrument_name": spectrum.instrument.name,
        "observed_at": spectrum.observed_at,
        "wavelengths": spectrum.wavelengths,
        "fluxes": spectrum.fluxes,
        "errors": spectrum.errors,
        "units": spectrum.units,
        "origin": spectrum.origin,
        "type": spectrum.type,
        "altdata": spectrum.altdata,
        "groups": visible_groups_brief(spectrum.groups, principal),
    }


def comment_dict(comment: Comment, author: str | None, principal: Principal) -> dict[str, Any]:
    return {
        **_owned_fields(comment),
        "text": comment.text,
        "bot": comment.bot,
        "origin": comment.origin,
        "author_id": comment.owner_id,
        "author": author,
        "groups": visible_groups_brief(comment.groups, principal),
    }


def classification_dict(row: Classification, principal: Principal) -> dict[str, Any]:
    return {
        **_owned_fields(row),
        "classification": row.classification,
        "probability": row.probability,
        "taxonomy": row.taxonomy,
        "ml": row.ml,
        "author_id": row.owner_id,
        "groups": visible_groups_brief(row.groups, principal),
    }


def annotation_dict(annotation: Annotation, principal: Principal) -> dict[str, Any]:
    return {
        **_owned_fields(annotation),
        "origin": annotation.origin,
        "data": annotation.data,
        "author_id": annotation.owner_id,
        "groups": visible_groups_brief(annotation.groups, principal),
    }
