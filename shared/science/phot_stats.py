"""Photometry statistics per source (SkyPortal's PhotStats), computed from photometry points.

Rules: a point is a detection when flux/fluxerr > 3; magnitudes are AB at zero point 23.9; a
non-detection's limit is the limiting magnitude it was given, else its 5-sigma limit. One list of
forced-photometry origins serves every statistic.

The stored row (table ``phot_stats``) is a full recompute over all of a source's points, redone
in the transaction of every change to them (``refresh``): exact, and cheap at the sizes of a
source's light curve. Readers who may not read every point get the same fields computed from
the points they may read (``compute``), never the stored row.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import combinations
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.models import Obj, Photometry, PhotStat, photometry_groups
from shared.db.session import create_engine, create_session_factory
from shared.db.types import utcnow
from shared.domain.access import Principal, visible
from shared.science.photometry import PHOT_ZP, fluxerr_to_limit

DETECTION_NSIGMA = 3.0
FORCED_PHOTOMETRY_ORIGINS = frozenset(
    {"fp", "forced phot", "forced photometry", "forcedphot", "alert_fp"}
)

# Scalar statistics that can be plotted against each other (SkyPortal's allowlist and labels).
PLOT_FIELDS = {
    "num_obs_global": "Number of observations",
    "num_det_global": "Number of detections",
    "first_detected_mjd": "First detection [MJD]",
    "first_detected_mag": "First detection magnitude",
    "last_detected_mjd": "Last detection [MJD]",
    "last_detected_mag": "Last detection magnitude",
    "peak_mjd_global": "Peak time [MJD]",
    "peak_mag_global": "Peak magnitude",
    "mean_mag_global": "Mean magnitude",
    "faintest_mag_global": "Faintest magnitude",
    "deepest_limit_global": "Deepest limit",
    "rise_rate": "Rise rate [mag/day]",
    "decay_rate": "Decay rate [mag/day]",
    "mag_rms_global": "Magnitude RMS",
    "time_to_non_detection": "Time to non-detection [day]",
}

STAT_FIELDS = (
    "num_obs_global",
    "num_obs_per_filter",
    "num_det_global",
    "num_det_no_forced_phot_global",
    "num_det_per_filter",
    "first_detected_mjd",
    "first_detected_mag",
    "first_detected_filter",
    "last_detected_mjd",
    "last_detected_mag",
    "last_detected_filter",
    "first_detected_no_forced_phot_mjd",
    "first_detected_no_forced_phot_mag",
    "first_detected_no_forced_phot_filter",
    "last_detected_no_forced_phot_mjd",
    "last_detected_no_forced_phot_mag",
    "last_detected_no_forced_phot_filter",
    "recent_obs_mjd",
    "predetection_mjds",
    "last_non_detection_mjd",
    "time_to_non_detection",
    "mean_mag_global",
    "mean_mag_per_filter",
    "mean_color",
    "peak_mjd_global",
    "peak_mjd_per_filter",
    "peak_mag_global",
    "peak_mag_per_filter",
    "faintest_mag_global",
    "faintest_mag_per_filter",
    "deepest_limit_global",
    "deepest_limit_per_filter",
    "rise_rate",
    "decay_rate",
    "mag_rms_global",
    "mag_rms_per_filter",
)


@dataclass(frozen=True)
class PointRow:
    """The columns of a photometry point the statistics use."""

    mjd: float
    flux: float | None
    fluxerr: float
    filter: str
    original_limiting_mag: float | None
    origin: str | None
    instrument_id: int = 0
    changed_at: datetime | None = None


def is_detection(flux: float | None, fluxerr: float) -> bool:
    if flux is None or not flux > 0:
        return False
    return fluxerr <= 0 or flux / fluxerr > DETECTION_NSIGMA


def is_forced(origin: str | None) -> bool:
    return origin is not None and origin.strip().lower() in FORCED_PHOTOMETRY_ORIGINS


@dataclass(frozen=True)
class Detection:
    mjd: float
    mag: float
    filter: str
    forced: bool


def _mag(flux: float) -> float:
    return -2.5 * math.log10(flux) + PHOT_ZP


def _limit(point: PointRow) -> float | None:
    if point.original_limiting_mag is not None:
        return point.original_limiting_mag
    return fluxerr_to_limit(point.fluxerr)


def _mean_rms(mags: Sequence[float]) -> tuple[float, float]:
    mean = sum(mags) / len(mags)
    return mean, math.sqrt(sum((m - mean) ** 2 for m in mags) / len(mags))


def _by_filter(detections: Iterable[Detection]) -> dict[str, list[Detection]]:
    grouped: dict[str, list[Detection]] = {}
    for d in detections:
        grouped.setdefault(d.filter, []).append(d)
    return grouped


def _edges(detections: Sequence[Detection], prefix: str) -> dict[str, Any]:
    first = detections[0] if detections else None
    last = detections[-1] if detections else None
    return {
        f"first_{prefix}mjd": first.mjd if first else None,
        f"first_{prefix}mag": first.mag if first else None,
        f"first_{prefix}filter": first.filter if first else None,
        f"last_{prefix}mjd": last.mjd if last else None,
        f"last_{prefix}mag": last.mag if last else None,
        f"last_{prefix}filter": last.filter if last else None,
    }


def _magnitudes(detections: list[Detection]) -> dict[str, Any]:
    per_filter = _by_filter(detections)
    means = {f: _mean_rms([d.mag for d in ds]) for f, ds in per_filter.items()}
    peaks = {f: min(ds, key=lambda d: (d.mag, d.mjd)) for f, ds in per_filter.items()}
    glob = _mean_rms([d.mag for d in detections]) if detections else (None, None)
    peak = min(detections, key=lambda d: (d.mag, d.mjd)) if detections else None
    return {
        "mean_mag_global": glob[0],
        "mag_rms_global": glob[1],
        "mean_mag_per_filter": {f: m for f, (m, _) in means.items()},
        "mag_rms_per_filter": {f: r for f, (_, r) in means.items()},
        "mean_color": {
            f"{a}-{b}": means[a][0] - means[b][0] for a, b in combinations(sorted(means), 2)
        },
        "peak_mjd_global": peak.mjd if peak else None,
        "peak_mag_global": peak.mag if peak else None,
        "peak_mjd_per_filter": {f: p.mjd for f, p in peaks.items()},
        "peak_mag_per_filter": {f: p.mag for f, p in peaks.items()},
        "faintest_mag_global": max(d.mag for d in detections) if detections else None,
        "faintest_mag_per_filter": {f: max(d.mag for d in ds) for f, ds in per_filter.items()},
    }


def _rates(detections: list[Detection]) -> dict[str, float | None]:
    """Rise: from the first detection to the peak in its filter, magnitudes per day gained
    (positive when brightening). Decay: from the peak to the last detection in the last
    detection's filter, magnitudes per day lost (positive when fading)."""
    if not detections:
        return {"rise_rate": None, "decay_rate": None}
    per_filter = _by_filter(detections)
    first, last = detections[0], detections[-1]
    rise_peak = min(per_filter[first.filter], key=lambda d: (d.mag, d.mjd))
    decay_peak = min(per_filter[last.filter], key=lambda d: (d.mag, d.mjd))
    rise = decay = None
    if rise_peak.mjd > first.mjd:
        rise = (first.mag - rise_peak.mag) / (rise_peak.mjd - first.mjd)
    if last.mjd > decay_peak.mjd:
        decay = (last.mag - decay_peak.mag) / (last.mjd - decay_peak.mjd)
    return {"rise_rate": rise, "decay_rate": decay}


