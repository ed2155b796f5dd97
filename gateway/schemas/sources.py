"""Sources and their data: instruments, photometry, spectra, comments, classifications,
annotations, and the summary and redshift edits."""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Annotated, Any, cast

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    model_validator,
)

from gateway.schemas.analyses import Analysis
from gateway.schemas.common import Closed, GroupBrief, OpenObject, Paged, Timestamp
from gateway.schemas.validation import CheckedLater, WhenMissing, field_check
from gateway.source_access import (
    bool_field,
    check_obj_id,
    int_id,
    number_field,
    object_field,
    optional_number,
    optional_text,
    required,
    text_field,
)
from http_edge.web import ApiError, bad_request, finite

Numbers = list[float | None] | float | None
MAX_COMMENT = 65_536
MAX_FILTERS = 200

Text = Annotated[str, field_check(text_field)]
OptionalText = Annotated[str | None, field_check(optional_text)]
OptionalNumber = Annotated[float | None, field_check(optional_number)]
# Checked by the handler once it has found the source (or not): see ``CheckedLater``.
LaterGroupIds = Annotated[list[int] | None, CheckedLater]


def _obj_id(body: dict[str, Any], name: str) -> str:
    return check_obj_id(required(body, name))


def _ra(body: dict[str, Any], name: str) -> float:
    ra = number_field(body, name)
    if not 0 <= ra < 360:
        raise bad_request(f"Invalid ra: {ra} (must be in [0, 360))")
    return ra


def _dec(body: dict[str, Any], name: str) -> float:
    dec = number_field(body, name)
    if not -90 <= dec <= 90:
        raise bad_request(f"Invalid dec: {dec} (must be in [-90, 90])")
    return dec


def _redshift_error(body: dict[str, Any], name: str) -> float | None:
    error = optional_number(body, name)
    if error is not None and error < 0:
        raise bad_request("Invalid redshift_error: must be >= 0")
    return error


class NewSource(BaseModel):
    """Fields in the order the handler checks them; ``group_ids`` is checked with the groups."""

    id: Annotated[str, field_check(_obj_id)]
    ra: Annotated[float, field_check(_ra)]
    dec: Annotated[float, field_check(_dec)]
    redshift_error: Annotated[float | None, field_check(_redshift_error)] = None
    redshift: OptionalNumber = None
    redshift_origin: OptionalText = None
    group_ids: LaterGroupIds = None


def _group_id_list(body: dict[str, Any], name: str) -> list[int]:
    """Sorted, without repeats; null or empty means none."""
    value = body.get(name) or []
    if not isinstance(value, list) or not all(
        isinstance(g, int) and not isinstance(g, bool) for g in value
    ):
        raise bad_request(f"Invalid {name}: must be a list of integer group IDs")
    return sorted(set(value))


