"""Provisioning used by the CLI: users, groups and tokens."""

from __future__ import annotations

from collections.abc import Iterable

from shared.db.migrate import upgrade_async
from shared.domain.accounts import AccountError, ensure_user, issue_token
from shared.runtime.resources import open_resources
from shared.runtime.settings import Settings


async def create_token(
    settings: Settings,
    username: str,
    *,
    admin: bool = False,
    acls: Iterable[str] = (),
    groups: Iterable[str] = (),
) -> str:
    """Create the user and groups if missing, and return a new token for the user."""
    if settings.uses_sqlite:
        await upgrade_async(settings.database_url)
    async with open_resources(settings) as resources, resources.sessions.begin() as session:
        try:
            user = await ensure_user(session, username, admin=admin, acls=acls, groups=groups)
        except AccountError as exc:
            raise ValueError(str(exc)) from None
        _, secret = await issue_token(session, user, name="cli")
    return secret
