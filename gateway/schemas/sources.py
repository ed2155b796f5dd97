"""Sources and their data: instruments, photometry, spectra, comments, classifications,
annotations, and the summary and redshift edits."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from gateway.schemas.analyses import Analysis
from gateway.schemas.common import Closed, GroupBrief, OpenObject, Paged, Timestamp

Numbers = list[float | None] | float | None


class NewSource(BaseModel):
    id: str
    ra: float
    dec: float
    redshift: float | None = None
    redshift_error: float | None = None
    redshift_origin: str | None = None
    group_ids: list[int] | None = None


class SourceGroupsChange(BaseModel):
    """At least one of ``inviteGroupIds`` and ``unsaveGroupIds`` must name a group."""

    objId: str
    inviteGroupIds: list[int] | None = None
    unsaveGroupIds: list[int] | None = None


class SourceEdit(Closed):
    """A summary (``null`` clears it, with a history entry) and/or the redshift."""

    summary: str | None = None
    summary_origin: str | None = None
    is_bot: bool | None = None
    analysis_id: int | None = None
    redshift: float | None = None
    redshift_error: float | None = None
    redshift_origin: str | None = None


class NewInstrument(BaseModel):
    name: str
    telescope: str | None = None
    telescope_name: str | None = None
    filters: list[str] | None = None


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


class NewSpectrum(BaseModel):
    obj_id: str
    instrument_id: int
    observed_at: str
    wavelengths: list[float]
    fluxes: list[float]
    errors: list[float] | None = None
    units: str | None = None
    origin: str | None = None
    type: str | None = None
    altdata: OpenObject | None = None
    group_ids: list[int] | None = None


class NewComment(BaseModel):
    text: str
    origin: str | None = None
    group_ids: list[int] | None = None


class NewCommentOn(NewComment):
    obj_id: str


class NewClassification(BaseModel):
    obj_id: str
    classification: str
    probability: float | None = None
    taxonomy: str | None = None
    ml: bool | None = None
    group_ids: list[int] | None = None


class NewAnnotation(BaseModel):
    origin: str
    data: OpenObject
    group_ids: list[int] | None = None


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