def _obj_id_named(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(OBJ_ID_MISSING)
    return value


OBJ_ID_MISSING = "Missing required parameter: objId"
GroupIdList = Annotated[list[int], field_check(_group_id_list)]


class SourceGroupsChange(BaseModel):
    """At least one of ``inviteGroupIds`` and ``unsaveGroupIds`` must name a group."""

    objId: Annotated[str, WhenMissing(OBJ_ID_MISSING), BeforeValidator(_obj_id_named)]
    inviteGroupIds: GroupIdList | None = None
    unsaveGroupIds: GroupIdList | None = None

    @model_validator(mode="after")
    def _names_a_group(self) -> SourceGroupsChange:
        if not self.inviteGroupIds and not self.unsaveGroupIds:
            raise ValueError("One of inviteGroupIds or unsaveGroupIds is required")
        return self


MAX_SUMMARY_CHARS = 20_000
SUMMARY_FIELDS = frozenset({"summary", "summary_origin", "is_bot", "analysis_id"})
REDSHIFT_FIELDS = frozenset({"redshift", "redshift_error", "redshift_origin"})


def _summary(value: Any) -> str | None:
    """Stripped; null clears the summary."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError("Invalid summary: must be a non-empty string, or null to clear it")
    if len(value) > MAX_SUMMARY_CHARS:
        raise ValueError(f"Invalid summary: must be at most {MAX_SUMMARY_CHARS} characters")
    return value.strip()


def _analysis_id(body: dict[str, Any], name: str) -> int | None:
    value = body[name]
    return None if value is None else int_id(value, name)


class SourceEdit(Closed):
    """A summary (``null`` clears it, with a history entry) and/or the redshift: only the
    fields sent change. Fields are in the order the handler checks them."""

    summary: Annotated[str | None, BeforeValidator(_summary)] = None
    summary_origin: OptionalText = None
    is_bot: Annotated[bool | None, field_check(partial(bool_field, default=False))] = None
    analysis_id: Annotated[int | None, field_check(_analysis_id)] = None
    redshift: OptionalNumber = None
    redshift_error: Annotated[float | None, field_check(_redshift_error)] = None
    redshift_origin: OptionalText = None

    @model_validator(mode="before")
    @classmethod
    def _known_fields_and_a_summary(cls, body: Any) -> Any:
        if not isinstance(body, dict):
            return body
        unknown = sorted(body.keys() - SUMMARY_FIELDS - REDSHIFT_FIELDS)
        if unknown:
            raise ValueError(f"Invalid fields for a source: {unknown}")
        extra = sorted(SUMMARY_FIELDS & body.keys())
        if "summary" not in body and extra:
            raise ValueError(f"{', '.join(extra)} describe a summary: give summary too")
        return body

    @model_validator(mode="after")
    def _something_to_update(self) -> SourceEdit:
        if not self.model_fields_set:
            raise ValueError(
                "Nothing to update: give summary, redshift, redshift_error or redshift_origin"
            )
        return self


def _telescope_name(value: Any, info: ValidationInfo) -> Any:
    """SkyPortal's older name of ``telescope``: always checked, used only without it."""
    try:
        name = optional_text({"telescope_name": value}, "telescope_name")
    except ApiError as exc:
        raise ValueError(exc.message) from None
    return None if info.data.get("telescope") is not None else name


def _filters(value: object) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(
        isinstance(f, str) and f.strip() and len(f) <= 64 for f in value
    ):
        raise ValueError("Invalid filters: must be a list of filter names (strings)")
    if len(value) > MAX_FILTERS:
        raise ValueError(f"Invalid filters: at most {MAX_FILTERS} filters")
    if len(set(value)) != len(value):
        raise ValueError("Invalid filters: a filter is listed twice")
    return list(value)


class NewInstrument(BaseModel):
    name: Text
    telescope: OptionalText = None
    telescope_name: Annotated[str | None, BeforeValidator(_telescope_name)] = None
    filters: Annotated[list[str] | None, BeforeValidator(_filters)] = None


class NewPhotometry(BaseModel):
    """Columns: each a list (one value per point) or one value for every point; either flux
    (``flux``, ``fluxerr``, ``zp``) or magnitudes (``mag``, ``magerr``, ``limiting_mag``)."""

    obj_id: str | list[str]
    instrument_id: int | list[int]
    mjd: float | list[float]
    filter: str | list[str]
    flux: Numbers = None
    fluxerr: Numbers = None
    zp: Numbers = None
    mag: Numbers = None
    magerr: Numbers = None
    limiting_mag: Numbers = None
    magsys: str | list[str] | None = None
    origin: str | list[str | None] | None = None
    group_ids: list[int] | None = None


MAX_SPECTRUM_POINTS = 500_000
SPECTRUM_TYPES = ("source", "host", "host_center")


def _spectrum_array(body: dict[str, Any], name: str) -> list[float]:
    values = required(body, name)
    if not isinstance(values, list) or not values:
        raise bad_request(f"Invalid {name}: must be a non-empty list of numbers")
    if len(values) > MAX_SPECTRUM_POINTS:
        raise bad_request(f"Invalid {name}: at most {MAX_SPECTRUM_POINTS} points")
    return [cast(float, finite(value, f"{name}[{i}]")) for i, value in enumerate(values)]


def _errors_of_same_length(value: Any, info: ValidationInfo) -> list[float] | None:
    """The errors (if any), once the three arrays are known to have one length."""
    errors = None
    if value is not None:
        errors = _spectrum_array_value(value, "errors")
    wavelengths, fluxes = info.data.get("wavelengths", []), info.data.get("fluxes", [])
    if len(fluxes) != len(wavelengths) or (errors is not None and len(errors) != len(fluxes)):
        raise ValueError("wavelengths, fluxes and errors must have the same length")
    return errors


def _spectrum_array_value(value: Any, name: str) -> list[float]:
    try:
        return _spectrum_array({name: value}, name)
    except ApiError as exc:
        raise ValueError(exc.message) from None


def _spectrum_type(value: Any) -> str:
    """Absent, null or empty: ``source``."""
    kind = value or "source"
    if kind not in SPECTRUM_TYPES:
        raise ValueError(f"Invalid type: {kind!r} (one of {list(SPECTRUM_TYPES)})")
    return cast(str, kind)


def _optional_object(body: dict[str, Any], name: str) -> dict[str, Any] | None:
    return None if body[name] is None else object_field(body, name)


def _observed_at(body: dict[str, Any], name: str) -> str:
    value = required(body, name)
    if not isinstance(value, str):
        raise bad_request("Invalid observed_at: must be an ISO 8601 date-time string")
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise bad_request(f"Invalid observed_at: {value!r} is not an ISO 8601 date-time") from None
    return value


def _instrument_id_required(schema: dict[str, Any]) -> None:
    schema["required"] = [*schema.get("required", []), "instrument_id"]


class NewSpectrum(BaseModel):
    """Fields in the order the handler checks them. ``obj_id`` (once present) and
    ``instrument_id`` (required, its absence told after the source is found) are checked with
    the database, as are ``group_ids``."""

    model_config = ConfigDict(json_schema_extra=_instrument_id_required)

    wavelengths: Annotated[list[float], field_check(_spectrum_array)]
    fluxes: Annotated[list[float], field_check(_spectrum_array)]
    errors: Annotated[list[float] | None, BeforeValidator(_errors_of_same_length)] = Field(
        default=None, validate_default=True
    )
    type: Annotated[str | None, BeforeValidator(_spectrum_type)] = Field(
        default=None, validate_default=True
    )
    altdata: Annotated[OpenObject | None, field_check(_optional_object)] = None
    observed_at: Annotated[str, field_check(_observed_at)]
    units: Annotated[str | None, field_check(partial(optional_text, max_length=64))] = None
    origin: OptionalText = None
    obj_id: Annotated[str, CheckedLater, field_check(required)]
    instrument_id: Annotated[int | None, CheckedLater] = None
    group_ids: LaterGroupIds = None


class NewComment(BaseModel):
    text: Annotated[str, field_check(partial(text_field, max_length=MAX_COMMENT))]
    origin: OptionalText = None
    group_ids: LaterGroupIds = None


class NewCommentOn(NewComment):
    # Checked by the handler: its presence first, its source with the database.
    obj_id: Annotated[str, CheckedLater]


def _probability(body: dict[str, Any], name: str) -> float | None:
    probability = optional_number(body, name)
    if probability is not None and not 0 <= probability <= 1:
        raise bad_request(f"Invalid probability: {probability} (must be between 0 and 1)")
    return probability


class NewClassification(BaseModel):
    """Fields in the order the handler checks them; ``obj_id`` (beyond being there) and
    ``group_ids`` are checked with the database."""

    probability: Annotated[float | None, field_check(_probability)] = None
    classification: Text
    taxonomy: OptionalText = None
    ml: Annotated[bool | None, field_check(partial(bool_field, default=False))] = None
    # Here only refused when absent or null; whether it names a source is the handler's.
    obj_id: Annotated[str, CheckedLater, field_check(required)]
    group_ids: LaterGroupIds = None


class NewAnnotation(BaseModel):
    origin: Text
    data: Annotated[OpenObject, field_check(object_field)]
    group_ids: LaterGroupIds = None


class SourceCreated(BaseModel):
    id: str


class GroupsChanged(BaseModel):
    saved_group_ids: list[int]
    unsaved_group_ids: list[int]


class SummaryEntry(BaseModel):
    model_config = ConfigDict(extra="allow")


class Source(BaseModel):
    id: str
    ra: float
    dec: float
    redshift: float | None
    redshift_error: float | None
    redshift_origin: str | None
    summary: str | None
    summary_history: list[SummaryEntry]
    groups: list[GroupBrief]
    created_by_id: int | None
    created_at: Timestamp
    modified: Timestamp | None


class SourceWithAnalyses(Source):
    analyses: list[Analysis] | None = None


class SourcePage(Paged):
    sources: list[Source]


class Instrument(BaseModel):
    id: int
    name: str
    telescope: str | None
    filters: list[str]
    created_at: Timestamp


class Owned(BaseModel):
    """A per-source row; its owner (and author) is null once that user is deleted."""

    id: int
    obj_id: str
    owner_id: int | None
    created_at: Timestamp
    modified: Timestamp | None
    groups: list[GroupBrief]


class PhotometryPoint(Owned):
    mjd: float
    flux: float | None
    fluxerr: float
    mag: float | None
    magerr: float | None
    filter: str
    magsys: str
    limiting_mag: float | None
    zp: float
    instrument_name: str
    instrument_id: int
    origin: str | None
    phase: float | None = None


class PhotometryPage(Paged):
    obj_id: str
    photometry: list[PhotometryPoint]


class PhotometryCreated(BaseModel):
    ids: list[int]


class Spectrum(Owned):
    instrument_id: int
    instrument_name: str
    observed_at: Timestamp
    wavelengths: list[float]
    fluxes: list[float]
    errors: list[float] | None
    units: str | None
    origin: str | None
    type: str | None
    altdata: Any


class SpectrumPage(Paged):
    obj_id: str
    spectra: list[Spectrum]


class Comment(Owned):
    text: str
    bot: bool | None
    origin: str | None
    author_id: int | None
    author: str | None


class CommentCreated(BaseModel):
    comment_id: int


class Classification(Owned):
    classification: str
    probability: float | None
    taxonomy: str | None
    ml: bool | None
    author_id: int | None


class ClassificationCreated(BaseModel):
    classification_id: int


class Annotation(Owned):
    origin: str
    data: Any
    author_id: int | None


class AnnotationCreated(BaseModel):
    annotation_id: int