def _non_detections(points: list[PointRow], first_mjd: float | None) -> dict[str, Any]:
    undetected = [(p, _limit(p)) for p in points if not is_detection(p.flux, p.fluxerr)]
    limits = [(p, lim) for p, lim in undetected if lim is not None and math.isfinite(lim)]
    before = sorted(p.mjd for p, _ in limits if first_mjd is None or p.mjd < first_mjd)
    last_before = before[-1] if before else None
    per_filter: dict[str, float] = {}
    for p, lim in limits:
        per_filter[p.filter] = max(lim, per_filter.get(p.filter, -math.inf))
    return {
        "predetection_mjds": before,
        "last_non_detection_mjd": last_before,
        "time_to_non_detection": (
            first_mjd - last_before if first_mjd is not None and last_before is not None else None
        ),
        "deepest_limit_global": max(per_filter.values()) if per_filter else None,
        "deepest_limit_per_filter": per_filter,
    }


def compute(points: Iterable[PointRow]) -> dict[str, Any]:
    """Every statistic of ``points`` (a dict with the keys of ``STAT_FIELDS``)."""
    ordered = sorted(points, key=lambda p: (p.mjd, p.filter, p.instrument_id))
    detections = [
        Detection(p.mjd, _mag(p.flux), p.filter, is_forced(p.origin))
        for p in ordered
        if p.flux is not None and is_detection(p.flux, p.fluxerr)
    ]
    not_forced = [d for d in detections if not d.forced]
    obs_per_filter: dict[str, int] = {}
    for p in ordered:
        obs_per_filter[p.filter] = obs_per_filter.get(p.filter, 0) + 1
    stats: dict[str, Any] = {
        "num_obs_global": len(ordered),
        "num_obs_per_filter": obs_per_filter,
        "num_det_global": len(detections),
        "num_det_no_forced_phot_global": len(not_forced),
        "num_det_per_filter": {f: len(ds) for f, ds in _by_filter(detections).items()},
        **_edges(detections, "detected_"),
        **_edges(not_forced, "detected_no_forced_phot_"),
        "recent_obs_mjd": ordered[-1].mjd if ordered else None,
        **_non_detections(ordered, detections[0].mjd if detections else None),
        **_magnitudes(detections),
        **_rates(detections),
    }
    return {name: stats[name] for name in STAT_FIELDS}


