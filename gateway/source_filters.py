"""The sources list's photometry filters (SkyPortal's ``firstDetectionAfter``,
``minPeakMagnitude``, …), shared by the API's sources list and the web app's overview."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from sqlalchemy import ColumnElement, and_, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway import query_params as q
from http_edge.web import bad_request, query_bool
from shared.db.models import Obj, Photometry, PhotStat, obj_groups, photometry_groups
from shared.domain.access import Principal, visible
from shared.science import phot_stats

MJD_EPOCH = datetime(1858, 11, 17, tzinfo=UTC)


@dataclass(frozen=True)
class Bound:
    """One filter: a statistic compared with a value (``at_least`` or at most)."""

    field: str
    value: float
    at_least: bool

    def holds(self, stats: dict[str, Any]) -> bool:
        actual = stats[self.field]
        if actual is None:
            return False
        return actual >= self.value if self.at_least else actual <= self.value

    def sql(self) -> ColumnElement[bool]:
        column = getattr(PhotStat, self.field)
        return column >= self.value if self.at_least else column <= self.value


def _date_as_mjd(request: web.Request, name: str) -> float | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        moment = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise bad_request(f"Invalid {name}: {raw[:100]} (an ISO 8601 date or time)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - MJD_EPOCH).total_seconds() / 86400.0


def source_list_bounds(request: web.Request) -> list[Bound]:
    """SkyPortal's photometry filters of the sources list, as documented there (its code
    compared peak and latest magnitudes the other way round)."""
    no_fp = query_bool(request, "excludeForcedPhotometry")
    first = "first_detected_no_forced_phot_mjd" if no_fp else "first_detected_mjd"
    last_mjd = "last_detected_no_forced_phot_mjd" if no_fp else "last_detected_mjd"
    last_mag = "last_detected_no_forced_phot_mag" if no_fp else "last_detected_mag"
    detections = "num_det_no_forced_phot_global" if no_fp else "num_det_global"
    wanted = [
        (first, _date_as_mjd(request, "firstDetectionAfter"), True),
        (last_mjd, _date_as_mjd(request, "lastDetectionBefore"), False),
        (detections, q.bounded_int(request, "numberDetections", 0, 0, 2**31 - 1) or None, True),
        ("peak_mag_global", q.finite_number(request, "minPeakMagnitude"), True),
        ("peak_mag_global", q.finite_number(request, "maxPeakMagnitude"), False),
        (last_mag, q.finite_number(request, "minLatestMagnitude"), True),
        (last_mag, q.finite_number(request, "maxLatestMagnitude"), False),
    ]
    return [Bound(field, value, at_least) for field, value, at_least in wanted if value is not None]


SOURCE_LIST_FILTERS = (
    "firstDetectionAfter",
    "lastDetectionBefore",
    "numberDetections",
    "minPeakMagnitude",
    "maxPeakMagnitude",
    "minLatestMagnitude",
    "maxLatestMagnitude",
    "excludeForcedPhotometry",
)


async def source_list_condition(
    session: AsyncSession, me: Principal, bounds: list[Bound]
) -> ColumnElement[bool]:
    """Sources whose statistics, as the caller may know them, pass every bound: the stored row
    for sources whose points the caller may all read, the readable points' statistics for the
    others (computed here, so a hidden point can neither add nor remove a source)."""
    stored_match = exists().where(PhotStat.obj_id == Obj.id, *(b.sql() for b in bounds))
    if me.is_admin:
        return stored_match
    hidden_here = exists().where(
        Photometry.obj_id == Obj.id, ~visible(photometry_groups, Photometry.id, me)
    )
    partly_hidden = await session.scalars(
        select(Photometry.obj_id)
        .where(
            ~visible(photometry_groups, Photometry.id, me),
            visible(obj_groups, Photometry.obj_id, me),
        )
        .distinct()
    )
    matching = []
    for obj_id in partly_hidden:
        stats = phot_stats.compute(await phot_stats.readable_points(session, me, obj_id))
        if all(b.holds(stats) for b in bounds):
            matching.append(obj_id)
    return or_(and_(~hidden_here, stored_match), Obj.id.in_(matching))
