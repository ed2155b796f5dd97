"""Test helpers for the analysis pipeline: rows inserted straight into the database.

``FakeService`` (with ``Reply``, ``Received``, ``Gate``) and ``free_port`` live in
``tests.support.fake_service`` and ``tests.support.ports``; they are re-exported here for the
tests that import them from this module."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, insert, select

from shared.db.models import (
    AnalysisService,
    Annotation,
    Classification,
    Comment,
    DispatchAttempt,
    Group,
    Instrument,
    Obj,
    ObjAnalysis,
    Photometry,
    Spectrum,
    analysis_service_groups,
    annotation_groups,
    classification_groups,
    comment_groups,
    obj_analysis_groups,
    obj_groups,
    photometry_groups,
    spectrum_groups,
)
from shared.db.types import utcnow
from shared.domain.enums import ACTIVE_STATUSES, AnalysisStatus
from shared.domain.service_registry import encrypt_authinfo, encrypt_signing_secret
from shared.runtime.resources import Resources
from shared.security.secrets import hash_token
from tests.support.api import unique
from tests.support.fake_service import FakeService, Gate, Received, Reply
from tests.support.polling import eventually
from tests.support.ports import free_port

# --- rows -------------------------------------------------------------------------------------


async def _link(resources: Resources, table: Table, row_id: Any, groups: Iterable[Group]) -> None:
    (column,) = (c.name for c in table.c if c.name != "group_id")
    links = [{column: row_id, "group_id": g.id} for g in groups]
    if links:
        async with resources.sessions.begin() as session:
            await session.execute(insert(table), links)


async def _add(resources: Resources, row: Any, table: Table, groups: Iterable[Group]) -> Any:
    async with resources.sessions.begin() as session:
        session.add(row)
        await session.flush()
        row_id = row.id
    await _link(resources, table, row_id, groups)
    return row_id


async def make_obj(resources: Resources, groups: Iterable[Group], **fields: Any) -> str:
    values = {"ra": 10.0, "dec": -5.0, **fields}
    obj_id = values.pop("id", None) or unique("ZTF").replace("-", "")
    return str(await _add(resources, Obj(id=obj_id, **values), obj_groups, groups))


async def make_instrument(resources: Resources, name: str | None = None) -> int:
    async with resources.sessions.begin() as session:
        instrument = Instrument(name=name or unique("inst"), filters=["ztfg", "ztfr"])
        session.add(instrument)
        await session.flush()
        return instrument.id


async def add_photometry(
    resources: Resources, obj_id: str, instrument_id: int, groups: Iterable[Group], **fields: Any
) -> int:
    values = {"mjd": 59000.0, "filter": "ztfg", "flux": 100.0, "fluxerr": 5.0, **fields}
    row = Photometry(obj_id=obj_id, instrument_id=instrument_id, **values)
    return int(await _add(resources, row, photometry_groups, groups))


async def add_spectrum(
    resources: Resources, obj_id: str, instrument_id: int, groups: Iterable[Group], **fields: Any
) -> int:
    values = {
        "observed_at": datetime(2024, 5, 1, 3, 4, 5, 678000, tzinfo=utcnow().tzinfo),
        "wavelengths": [4000.0, 4001.5, 4003.0],
        "fluxes": [1.0e-17, 2.5e-17, 3.0e-17],
        **fields,
    }
    row = Spectrum(obj_id=obj_id, instrument_id=instrument_id, **values)
    return int(await _add(resources, row, spectrum_groups, groups))


async def add_comment(
    resources: Resources, obj_id: str, groups: Iterable[Group], **fields: Any
) -> int:
    row = Comment(obj_id=obj_id, **{"text": "a comment", **fields})
    return int(await _add(resources, row, comment_groups, groups))


async def add_classification(
    resources: Resources, obj_id: str, groups: Iterable[Group], **fields: Any
) -> int:
    row = Classification(obj_id=obj_id, **{"classification": "Ia", "probability": 0.9, **fields})
    return int(await _add(resources, row, classification_groups, groups))


async def add_annotation(
    resources: Resources, obj_id: str, groups: Iterable[Group], **fields: Any
) -> int:
    row = Annotation(obj_id=obj_id, **{"origin": "test", "data": {"period": 1.5}, **fields})
    return int(await _add(resources, row, annotation_groups, groups))


async def make_service(
    resources: Resources,
    url: str,
    groups: Iterable[Group] = (),
    *,
    authentication_type: str = "none",
    authinfo: dict[str, Any] | None = None,
    signing_secret: str | None = None,
    **fields: Any,
) -> int:
    values = {
        "name": unique("service"),
        "display_name": "Test service",
        "analysis_type": "lightcurve_fitting",
        "input_data_types": ["photometry"],
        "timeout": 3600.0,
        **fields,
    }
    async with resources.sessions.begin() as session:
        service = AnalysisService(url=url, authentication_type=authentication_type, **values)
        session.add(service)
        await session.flush()
        box = resources.secret_box
        service.authinfo_ciphertext = encrypt_authinfo(box, service.id, authinfo or {})
        service.signing_secret_ciphertext = encrypt_signing_secret(box, service.id, signing_secret)
        service_id = service.id
    await _link(resources, analysis_service_groups, service_id, groups)
    return service_id


async def make_analysis(
    resources: Resources,
    obj_id: str,
    service_id: int,
    author_id: int,
    groups: Iterable[Group] = (),
    **fields: Any,
) -> ObjAnalysis:
    """A row as the start endpoint writes it (``queued``), without its outbox message."""
    now = utcnow()
    unique_id = str(uuid.uuid4())
    values = {
        "status": AnalysisStatus.QUEUED,
        "analysis_parameters": {},
        "input_filters": {},
        "invalid_after": now + timedelta(hours=1),
        "last_activity": now,
        **fields,
    }
    values.setdefault("finished_at", None if values["status"] in ACTIVE_STATUSES else now)
    row = ObjAnalysis(
        unique_id=unique_id,
        obj_id=obj_id,
        author_id=author_id,
        analysis_service_id=service_id,
        token_hash=hash_token(resources.callback_tokens.token_for(unique_id)),
        **values,
    )
    async with resources.sessions.begin() as session:
        session.add(row)
        await session.flush()
    await _link(resources, obj_analysis_groups, row.id, groups)
    return row


async def load_analysis(resources: Resources, analysis_id: int) -> ObjAnalysis:
    async with resources.sessions() as session:
        row = await session.get(ObjAnalysis, analysis_id, populate_existing=True)
        assert row is not None
        return row


async def load_attempts(resources: Resources, analysis_id: int) -> list[DispatchAttempt]:
    async with resources.sessions() as session:
        rows = await session.scalars(
            select(DispatchAttempt)
            .where(DispatchAttempt.analysis_id == analysis_id)
            .order_by(DispatchAttempt.attempt_number)
        )
        return list(rows)


async def wait_for_status(
    resources: Resources, analysis_id: int, statuses: Sequence[str], within: float = 10.0
) -> ObjAnalysis:
    seen: list[str] = []

    async def reached() -> ObjAnalysis | None:
        row = await load_analysis(resources, analysis_id)
        seen.append(row.status)
        return row if row.status in statuses else None

    try:
        return await eventually(reached, f"analysis {analysis_id} in {statuses}", within)
    except AssertionError:
        raise AssertionError(f"analysis {analysis_id} is {seen[-1]!r}, not in {statuses}") from None


# --- the analysis service and the port helper, kept importable from here --------------------

__all__ = ["FakeService", "Gate", "Received", "Reply", "free_port"]
