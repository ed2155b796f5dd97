"""Users, groups, API tokens and the caller's profile."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field, model_validator
from pydantic.json_schema import SkipJsonSchema

from gateway.schemas.common import MAX_NAME, Closed, Paged, RowId, Timestamp, group_id_list
from gateway.schemas.validation import Boolean, WhenMissing, checked_by, must_be_boolean
from shared.domain.accounts import AccountError, check_acls, check_name
from shared.domain.ids import is_id


def _name_field(field: str) -> Any:
    """A non-empty name of at most 255 characters, stripped."""
    return checked_by(lambda value: check_name(value, field), AccountError)


def _user_id_list(value: Any) -> list[int]:
    if not isinstance(value, list) or not all(is_id(u) for u in value):
        raise ValueError("Invalid group_admins: must be a list of user IDs")
    return value


def _missing_name(field: str) -> WhenMissing:
    return WhenMissing(f"`{field}` is required and must be a non-empty string")


Acls = Annotated[list[str], checked_by(check_acls, AccountError)]


class NewUser(BaseModel):
    username: Annotated[str, _missing_name("username"), _name_field("username")]
    # Sorted, without repeats.
    acls: Acls = []
    is_admin: Boolean = False
    group_ids: Annotated[list[int], BeforeValidator(group_id_list)] = []


class UserChange(Closed):
    """Only these two fields may be changed; any other field is refused."""

    # Absent leaves the value as it is; null is refused, as any other non-list or non-boolean.
    acls: Annotated[list[str] | SkipJsonSchema[None], checked_by(check_acls, AccountError)] = None
    is_admin: Annotated[bool | SkipJsonSchema[None], BeforeValidator(must_be_boolean)] = None

    @model_validator(mode="before")
    @classmethod
    def _only_known_fields(cls, body: Any) -> Any:
        unknown = set(body) - set(cls.model_fields) if isinstance(body, dict) else set()
        if unknown:
            raise ValueError(f"Invalid fields for a user: {sorted(unknown)}")
        return body


class NewGroup(BaseModel):
    name: Annotated[str, _missing_name("name"), _name_field("name")]
    description: str | None = None
    group_admins: Annotated[list[int], BeforeValidator(_user_id_list)] = []


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