def stored_fields(row: PhotStat) -> dict[str, Any]:
    return {name: getattr(row, name) for name in STAT_FIELDS}


# --- reading points -------------------------------------------------------------------------

POINT_COLUMNS = (
    Photometry.mjd,
    Photometry.flux,
    Photometry.fluxerr,
    Photometry.filter,
    Photometry.original_limiting_mag,
    Photometry.origin,
    Photometry.instrument_id,
    Photometry.modified,
)


def _rows(result: Iterable[Any]) -> list[PointRow]:
    return [PointRow(*row) for row in result]


async def all_points(session: AsyncSession, obj_id: str) -> list[PointRow]:
    rows = await session.execute(select(*POINT_COLUMNS).where(Photometry.obj_id == obj_id))
    return _rows(rows)


async def readable_points(
    session: AsyncSession,
    principal: Principal,
    obj_id: str,
    *,
    filters: Sequence[str] | None = None,
    instrument_ids: Sequence[int] | None = None,
) -> list[PointRow]:
    """The source's points the caller may read (the photometry listing's visibility rule)."""
    query = select(*POINT_COLUMNS).where(
        Photometry.obj_id == obj_id, visible(photometry_groups, Photometry.id, principal)
    )
    if filters is not None:
        query = query.where(Photometry.filter.in_(filters))
    if instrument_ids is not None:
        query = query.where(Photometry.instrument_id.in_(instrument_ids))
    return _rows(await session.execute(query))


async def reads_every_point(session: AsyncSession, principal: Principal, obj_id: str) -> bool:
    if principal.is_admin:
        return True
    hidden = await session.scalar(
        select(Photometry.id)
        .where(Photometry.obj_id == obj_id, ~visible(photometry_groups, Photometry.id, principal))
        .limit(1)
    )
    return hidden is None


def last_change(points: Iterable[PointRow]) -> datetime | None:
    """When the newest of these points was written: the only time a reader is told."""
    times = [p.changed_at for p in points if p.changed_at is not None]
    return max(times) if times else None


# --- keeping the stored rows current --------------------------------------------------------


async def refresh(session: AsyncSession, obj_ids: Iterable[str]) -> None:
    """Recompute the stored statistics of these sources from all their points, in the
    caller's transaction (so they change together with the points)."""
    now = utcnow()
    for obj_id in sorted(set(obj_ids)):  # one order everywhere: no deadlock between writers
        # Writers of one source take turns (PostgreSQL row lock; SQLite has one writer): the
        # later one then reads the earlier one's committed points, so no change is lost.
        # FOR NO KEY UPDATE: the new points' foreign keys hold KEY SHARE locks on the source row,
        # which a plain FOR UPDATE would wait for (a deadlock between two writers).
        lock = select(Obj.id).where(Obj.id == obj_id).with_for_update(key_share=True)
        await session.execute(lock)
        stats = compute(await all_points(session, obj_id))
        row = await session.scalar(select(PhotStat).where(PhotStat.obj_id == obj_id))
        if row is None:
            row = PhotStat(obj_id=obj_id)
            session.add(row)
        for name, value in stats.items():
            setattr(row, name, value)
        row.last_update = now
        row.last_full_update = now
    await session.flush()


async def recompute_all(session: AsyncSession) -> int:
    """Recompute every source's row (and drop rows of sources that no longer exist)."""
    await session.execute(delete(PhotStat).where(~PhotStat.obj_id.in_(select(Obj.id))))
    obj_ids = list(await session.scalars(select(Obj.id).order_by(Obj.id)))
    await refresh(session, obj_ids)
    return len(obj_ids)


async def recompute_database(database_url: str) -> int:
    """``skyhook phot-stats recompute``: every source's row, in one transaction."""
    engine = create_engine(database_url)
    try:
        async with create_session_factory(engine).begin() as session:
            return await recompute_all(session)
    finally:
        await engine.dispose()
