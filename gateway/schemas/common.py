"""Building blocks shared by the request and response models: SkyPortal's envelopes, the
empty answer, timestamps and the short group form."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from shared.domain.ids import MAX_ID, is_id

DataT = TypeVar("DataT")
ItemT = TypeVar("ItemT")

# Timestamps are ISO 8601 text; SQLite's carry no offset, so no "date-time" format is claimed.
Timestamp = Annotated[str, Field(description="ISO 8601 date and time")]
OpenObject = dict[str, Any]
RowId = Annotated[int, Field(ge=0, le=MAX_ID)]
MAX_NAME = 255
GROUP_IDS_REFUSAL = "Invalid group_ids: must be a list of integer group IDs"


def group_id_list(value: Any) -> list[int]:
    """A list of row ids, refused in the words of the hand-written group checks."""
    if not isinstance(value, list) or not all(is_id(g) for g in value):
        raise ValueError(GROUP_IDS_REFUSAL)
    return value


class Open(BaseModel):
    """An answer object that may carry more fields than those listed."""

    model_config = ConfigDict(extra="allow")


class Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Empty(Closed):
    """``data: {}``: the operation has nothing to report beyond success."""


class Success(BaseModel, Generic[DataT]):
    status: Literal["success"]
    data: DataT
    version: str


class SuccessPage(BaseModel, Generic[ItemT]):
    """A page of a list SkyPortal answers as a bare list: the paging facts sit beside ``data``."""

    status: Literal["success"]
    data: list[ItemT]
    totalMatches: int
    pageNumber: int
    numPerPage: int
    version: str


class Paged(BaseModel):
    """The paging facts of a paged answer object (``Page.answer``)."""

    totalMatches: int
    pageNumber: int
    numPerPage: int


class ErrorEnvelope(BaseModel):
    status: Literal["error"]
    message: str
    data: Empty
    version: str


class GroupBrief(BaseModel):
    id: int
    name: str


class Created(BaseModel):
    """The id of what was created."""

    id: int


@dataclass(frozen=True)
class BinaryContent:
    """Not a JSON answer: a body in one of ``media_types``; ``items`` describes each event of
    a stream (Server-Sent Events)."""

    media_types: tuple[str, ...]
    description: str
    items: type[BaseModel] | None = None


def binary(description: str, *media_types: str) -> BinaryContent:
    return BinaryContent(media_types, description)
