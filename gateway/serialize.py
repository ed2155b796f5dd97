"""Turning rows into API dicts. Secrets never pass through here."""

from __future__ import annotations

from typing import Any

from shared.db.models import Group, Token, User


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
