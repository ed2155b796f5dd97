"""The data sent to an analysis service: what the analysis author may read, in SkyPortal's shape.

For each of the service's ``input_data_types`` we collect records with SkyPortal's exact
columns, only from rows shared with a group the author belongs to, then
write them either as CSV strings (SkyPortal's format, ``inputs_format == "csv"``) or as typed
JSON records (``inputs_format == "json"``).

Differences from SkyPortal, all fixes:

- photometry is deduplicated on (mjd, filter, instrument), keeping the point with the smallest
  error, so that two instruments observing at the same time are both kept;
- no photometry gives a CSV holding only the header (SkyPortal failed the start);
- nested values (lists, dicts) are JSON text, which ``json.loads`` reads and which
  ``ast.literal_eval`` reads too for lists of numbers; datetimes are ISO 8601 in UTC with the
  offset (SkyPortal wrote naive ``YYYY-MM-DD HH:MM:SS.ffffff``).
"""

from __future__ import annotations

import asyncio
import csv
import functools
import io
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Select, Table, and_, join, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import lazyload

from shared.db.dialect import in_bound, name_of, outerjoin_each
from shared.db.models import (
    Annotation,
    Classification,
    Comment,
    Instrument,
    Obj,
    Photometry,
    Spectrum,
    annotation_groups,
    classification_groups,
    comment_groups,
    obj_groups,
    photometry_groups,
    spectrum_groups,
)
from shared.domain.access import Principal, visible, visible_to_bound
from shared.domain.enums import InputDataType
from shared.science.photometry import (
    PHOTOMETRY_CSV_COLUMNS,
    PhotometryPoint,
    export_point,
    fluxerr_to_magerr,
)

INPUTS_SCHEMA_VERSION = 1
CSV_FORMAT = "csv"
JSON_FORMAT = "json"

PHOTOMETRY_COLUMNS = PHOTOMETRY_CSV_COLUMNS
SPECTRA_COLUMNS = (
    "observed_at",
    "wavelengths",
    "fluxes",
    "errors",
    "units",
    "altdata",
    "created_at",
    "origin",
    "modified",
    "type",
)
COMMENTS_COLUMNS = ("text", "bot", "modified", "origin", "created_at")
CLASSIFICATIONS_COLUMNS = ("classification", "probability", "modified", "created_at")
ANNOTATIONS_COLUMNS = ("data", "modified", "origin", "created_at")
REDSHIFT_COLUMNS = ("redshift", "redshift_error", "redshift_origin")

COLUMNS: dict[str, tuple[str, ...]] = {
    InputDataType.PHOTOMETRY: PHOTOMETRY_COLUMNS,
    InputDataType.SPECTRA: SPECTRA_COLUMNS,
    InputDataType.COMMENTS: COMMENTS_COLUMNS,
    InputDataType.CLASSIFICATIONS: CLASSIFICATIONS_COLUMNS,
    InputDataType.ANNOTATIONS: ANNOTATIONS_COLUMNS,
    InputDataType.REDSHIFT: REDSHIFT_COLUMNS,
}

Record = dict[str, Any]

# Up to this many records in a claim are written on the event loop (about 10 µs a record, so
# at most a few milliseconds): for fewer, the hop to a worker thread costs more than the work.
INLINE_RECORDS = 300


class InputsError(ValueError):
    """The inputs cannot be assembled (e.g. the author can no longer read the source)."""


@dataclass(frozen=True)
class PhotometrySelection:
    """``input_filters.photometry``: keep only these filters / instrument ids (None = all)."""

    filters: frozenset[str] | None = None
    instruments: frozenset[int] | None = None

    @classmethod
    def from_input_filters(cls, input_filters: Mapping[str, Any] | None) -> PhotometrySelection:
        section = (input_filters or {}).get("photometry") or {}
        if not isinstance(section, Mapping):
            return cls()
        filters = [f.strip() for f in section.get("filters") or () if isinstance(f, str)]
        instruments = [_instrument_id(i) for i in section.get("instruments") or ()]
        return cls(
            filters=frozenset(f for f in filters if f) or None,
            instruments=frozenset(i for i in instruments if i is not None) or None,
        )


