"""The analysis-service registry. Secrets are write-only: answers only say whether one is set."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gateway.schemas.common import GroupBrief, Paged, Timestamp

# The registry accepts SkyPortal's spellings too: booleans as "true"/"false" text, numbers
# as text, parameter declarations as a JSON string.
Flag = bool | str
Declarations = dict[str, Any] | str


class ServiceChange(BaseModel):
    """The fields of a registration; a PATCH sends any of them. Unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str | None = None
    display_name: str | None = None
    description: str | None = None
    version: str | None = None
    contact_name: str | None = None
    contact_email: str | None = None
    url: str | None = None
    optional_analysis_parameters: Declarations | None = None
    authentication_type: str | None = None
    authinfo: dict[str, Any] | str | None = Field(default=None, alias="_authinfo")
    enabled: Flag | None = None
    analysis_type: str | None = None
    input_data_types: list[str] | None = None
    inputs_format: str | None = None
    timeout: float | str | None = None
    upload_only: Flag | None = None
    is_summary: Flag | None = None
    display_on_resource_dropdown: Flag | None = None
    signing_secret: str | None = None
    group_ids: list[int] | None = None


class NewService(ServiceChange):
    name: str
    display_name: str
    url: str
    authentication_type: str
    analysis_type: str


class Service(BaseModel):
    id: int
    name: str
    display_name: str
    description: str | None
    version: str | None
    contact_name: str | None
    contact_email: str | None
    enabled: bool
    analysis_type: str
    input_data_types: list[str]
    inputs_format: str
    timeout: float
    upload_only: bool
    is_summary: bool
    display_on_resource_dropdown: bool
    url: str
    # As stored: an object or the JSON text it was registered as (lists parse the text).
    optional_analysis_parameters: Any
    authentication_type: str
    has_authinfo: bool
    has_signing_secret: bool
    created_at: Timestamp
    modified: Timestamp
    groups: list[GroupBrief]


class ServicePage(Paged):
    analysis_services: list[Service]
