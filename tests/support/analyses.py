"""Test data for the analysis endpoints, written straight into the database."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from sqlalchemy import func, insert, select

from shared.bus.base import Envelope
from shared.db.models import (
    AnalysisService,
    Group,
    Obj,
    ObjAnalysis,
    OutboxMessage,
    analysis_service_groups,
    obj_analysis_groups,
    obj_groups,
)
from shared.db.types import utcnow
from shared.domain.enums import ACTIVE_STATUSES
from shared.runtime.resources import Resources
from shared.security.secrets import hash_token
from tests.support.api import unique

# A real 1x1 PNG.
PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9aw"
    "AAAABJRU5ErkJggg=="
)


def ids(groups: Iterable[Group]) -> list[int]:
    return [g.id for g in groups]


async def make_obj(resources: Resources, groups: Iterable[Group], obj_id: str | None = None) -> str:
    obj_id = obj_id or unique("ZTF").replace("-", "")
    async with resources.sessions.begin() as session:
        session.add(Obj(id=obj_id, ra=10.0, dec=-5.0, redshift=0.05))
        await session.flush()
        links = [{"obj_id": obj_id, "group_id": g} for g in ids(groups)]
        if links:
            await session.execute(insert(obj_groups), links)
    return obj_id


async def make_service(
    resources: Resources, groups: Iterable[Group], **fields: Any
) -> AnalysisService:
    values: dict[str, Any] = {
        "name": unique("service"),
        "display_name": "Test fitter",
        "description": "fits things",
        "url": "http://127.0.0.1:9/analysis",
        "authentication_type": "none",
        "analysis_type": "lightcurve_fitting",
        "input_data_types": ["photometry"],
        "optional_analysis_parameters": {},
        "timeout": 600.0,
    }
    values.update(fields)
    async with resources.sessions.begin() as session:
        service = AnalysisService(**values)
        session.add(service)
        await session.flush()
        links = [{"analysis_service_id": service.id, "group_id": g} for g in ids(groups)]
        if links:
            await session.execute(insert(analysis_service_groups), links)
    return service


async def insert_analysis(
    resources: Resources,
    *,
    obj_id: str,
    service_id: int,
    author_id: int,
    status: str = "completed",
    groups: Iterable[Group] = (),
    **fields: Any,
) -> ObjAnalysis:
    unique_id = str(uuid.uuid4())
    now = utcnow()
    async with resources.sessions.begin() as session:
        row = ObjAnalysis(
            unique_id=unique_id,
            obj_id=obj_id,
            author_id=author_id,
            analysis_service_id=service_id,
            token_hash=hash_token(resources.callback_tokens.token_for(unique_id)),
            status=status,
            invalid_after=now + timedelta(hours=1),
            last_activity=now,
            finished_at=None if status in ACTIVE_STATUSES else now,
            **fields,
        )
        session.add(row)
        await session.flush()
        links = [{"obj_analysis_id": row.id, "group_id": g} for g in ids(groups)]
        if links:
            await session.execute(insert(obj_analysis_groups), links)
    return row


async def load_analysis(resources: Resources, analysis_id: int) -> ObjAnalysis | None:
    async with resources.sessions() as session:
        return await session.get(ObjAnalysis, analysis_id)


async def count_analyses(resources: Resources, **where: Any) -> int:
    conditions = [getattr(ObjAnalysis, k) == v for k, v in where.items()]
    async with resources.sessions() as session:
        counted = await session.execute(select(func.count(ObjAnalysis.id)).where(*conditions))
        return int(counted.scalar_one())


async def outbox_payloads(resources: Resources, routing_key: str) -> list[dict[str, Any]]:
    async with resources.sessions() as session:
        rows = await session.scalars(
            select(OutboxMessage).where(OutboxMessage.routing_key == routing_key)
        )
        return [dict(r.payload) for r in rows]


async def published(resources: Resources, routing_key: str, analysis_id: int) -> Envelope:
    """Relay the outbox to the (memory) bus and return the message about this analysis."""
    received: asyncio.Queue[Envelope] = asyncio.Queue()

    async def collect(envelope: Envelope) -> None:
        if envelope.payload.get("analysis_id") == analysis_id:
            received.put_nowait(envelope)

    await resources.bus.subscribe(unique("test-queue"), [routing_key], collect, prefetch=1)
    while await resources.outbox.publish_pending():
        pass
    return await asyncio.wait_for(received.get(), timeout=5)


def callback_token(resources: Resources, analysis: ObjAnalysis) -> str:
    return resources.callback_tokens.token_for(analysis.unique_id)


def data_url(content: bytes, filename: str, mime: str = "text/plain") -> str:
    return f"data:{mime};name={filename};base64,{base64.b64encode(content).decode()}"
