"""Users, groups, API tokens and the caller's profile."""

from __future__ import annotations

from pydantic import BaseModel, Field

from gateway.schemas.common import MAX_NAME, Closed, Paged, RowId, Timestamp


class NewUser(BaseModel):
    username: str
    is_admin: bool = False
    acls: list[str] = []
    group_ids: list[int] = []


class UserChange(Closed):
    """Only these two fields may be changed; any other field is refused."""

    acls: list[str] | None = None
    is_admin: bool | None = None


class NewGroup(BaseModel):
    name: str
    description: str | None = None
    group_admins: list[int] = []


class NewMember(BaseModel):
    """``userID`` (or ``user_id``) or ``username`` names the user."""

    userID: RowId | None = None
    user_id: RowId | None = None
    username: str | None = None
    admin: bool = False


class NewToken(BaseModel):
    """A token of the caller, or (system admins) of ``user_id``."""

    name: str = Field("", max_length=MAX_NAME)
    # Absent means the caller; null is refused.
    user_id: RowId | None = None


class Membership(BaseModel):
    id: int
    admin: bool


class User(BaseModel):
    id: int
    username: str
    is_admin: bool
    acls: list[str]
    groups: list[Membership]
    created_at: Timestamp


class UserPage(Paged):
    users: list[User]


class Profile(User):
    llm_key_set: bool


class Member(BaseModel):
    id: int
    username: str
    admin: bool


class Group(BaseModel):
    id: int
    name: str
    description: str | None
    created_at: Timestamp
    is_member: bool
    can_admin: bool


class GroupWithMembers(Group):
    users: list[Member]


class Groups(BaseModel):
    user_groups: list[Group]
    all_groups: list[Group]


class MemberAdded(BaseModel):
    group_id: int
    user_id: int
    admin: bool


class Token(BaseModel):
    id: int
    name: str
    user_id: int
    created_at: Timestamp
    last_used_at: Timestamp | None


class IssuedToken(Token):
    token: str
