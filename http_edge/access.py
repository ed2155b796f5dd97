"""Who may call a route: the access level every route table entry names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

Level = Literal["public", "user", "acl", "admin"]


@dataclass(frozen=True)
class Access:
    """``Access.PUBLIC``: anyone, no token. ``Access.USER``: any authenticated caller (an API
    token, or the web app's session cookie). ``Access.ACL(name)``: an authenticated caller
    holding that ACL (system admins hold every ACL; view-only users none). ``Access.ADMIN``:
    a system admin.

    ``cached_caller``: the caller may be a copy cached by this process rather than read for
    this request; only for a handler whose write checks the copy is still current (and
    authenticates afresh when it is not), as starting an analysis does."""

    level: Level
    acl: str | None = None
    cached_caller: bool = False

    PUBLIC: ClassVar[Access]
    USER: ClassVar[Access]
    ADMIN: ClassVar[Access]

    @classmethod
    def ACL(cls, name: str, *, cached_caller: bool = False) -> Access:  # named like the constants
        return cls("acl", name, cached_caller)

    @property
    def public(self) -> bool:
        return self.level == "public"


Access.PUBLIC = Access("public")
Access.USER = Access("user")
Access.ADMIN = Access("admin")
