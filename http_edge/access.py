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
    a system admin."""

    level: Level
    acl: str | None = None

    PUBLIC: ClassVar[Access]
    USER: ClassVar[Access]
    ADMIN: ClassVar[Access]

    @classmethod
    def ACL(cls, name: str) -> Access:  # named like the constants it sits beside
        return cls("acl", name)

    @property
    def public(self) -> bool:
        return self.level == "public"


Access.PUBLIC = Access("public")
Access.USER = Access("user")
Access.ADMIN = Access("admin")
