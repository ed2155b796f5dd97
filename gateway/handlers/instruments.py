"""Instruments: the name, telescope and filters that photometry and spectra refer to."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from gateway.schemas.sources import NewInstrument
from gateway.schemas.validation import validated
from gateway.serialize import instrument_dict
from http_edge.app_keys import SESSIONS
from http_edge.web import bad_request, json_body, not_found, path_int, success
from shared.db.models import Instrument


async def post_instrument(request: web.Request) -> web.Response:
    new = validated(NewInstrument, await json_body(request, optional=False))
    name, telescope, filters = new.name, new.telescope or new.telescope_name, new.filters or []
    async with request.app[SESSIONS].begin() as session:
        instrument = Instrument(name=name, telescope=telescope, filters=filters)
        session.add(instrument)
        try:
            await session.flush()
        except IntegrityError:
            raise bad_request(f"Instrument with name {name!r} already exists") from None
        instrument_id = instrument.id
    return success({"id": instrument_id})


async def list_instruments(request: web.Request) -> web.Response:
    query = select(Instrument).order_by(Instrument.id)
    name = request.query.get("name")
    if name:
        query = query.where(Instrument.name == name)
    async with request.app[SESSIONS]() as session:
        instruments = await session.scalars(query)
        return success([instrument_dict(i) for i in instruments])


async def get_instrument(request: web.Request) -> web.Response:
    instrument_id = path_int(request, "instrument_id", "instrument_id")
    async with request.app[SESSIONS]() as session:
        instrument = await session.get(Instrument, instrument_id)
        if instrument is None:
            raise not_found(f"Instrument {instrument_id} not found")
        return success(instrument_dict(instrument))
