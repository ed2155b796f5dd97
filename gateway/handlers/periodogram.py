"""GET /api/sources/<obj_id>/periodogram: a periodogram of the photometry the caller may read."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from aiohttp import web

from gateway import periodogram as pg
from gateway import query_params as q
from gateway.auth import principal
from gateway.source_access import visible_obj
from http_edge.app_keys import SESSIONS
from http_edge.web import bad_request, success
from shared.science.phot_stats import PointRow, is_detection, readable_points
from shared.science.photometry import flux_to_mag, fluxerr_to_magerr

MAX_SAMPLES_PER_PEAK = 100.0


def options_from(request: web.Request) -> pg.Options:
    return pg.Options(
        method=q.choice(request, "method", pg.METHODS),
        min_period=q.positive_number(request, "min_period"),
        max_period=q.positive_number(request, "max_period"),
        samples_per_peak=q.bounded_number(
            request, "samples_per_peak", pg.DEFAULT_SAMPLES_PER_PEAK, 1.0, MAX_SAMPLES_PER_PEAK
        ),
        n_peaks=q.bounded_int(request, "n_peaks", pg.DEFAULT_N_PEAKS, 1, pg.MAX_N_PEAKS),
        nterms=q.bounded_int(request, "nterms", 1, 1, pg.MAX_NTERMS),
    )


def light_curve(points: list[PointRow]) -> tuple[pg.LightCurve, dict[str, int]]:
    """Detections with a magnitude error, in magnitudes; and the counts of the points left
    out (non-detections, and detections given without an error, which cannot be weighted)."""
    detections = [p for p in points if is_detection(p.flux, p.fluxerr)]
    usable = [p for p in detections if p.fluxerr > 0]
    curve = pg.LightCurve(
        mjd=np.array([p.mjd for p in usable], dtype=float),
        mag=np.array([flux_to_mag(p.flux) for p in usable], dtype=float),
        magerr=np.array([fluxerr_to_magerr(p.flux, p.fluxerr) for p in usable], dtype=float),
        band=np.array([p.filter for p in usable], dtype=str),
    )
    left_out = {
        "n_non_detections": len(points) - len(detections),
        "n_without_error": len(detections) - len(usable),
    }
    return curve, left_out


def compute(points: list[PointRow], options: pg.Options) -> dict[str, Any]:
    curve, left_out = light_curve(points)
    return {**pg.periodogram(curve, options), **left_out}


async def get_periodogram(request: web.Request) -> web.Response:
    me = principal(request)
    obj_id = request.match_info["obj_id"]
    options = options_from(request)
    filters = q.text_list(request, "filters")
    instrument_ids = q.id_list(request, "instrument_ids")
    async with request.app[SESSIONS]() as session:
        await visible_obj(session, me, obj_id)
        points = await readable_points(
            session, me, obj_id, filters=filters, instrument_ids=instrument_ids
        )
    try:
        # Up to a million frequencies per band: CPU work, kept off the event loop.
        answer = await asyncio.to_thread(compute, points, options)
    except pg.PeriodogramError as exc:
        raise bad_request(str(exc)) from None
    return success({"obj_id": obj_id, **answer})