def _instrument_id(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


# --- collecting records ---------------------------------------------------------------------


class VisibleObj(Protocol):
    """What the inputs read of a source: its id and its redshift columns."""

    @property
    def id(self) -> str: ...
    @property
    def redshift(self) -> float | None: ...
    @property
    def redshift_error(self) -> float | None: ...
    @property
    def redshift_origin(self) -> str | None: ...


@dataclass(frozen=True)
class Source:
    """A source the reader may read: its id and redshift columns (a :class:`VisibleObj`)."""

    id: str
    redshift: float | None
    redshift_error: float | None
    redshift_origin: str | None


def _source_of(row: Any) -> Source:
    return Source(row.source_id, row.redshift, row.redshift_error, row.redshift_origin)


async def load_visible_objs(
    session: AsyncSession, obj_ids: Sequence[str], principal: Principal
) -> dict[str, VisibleObj]:
    """Those of the sources the principal may read, by id: one query, plain rows."""
    query = _visible_objs_query(name_of(session), principal.is_admin)
    parameters = {"read_objs": sorted(set(obj_ids)), "reader_groups": sorted(principal.group_ids)}
    return {row.source_id: _source_of(row) for row in await session.execute(query, parameters)}


@functools.cache
def _visible_objs_query(dialect: str, admin: bool) -> Select[Any]:
    """Built once per dialect (and for admins): bound with the sources and the reader's groups."""
    readable = visible_to_bound(obj_groups, Obj.id, "reader_groups", dialect, admin=admin)
    columns = (Obj.id.label("source_id"), *(getattr(Obj, c) for c in REDSHIFT_COLUMNS))
    return select(*columns).where(in_bound(Obj.id, "read_objs", dialect), readable)


async def collect_records(
    session: AsyncSession,
    obj: VisibleObj,
    principal: Principal,
    input_types: Iterable[str],
    photometry: list[Record],
) -> dict[str, list[Record]]:
    """Records per input type, each with exactly the columns in ``COLUMNS`` (``photometry``:
    the source's photometry records, read for all the sources of a batch at once)."""
    records: dict[str, list[Record]] = {}
    for input_type in input_types:
        if input_type == InputDataType.PHOTOMETRY:
            records[input_type] = photometry
        elif input_type in _ROW_TABLES:
            records[input_type] = await _visible_records(session, input_type, obj.id, principal)
        elif input_type == InputDataType.REDSHIFT:
            records[input_type] = [{c: getattr(obj, c) for c in REDSHIFT_COLUMNS}]
        else:
            raise InputsError(f"Unknown input data type: {input_type}")
    return records


class StoredPoint(PhotometryPoint, Protocol):
    """A point as the inputs read it: its columns, its row id and source, its instrument."""

    @property
    def id(self) -> int: ...
    @property
    def obj_id(self) -> str: ...
    @property
    def instrument_name(self) -> str: ...


# Plain result rows, not ORM objects: a claim reads many points and only their columns.
_POINT_COLUMNS = (
    Photometry.id,
    Photometry.obj_id,
    Photometry.mjd,
    Photometry.filter,
    Photometry.flux,
    Photometry.fluxerr,
    Photometry.original_limiting_mag,
    Photometry.instrument_id,
    Instrument.name.label("instrument_name"),
)


async def sources_with_photometry(
    session: AsyncSession,
    obj_ids: Sequence[str],
    principal: Principal,
    selection: PhotometrySelection,
) -> tuple[dict[str, VisibleObj], dict[str, list[Record]]]:
    """Those of the sources the principal may read, by id, and each one's photometry records
    the principal may read: one query for them all (the sources joined to their points)."""
    query = _sources_with_photometry_query(
        name_of(session),
        principal.is_admin,
        selection.filters is not None,
        selection.instruments is not None,
    )
    parameters = {
        "read_objs": sorted(set(obj_ids)),
        "reader_groups": sorted(principal.group_ids),
        "chosen_filters": list(selection.filters or ()),
        "chosen_instruments": list(selection.instruments or ()),
    }
    sources: dict[str, VisibleObj] = {}
    points: dict[str, list[StoredPoint]] = {}
    for row in await session.execute(query, parameters):
        if row.source_id not in sources:
            sources[row.source_id] = _source_of(row)
            points[row.source_id] = []
        if row.id is not None:  # the source has a point the reader may read
            points[row.source_id].append(row)
    photometry = {
        obj_id: [_photometry_record(p) for p in deduplicate_photometry(mine)]
        for obj_id, mine in points.items()
    }
    return sources, photometry


@functools.cache
def _sources_with_photometry_query(
    dialect: str, admin: bool, by_filter: bool, by_instrument: bool
) -> Any:
    """Built once per shape: bound with the sources, the reader's groups and the selection.
    The visible sources' query joined to their points: a row per readable point of a
    readable source, or one with no point for a source that has none."""
    readable_point = visible_to_bound(
        photometry_groups, Photometry.id, "reader_groups", dialect, admin=admin
    )
    point_of_source = and_(Photometry.obj_id == Obj.id, readable_point)
    if by_filter:
        point_of_source = and_(
            point_of_source, in_bound(Photometry.filter, "chosen_filters", dialect)
        )
    if by_instrument:
        point_of_source = and_(
            point_of_source, in_bound(Photometry.instrument_id, "chosen_instruments", dialect)
        )
    points = join(Photometry, Instrument, Instrument.id == Photometry.instrument_id)
    sources = _visible_objs_query(dialect, admin)
    return outerjoin_each(dialect, sources, Obj, points, point_of_source, _POINT_COLUMNS, "points")


def _photometry_record(point: StoredPoint) -> Record:
    """The point as exported, with every column of ``PHOTOMETRY_COLUMNS`` (and its
    ``instrument_id``, which the writers leave out: they write only the columns)."""
    record = export_point(point, point.instrument_name)
    # SkyPortal fills this for solar-system objects from the point's altdata; we keep none.
    record["predicted_mag"] = None
    return record


def deduplicate_photometry(points: Sequence[StoredPoint]) -> list[StoredPoint]:
    """One point per (mjd, filter, instrument): the one with the smallest error, by mjd.

    The error is the magnitude error of a detection; non-detections (no magnitude error)
    rank after detections, by their flux error. Ties go to the older row.
    """
    best: dict[tuple[float, str, int], StoredPoint] = {}
    for point in points:
        key = (point.mjd, point.filter, point.instrument_id)
        current = best.get(key)
        if current is None or _error_rank(point) < _error_rank(current):
            best[key] = point
    return sorted(best.values(), key=lambda p: (p.mjd, p.filter, p.instrument_id, p.id))


def _error_rank(point: StoredPoint) -> tuple[int, float, int]:
    magerr = fluxerr_to_magerr(point.flux, point.fluxerr)
    if magerr is not None and math.isfinite(magerr):
        return (0, magerr, point.id)
    fluxerr = point.fluxerr if point.fluxerr is not None else math.inf
    return (1, fluxerr, point.id)


# Per input type: the row's model, its group link table and the order SkyPortal sends rows in.
_ROW_TABLES: dict[str, tuple[Any, Table, tuple[Any, ...]]] = {
    InputDataType.SPECTRA: (Spectrum, spectrum_groups, (Spectrum.observed_at, Spectrum.id)),
    InputDataType.COMMENTS: (
        Comment,
        comment_groups,
        (Comment.created_at.desc(), Comment.id.desc()),
    ),
    InputDataType.CLASSIFICATIONS: (
        Classification,
        classification_groups,
        (Classification.created_at, Classification.id),
    ),
    InputDataType.ANNOTATIONS: (
        Annotation,
        annotation_groups,
        (Annotation.created_at, Annotation.id),
    ),
}


async def _visible_records(
    session: AsyncSession, input_type: str, obj_id: str, principal: Principal
) -> list[Record]:
    """The source's rows of one ``_ROW_TABLES`` type that the principal may read."""
    model, link_table, order = _ROW_TABLES[input_type]
    query = (
        select(model)
        .options(lazyload(model.groups))
        .where(model.obj_id == obj_id, visible(link_table, model.id, principal))
        .order_by(*order)
    )
    rows = await session.scalars(query)
    columns = COLUMNS[input_type]
    return [{c: getattr(row, c) for c in columns} for row in rows]


# --- writing --------------------------------------------------------------------------------


def plain_value(value: Any) -> Any:
    """A JSON-ready value: ISO UTC datetimes, non-finite floats as None, nested the same."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): plain_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_value(v) for v in value]
    return value


def _float_cell(value: float) -> str:
    return repr(value) if math.isfinite(value) else ""


def csv_cell(value: Any) -> str:
    """One CSV cell as pandas would write it, except nested values (JSON) and datetimes (ISO)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, float):
        return _float_cell(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(plain_value(value))
    return str(value)


# The cells of the common types, by exact type (not a subclass: a bool is not written as an
# int); any other value goes through ``csv_cell``. An inputs file has thousands of cells.
_CELL_OF_TYPE: dict[type, Callable[[Any], str]] = {
    str: str,
    float: _float_cell,
    int: str,
    type(None): lambda _: "",
}


def records_to_csv(columns: Sequence[str], records: Iterable[Record]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    cell_of = _CELL_OF_TYPE.get
    writer.writerows(
        [cell_of(type(value), csv_cell)(value) for value in map(record.get, columns)]
        for record in records
    )
    return buffer.getvalue()


def records_to_json(columns: Sequence[str], records: Iterable[Record]) -> list[Record]:
    return [{c: plain_value(record.get(c)) for c in columns} for record in records]


def format_inputs(records: Mapping[str, list[Record]], inputs_format: str) -> dict[str, Any]:
    """Records per type → CSV strings (``csv``) or typed JSON records (``json``)."""
    writer = records_to_json if inputs_format == JSON_FORMAT else records_to_csv
    return {name: writer(COLUMNS[name], rows) for name, rows in records.items()}


@dataclass(frozen=True)
class InputsRequest:
    """Which inputs to assemble: of which source, as whom, of which types, selected how."""

    obj_id: str
    principal: Principal
    input_types: tuple[str, ...]
    input_filters: Mapping[str, Any] | None = None
    inputs_format: str = CSV_FORMAT

    @property
    def reading(self) -> tuple[Any, ...]:
        """What requests that can share their queries have in common."""
        filters = json.dumps(self.input_filters, sort_keys=True, default=str)
        return (self.principal, self.input_types, filters, self.inputs_format)


async def assemble_inputs_many(
    session: AsyncSession, requests: Sequence[InputsRequest]
) -> list[dict[str, Any] | InputsError]:
    """The data part of each request's ``inputs`` (without ``analysis_parameters``), as its
    author sees it, or why it cannot be assembled: requests that read the same way (same
    reader, types and selection) share one query for their sources and one for their
    photometry."""
    records: list[dict[str, list[Record]] | InputsError | None] = [None] * len(requests)
    groups: dict[tuple[Any, ...], list[int]] = {}
    for index, request in enumerate(requests):
        groups.setdefault(request.reading, []).append(index)
    for indexes in groups.values():
        found = await _records_of(session, [requests[i] for i in indexes])
        for index, one in zip(indexes, found, strict=True):
            records[index] = one
    if _record_count(records) <= INLINE_RECORDS:
        return _formatted(records, requests)
    # Writing many rows is CPU work: keep it off the event loop.
    return await asyncio.to_thread(_formatted, records, requests)


def _record_count(records: Sequence[dict[str, list[Record]] | InputsError | None]) -> int:
    return sum(len(rows) for found in records if isinstance(found, dict) for rows in found.values())


async def _records_of(
    session: AsyncSession, requests: Sequence[InputsRequest]
) -> list[dict[str, list[Record]] | InputsError]:
    """The records of requests that read the same way, in their order."""
    first = requests[0]
    obj_ids = [r.obj_id for r in requests]
    photometry: dict[str, list[Record]] = {}
    if InputDataType.PHOTOMETRY in first.input_types:
        selection = PhotometrySelection.from_input_filters(first.input_filters)
        objs, photometry = await sources_with_photometry(
            session, obj_ids, first.principal, selection
        )
    else:
        objs = await load_visible_objs(session, obj_ids, first.principal)
    found: list[dict[str, list[Record]] | InputsError] = []
    for request in requests:
        obj = objs.get(request.obj_id)
        if obj is None:
            found.append(InputsError(f"Obj {request.obj_id} not found"))
            continue
        try:
            found.append(
                await collect_records(
                    session, obj, request.principal, request.input_types, photometry.get(obj.id, [])
                )
            )
        except InputsError as exc:
            found.append(exc)
    return found


def _formatted(
    records: Sequence[dict[str, list[Record]] | InputsError | None],
    requests: Sequence[InputsRequest],
) -> list[dict[str, Any] | InputsError]:
    formatted: list[dict[str, Any] | InputsError] = []
    for found, request in zip(records, requests, strict=True):
        assert found is not None  # every request belongs to a group
        if isinstance(found, InputsError):
            formatted.append(found)
        else:
            formatted.append(format_inputs(found, request.inputs_format))
    return formatted
