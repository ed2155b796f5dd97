"""Photometry: SkyPortal's columnar upload (flux or magnitude space) and paginated reads."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web
from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.auth import principal
from gateway.serialize import photometry_dict
from gateway.source_access import (
    data_groups,
    instrument_or_400,
    visible_obj,
    visible_page,
)
from http_edge.app_keys import SESSIONS, SETTINGS
from http_edge.web import (
    ApiError,
    bad_request,
    finite,
    json_body,
    not_found,
    page_from_query,
    path_int,
    query_bool,
    success,
)
from shared.bus.outbox import enqueue
from shared.db.models import Annotation, Obj, Photometry, annotation_groups, photometry_groups
from shared.domain.access import Principal, visible
from shared.domain.events import PhotometryAdded
from shared.science import phot_stats
from shared.science import photometry as units

MAX_POINTS = 100_000
COMMON_FIELDS = ("obj_id", "instrument_id", "mjd", "filter", "magsys")
FLUX_FIELDS = ("flux", "fluxerr", "zp")
MAG_FIELDS = ("mag", "magerr")
COLUMN_FIELDS = (*COMMON_FIELDS, *FLUX_FIELDS, *MAG_FIELDS, "limiting_mag", "origin")


@dataclass(frozen=True)
class Point:
    """One validated point, already in AB at zero point 23.9."""

    obj_id: str
    instrument_id: int
    mjd: float
    filter: str
    flux: float | None
    fluxerr: float
    original_limiting_mag: float | None
    origin: str | None


def _columns(body: dict[str, Any]) -> tuple[dict[str, list[Any]], int]:
    """Every column as a list: scalars are broadcast, lists must all have one length."""
    lengths = {k: len(body[k]) for k in COLUMN_FIELDS if isinstance(body.get(k), list)}
    sizes = set(lengths.values())
    if len(sizes) > 1:
        raise bad_request(f"All list fields must have the same length; got lengths {lengths}")
    count = sizes.pop() if sizes else 1
    if count == 0:
        raise bad_request("No photometry points given (the lists are empty)")
    if count > MAX_POINTS:
        raise bad_request(f"Too many points in one request: {count} (at most {MAX_POINTS})")
    return {k: _broadcast(body.get(k), count) for k in COLUMN_FIELDS}, count


def _broadcast(value: Any, count: int) -> list[Any]:
    return value if isinstance(value, list) else [value] * count


def _space(body: dict[str, Any]) -> str:
    in_flux = any(k in body for k in FLUX_FIELDS)
    in_mag = any(k in body for k in (*MAG_FIELDS, "limiting_mag"))
    if in_flux and in_mag:
        raise bad_request(
            "Give either flux, fluxerr and zp, or mag, magerr and limiting_mag, not both"
        )
    if not in_flux and not in_mag:
        raise bad_request(
            "Missing photometry: give flux, fluxerr and zp, or mag, magerr and limiting_mag"
        )
    space = "flux" if in_flux else "mag"
    for name in (*COMMON_FIELDS, *(FLUX_FIELDS if in_flux else MAG_FIELDS)):
        if name not in body:
            raise bad_request(f"Missing required field: {name}")
    return space


def _number(value: Any, name: str, index: int) -> float:
    if value is None:
        raise bad_request(f"Missing required field: {name}[{index}]")
    return cast(float, finite(value, f"{name}[{index}]"))


def _optional_number(value: Any, name: str, index: int) -> float | None:
    return finite(value, f"{name}[{index}]", allow_none=True)


def _string(value: Any, name: str, index: int, *, allow_none: bool = False) -> str | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > 255:
        raise bad_request(f"Invalid {name}[{index}]: must be a non-empty string")
    return value


def _flux_point(row: dict[str, Any], i: int) -> tuple[float | None, float, float | None]:
    flux = _optional_number(row["flux"], "flux", i)
    fluxerr = _number(row["fluxerr"], "fluxerr", i)
    zp = _number(row["zp"], "zp", i)
    if fluxerr < 0 or (flux is None and fluxerr == 0):
        raise bad_request(f"Invalid fluxerr[{i}]: must be >= 0 (> 0 for a non-detection)")
    standard_flux = None if flux is None else units.flux_to_standard(flux, zp)
    return standard_flux, units.flux_to_standard(fluxerr, zp), None


def _mag_point(row: dict[str, Any], i: int) -> tuple[float | None, float, float | None]:
    mag = _optional_number(row["mag"], "mag", i)
    magerr = _optional_number(row["magerr"], "magerr", i)
    limit = _optional_number(row["limiting_mag"], "limiting_mag", i)
    if (mag is None) != (magerr is None):
        raise bad_request(f"Invalid point {i}: mag and magerr must both be null or both be set")
    if mag is None or magerr is None:
        if limit is None:
            raise bad_request(f"Invalid point {i}: a non-detection (null mag) needs limiting_mag")
        return None, units.limit_to_fluxerr(limit), limit
    if magerr < 0:
        raise bad_request(f"Invalid magerr[{i}]: must be >= 0")
    return units.mag_to_flux(mag), units.magerr_to_fluxerr(mag, magerr), limit


def _point(row: dict[str, Any], i: int, space: str) -> Point:
    magsys = _string(row["magsys"], "magsys", i)
    if str(magsys).lower() != units.PHOT_SYS:
        raise bad_request(f"Unsupported magsys {magsys!r} (point {i}): only 'ab' is supported")
    obj_id = _string(row["obj_id"], "obj_id", i)
    instrument_id = row["instrument_id"]
    if isinstance(instrument_id, bool) or not isinstance(instrument_id, int):
        raise bad_request(f"Invalid instrument_id[{i}]: {instrument_id!r}")
    try:
        flux, fluxerr, limit = (_flux_point if space == "flux" else _mag_point)(row, i)
    except units.PhotometryValueError as exc:
        raise bad_request(f"Invalid point {i}: {exc}") from None
    return Point(
        obj_id=str(obj_id),
        instrument_id=instrument_id,
        mjd=_number(row["mjd"], "mjd", i),
        filter=str(_string(row["filter"], "filter", i)),
        flux=flux,
        fluxerr=fluxerr,
        original_limiting_mag=limit,
        origin=_string(row["origin"], "origin", i, allow_none=True),
    )


def parse_points(body: dict[str, Any]) -> list[Point]:
    space = _space(body)
    columns, count = _columns(body)
    return [_point({k: column[i] for k, column in columns.items()}, i, space) for i in range(count)]


async def _check_targets(session: AsyncSession, me: Principal, points: list[Point]) -> list[Obj]:
    """The sources named (all visible to the caller); every instrument exists and has the
    filters named."""
    objs = [await visible_obj(session, me, oid) for oid in dict.fromkeys(p.obj_id for p in points)]
    instruments = {
        iid: await instrument_or_400(session, iid)
        for iid in dict.fromkeys(p.instrument_id for p in points)
    }
    for i, point in enumerate(points):
        instrument = instruments[point.instrument_id]
        if point.filter not in instrument.filters:
            raise bad_request(
                f"Invalid filter {point.filter!r} (point {i}): instrument {instrument.name} "
                f"has filters {list(instrument.filters)}"
            )
    return objs


async def post_photometry(request: web.Request) -> web.Response:
    me = principal(request)
    body = await json_body(request, optional=False)
    # Up to MAX_POINTS rows of checks and conversions: CPU work, kept off the event loop.
    points = await asyncio.to_thread(parse_points, body)
    async with request.app[SESSIONS].begin() as session:
        objs = await _check_targets(session, me, points)
        groups = await data_groups(session, me, body.get("group_ids"), objs)
        ids = await _insert_points(session, points, me.user_id, [g.id for g in groups])
        await phot_stats.refresh(session, [obj.id for obj in objs])
        for obj in objs:  # default analyses may run on new photometry
            count = sum(1 for p in points if p.obj_id == obj.id)
            enqueue(session, PhotometryAdded(obj_id=obj.id, count=count))
    return success({"ids": ids})


async def _insert_points(
    session: AsyncSession, points: list[Point], owner_id: int, group_ids: list[int]
) -> list[int]:
    """Bulk inserts (one statement per table) rather than one ORM object per point."""
    result = await session.execute(
        insert(Photometry).returning(Photometry.id, sort_by_parameter_order=True),
        [{**vars(p), "owner_id": owner_id} for p in points],
    )
    ids = list(result.scalars())
    links = [{"photometry_id": i, "group_id": g} for i in ids for g in group_ids]
    await session.execute(insert(photometry_groups), links)
    return ids


async def get_source_photometry(request: web.Request) -> web.Response:
    me = principal(request)
    obj_id = request.match_info["obj_id"]
    settings = request.app[SETTINGS]
    page = page_from_query(request, settings.page_size_max, settings.page_size_max)
    async with request.app[SESSIONS]() as session:
        total, rows = await visible_page(
            session,
            me,
            obj_id,
            Photometry,
            photometry_groups,
            (Photometry.mjd, Photometry.id),
            page,
        )
        points = [photometry_dict(row, me) for row in rows]
        if query_bool(request, "phaseFoldData"):
            period = await newest_period(session, me, obj_id)
            for point in points:
                point["phase"] = math.fmod(point["mjd"], period) / period
    return success(page.answer(total, obj_id=obj_id, photometry=points))


async def newest_period(session: AsyncSession, me: Principal, obj_id: str) -> float:
    """The ``period`` of the newest annotation on the source that the caller may read and
    that holds one (SkyPortal's rule for phase folding); 400 when there is none."""
    annotations = await session.scalars(
        select(Annotation)
        .where(Annotation.obj_id == obj_id, visible(annotation_groups, Annotation.id, me))
        .order_by(Annotation.modified.desc(), Annotation.id.desc())
    )
    for annotation in annotations:
        if isinstance(annotation.data, dict) and "period" in annotation.data:
            period = annotation.data["period"]
            valid = isinstance(period, int | float) and not isinstance(period, bool)
            if not valid or not math.isfinite(period) or period <= 0:
                raise bad_request(
                    f"Invalid period {period!r} in annotation {annotation.id} "
                    f"(origin {annotation.origin!r}): must be a positive number of days"
                )
            return float(period)
    raise bad_request(f"No period for object {obj_id}")


async def delete_photometry(request: web.Request) -> web.Response:
    """The owner of a point (or a system admin) deletes it; its source's statistics follow
    in the same transaction."""
    me = principal(request)
    point_id = path_int(request, "photometry_id")
    missing = not_found(f"Cannot find photometry point with ID: {point_id}")
    async with request.app[SESSIONS].begin() as session:
        point = await session.scalar(
            select(Photometry).where(
                Photometry.id == point_id, visible(photometry_groups, Photometry.id, me)
            )
        )
        if point is None:
            raise missing
        if not me.is_admin and point.owner_id != me.user_id:
            raise ApiError(
                401, "Only the owner of a photometry point or a system admin may delete it"
            )
        obj_id = point.obj_id
        await session.execute(delete(Photometry).where(Photometry.id == point_id))
        await phot_stats.refresh(session, [obj_id])
    return success()
