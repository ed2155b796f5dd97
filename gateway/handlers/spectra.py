"""Spectra: upload one spectrum, list a source's spectra."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from gateway.auth import principal
from gateway.schemas.sources import NewSpectrum
from gateway.schemas.validation import validated
from gateway.serialize import spectrum_dict
from gateway.source_access import (
    add_data_row,
    instrument_or_400,
    required,
    visible_obj,
    visible_page,
)
from http_edge.app_keys import SESSIONS, SETTINGS
from http_edge.web import json_body, page_from_query, success
from shared.db.models import Spectrum, spectrum_groups


def _utc(observed_at: str) -> datetime:
    """The model has checked it parses; SkyPortal reads naive times as UTC."""
    parsed = datetime.fromisoformat(observed_at)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _spectrum_fields(new: NewSpectrum) -> dict[str, Any]:
    return {
        "observed_at": _utc(new.observed_at),
        "wavelengths": new.wavelengths,
        "fluxes": new.fluxes,
        "errors": new.errors,
        "units": new.units,
        "origin": new.origin,
        "type": new.type,
        "altdata": new.altdata,
    }


async def post_spectrum(request: web.Request) -> web.Response:
    me = principal(request)
    body = await json_body(request, optional=False)
    new = await asyncio.to_thread(validated, NewSpectrum, body)  # long arrays: off the loop
    async with request.app[SESSIONS].begin() as session:
        obj = await visible_obj(session, me, new.obj_id)
        instrument = await instrument_or_400(session, required(body, "instrument_id"))
        spectrum_id = await add_data_row(
            session,
            me,
            obj,
            new.group_ids,
            Spectrum,
            **_spectrum_fields(new),
            instrument_id=instrument.id,
        )
    return success({"id": spectrum_id})


async def get_source_spectra(request: web.Request) -> web.Response:
    me = principal(request)
    obj_id = request.match_info["obj_id"]
    settings = request.app[SETTINGS]
    page = page_from_query(request, settings.page_size_default, settings.page_size_max)
    async with request.app[SESSIONS]() as session:
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
