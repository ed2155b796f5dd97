"""Spectra: upload one spectrum, list a source's spectra."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, cast

from aiohttp import web

from gateway.auth import principal
from gateway.serialize import spectrum_dict
from gateway.source_access import (
    add_data_row,
    instrument_or_400,
    object_field,
    optional_text,
    required,
    visible_obj,
    visible_page,
)
from http_edge.app_keys import RESOURCES
from http_edge.web import bad_request, finite, json_body, page_from_query, success
from shared.db.models import Spectrum, spectrum_groups

MAX_SPECTRUM_POINTS = 500_000
SPECTRUM_TYPES = ("source", "host", "host_center")


def _array(body: dict[str, Any], name: str) -> list[float]:
    values = required(body, name)
    if not isinstance(values, list) or not values:
        raise bad_request(f"Invalid {name}: must be a non-empty list of numbers")
    if len(values) > MAX_SPECTRUM_POINTS:
        raise bad_request(f"Invalid {name}: at most {MAX_SPECTRUM_POINTS} points")
    return [cast(float, finite(value, f"{name}[{i}]")) for i, value in enumerate(values)]


def _observed_at(body: dict[str, Any]) -> datetime:
    value = required(body, "observed_at")
    if not isinstance(value, str):
        raise bad_request("Invalid observed_at: must be an ISO 8601 date-time string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise bad_request(f"Invalid observed_at: {value!r} is not an ISO 8601 date-time") from None
    # SkyPortal reads naive times as UTC.
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _spectrum_fields(body: dict[str, Any]) -> dict[str, Any]:
    wavelengths, fluxes = _array(body, "wavelengths"), _array(body, "fluxes")
    errors = _array(body, "errors") if body.get("errors") is not None else None
    if len(fluxes) != len(wavelengths) or (errors is not None and len(errors) != len(fluxes)):
        raise bad_request("wavelengths, fluxes and errors must have the same length")
    kind = body.get("type", "source") or "source"
    if kind not in SPECTRUM_TYPES:
        raise bad_request(f"Invalid type: {kind!r} (one of {list(SPECTRUM_TYPES)})")
    altdata = object_field(body, "altdata") if body.get("altdata") is not None else None
    return {
        "observed_at": _observed_at(body),
        "wavelengths": wavelengths,
        "fluxes": fluxes,
        "errors": errors,
        "units": optional_text(body, "units", max_length=64),
        "origin": optional_text(body, "origin"),
        "type": kind,
        "altdata": altdata,
    }


async def post_spectrum(request: web.Request) -> web.Response:
    me = principal(request)
    body = await json_body(request, optional=False)
    fields = await asyncio.to_thread(_spectrum_fields, body)  # long arrays: off the loop
    async with request.app[RESOURCES].sessions.begin() as session:
        obj = await visible_obj(session, me, required(body, "obj_id"))
        instrument = await instrument_or_400(session, required(body, "instrument_id"))
        spectrum_id = await add_data_row(
            session, me, obj, body.get("group_ids"), Spectrum, **fields, instrument_id=instrument.id
        )
    return success({"id": spectrum_id})


async def get_source_spectra(request: web.Request) -> web.Response:
    me = principal(request)
    obj_id = request.match_info["obj_id"]
    settings = request.app[RESOURCES].settings
    page = page_from_query(request, settings.page_size_default, settings.page_size_max)
    async with request.app[RESOURCES].sessions() as session:
        total, rows = await visible_page(
            session,
            me,
            obj_id,
            Spectrum,
            spectrum_groups,
            (Spectrum.observed_at, Spectrum.id),
            page,
        )
        spectra = [spectrum_dict(row, me) for row in rows]
    return success(page.answer(total, obj_id=obj_id, spectra=spectra))
