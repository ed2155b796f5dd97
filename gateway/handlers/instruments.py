"""Instruments: the name, telescope and filters that photometry and spectra refer to."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from gateway.serialize import instrument_dict
from gateway.source_access import optional_text, text_field
from http_edge.app_keys import RESOURCES
from http_edge.web import bad_request, json_body, not_found, path_int, success
from shared.db.models import Instrument

MAX_FILTERS = 200


def _filters(value: object) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(
        isinstance(f, str) and f.strip() and len(f) <= 64 for f in value
    ):
        raise bad_request("Invalid filters: must be a list of filter names (strings)")
    if len(value) > MAX_FILTERS:
        raise bad_request(f"Invalid filters: at most {MAX_FILTERS} filters")
    if len(set(value)) != len(value):
        raise bad_request("Invalid filters: a filter is listed twice")
    return list(value)


async def post_instrument(request: web.Request) -> web.Response:
    body = await json_body(request, optional=False)
    name = text_field(body, "name")
    telescope_key = "telescope" if body.get("telescope") is not None else "telescope_name"
    telescope = optional_text(body, telescope_key)
    filters = _filters(body.get("filters"))
    async with request.app[RESOURCES].sessions.begin() as session:
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
    async with request.app[RESOURCES].sessions() as session:
        instruments = await session.scalars(query)
        return success([instrument_dict(i) for i in instruments])


async def get_instrument(request: web.Request) -> web.Response:
    instrument_id = path_int(request, "instrument_id", "instrument_id")
    async with request.app[RESOURCES].sessions() as session:
        instrument = await session.get(Instrument, instrument_id)
        if instrument is None:
            raise not_found(f"Instrument {instrument_id} not found")
        return success(instrument_dict(instrument))
