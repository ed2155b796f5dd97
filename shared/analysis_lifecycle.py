"""Creating, cancelling and deleting analyses: the row, its outbox message, its artifacts and the
summary-history entries it wrote.

Creating: the per-(object, author) cap is counted and the row inserted in one transaction under
a lock taken for that pair, so concurrent starts cannot overshoot the cap (reference §8 R7).
The cap counts completed analyses and the ones still in flight (queued, dispatching, pending),
which are the ones that may still complete; failed, timed-out and cancelled ones do not count.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from sqlalchemy import ColumnElement, delete, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.access import Principal, visible
from shared.artifacts import NewArtifact, delete_artifacts, write_artifacts
from shared.db.models import (
    AnalysisService,
    Obj,
    ObjAnalysis,
    OutboxMessage,
    obj_analysis_groups,
    obj_groups,
)
from shared.db.types import utcnow
from shared.enums import ACTIVE_STATUSES, AnalysisStatus
from shared.events import AnalysisCompleted, AnalysisRequested, Message
from shared.outbox import outbox_values
from shared.resources import Resources
from shared.security import hash_token
from shared.summaries import forget_analysis, lock_obj

CAPPED_STATUSES = (AnalysisStatus.COMPLETED, *ACTIVE_STATUSES)
REQUEST_PARAMETERS_FILE = "request_parameters.json"


class ObjNotVisible(Exception):
    """The object does not exist or the author cannot read it."""


class CapReached(Exception):
    """The author already has the maximum number of analyses on this object."""


@dataclass
class NewAnalysis:
    obj_id: str
    service: AnalysisService
    author: Principal
    group_ids: list[int]
    parameters: dict[str, Any]  # as the service will receive them
    display_parameters: dict[str, Any]  # as stored on the row (no file data, no secrets)
    input_filters: dict[str, Any] = field(default_factory=dict)
    show_parameters: bool = False
    show_plots: bool = False
    show_corner: bool = False
    status: AnalysisStatus = AnalysisStatus.QUEUED
    status_message: str | None = None
    handled_by_url: str = "api/webhook/obj_analysis"
    artifacts: dict[str, Any] = field(default_factory=dict)
    files: list[NewArtifact] = field(default_factory=list)  # the bytes ``artifacts`` describes
    data_summary: dict[str, Any] = field(default_factory=dict)
    unique_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    default_analysis_id: int | None = None  # set when a default analysis started it
    trigger: str | None = None  # what made the default start, in words


class StartGuard(Protocol):
    """Extra conditions checked in the creating transaction (e.g. a default analysis' daily
    limit): ``check`` runs before the insert and raises to refuse, ``record`` after it."""

    async def check(self, session: AsyncSession) -> None: ...

    async def record(self, session: AsyncSession, analysis_id: int) -> None: ...


async def take_write_lock(session: AsyncSession, key: str) -> None:
    """Serialize transactions that use the same ``key`` until this transaction ends.

    PostgreSQL: a transaction-scoped advisory lock. SQLite has a single writer: a no-op write
    as the first statement of the transaction takes the write lock at once, so nothing read
    afterwards can go stale before this transaction commits.
    """
    if session.bind.dialect.name == "postgresql":
        await session.execute(select(func.pg_advisory_xact_lock(func.hashtext(key))))
    else:
        await session.execute(text("UPDATE objs SET id = id WHERE 0"))


async def obj_visible(session: AsyncSession, obj_id: str, who: Principal) -> bool:
    query = select(Obj.id).where(Obj.id == obj_id, visible(obj_groups, Obj.id, who))
    return (await session.execute(query)).first() is not None


async def count_capped(session: AsyncSession, obj_id: str, author_id: int) -> int:
    query = select(func.count(ObjAnalysis.id)).where(
        ObjAnalysis.obj_id == obj_id,
        ObjAnalysis.author_id == author_id,
        ObjAnalysis.status.in_(CAPPED_STATUSES),
    )
    return int(await session.scalar(query) or 0)


async def visible_and_capped(
    session: AsyncSession, obj_id: str, who: Principal
) -> tuple[bool, int]:
    """(can the author read the object, how many of their analyses on it count toward the cap),
    in one round trip."""
    readable = select(Obj.id).where(Obj.id == obj_id, visible(obj_groups, Obj.id, who)).exists()
    counted = (
        select(func.count(ObjAnalysis.id))
        .where(
            ObjAnalysis.obj_id == obj_id,
            ObjAnalysis.author_id == who.user_id,
            ObjAnalysis.status.in_(CAPPED_STATUSES),
        )
        .scalar_subquery()
    )
    found, count = (await session.execute(select(readable, counted))).one()
    return bool(found), int(count or 0)


def _message_for(analysis_id: int, new: NewAnalysis) -> Message:
    if new.status == AnalysisStatus.QUEUED:
        return AnalysisRequested(analysis_id=analysis_id)
    return AnalysisCompleted(
        analysis_id=analysis_id,
        obj_id=new.obj_id,
        analysis_service_id=new.service.id,
        status=new.status,
        is_summary=new.service.is_summary,
    )


def _new_row(resources: Resources, new: NewAnalysis) -> dict[str, Any]:
    """The new row's columns (for a Core INSERT: no ORM object to build and flush)."""
    now = utcnow()
    active = new.status in ACTIVE_STATUSES
    return {
        "unique_id": new.unique_id,
        "obj_id": new.obj_id,
        "author_id": new.author.user_id,
        "analysis_service_id": new.service.id,
        "token_hash": hash_token(resources.callback_tokens.token_for(new.unique_id)),
        "status": new.status,
        "status_message": new.status_message,
        "analysis_parameters": new.display_parameters,
        "input_filters": new.input_filters,
        "show_parameters": new.show_parameters,
        "show_plots": new.show_plots,
        "show_corner": new.show_corner,
        "invalid_after": now + timedelta(seconds=new.service.timeout) if active else now,
        "last_activity": now,
        "duration": None if active else 0.0,
        "handled_by_url": new.handled_by_url,
        "artifacts": dict(new.artifacts),
        "data_summary": new.data_summary,
        "default_analysis_id": new.default_analysis_id,
        "trigger": new.trigger,
    }


def _store_request_parameters(new: NewAnalysis) -> None:
    """The service must receive file contents the row does not keep (contract: the
    dispatcher sends ``artifacts["request_parameters"]`` instead of the column). Stored with
    the row, in the creating transaction."""
    if new.parameters == new.display_parameters:
        return
    data = json.dumps(new.parameters).encode()
    file = NewArtifact(REQUEST_PARAMETERS_FILE, data, "application/json")
    new.files.append(file)
    new.artifacts["request_parameters"] = file.ref(new.unique_id).to_dict()


async def create_analysis(
    resources: Resources, new: NewAnalysis, *, cap: int, guard: StartGuard | None = None
) -> int:
    """Insert the row and its outbox message in one transaction; returns the analysis id.

    Raises :class:`ObjNotVisible` or :class:`CapReached` (or what ``guard`` raises) with
    nothing written. The artifacts (``new.files``, and the request parameters) are stored in
    the same transaction.
    """
    _store_request_parameters(new)
    async with resources.sessions.begin() as session:
        if guard is not None:
            await guard.check(session)
        await take_write_lock(session, f"{new.obj_id}:{new.author.user_id}")
        readable, counted = await visible_and_capped(session, new.obj_id, new.author)
        if not readable:
            raise ObjNotVisible(new.obj_id)
        if counted >= cap:
            raise CapReached(new.obj_id)
        inserted = insert(ObjAnalysis.__table__).values(**_new_row(resources, new))
        analysis_id = (await session.execute(inserted.returning(ObjAnalysis.id))).scalar_one()
        if new.group_ids:
            links = [{"obj_analysis_id": analysis_id, "group_id": g} for g in new.group_ids]
            await session.execute(insert(obj_analysis_groups), links)
        await write_artifacts(session, analysis_id, new.files)
        message = outbox_values(_message_for(analysis_id, new))
        await session.execute(insert(OutboxMessage.__table__).values(**message))
        if guard is not None:
            await guard.record(session, analysis_id)
    resources.outbox.nudge()
    return analysis_id


async def cancel_analysis(session: AsyncSession, analysis_id: int, username: str) -> bool:
    """Active → cancelled in one conditional UPDATE; False when it was already final."""
    now = utcnow()
    result = await session.execute(
        update(ObjAnalysis)
        .where(ObjAnalysis.id == analysis_id, ObjAnalysis.status.in_(ACTIVE_STATUSES))
        .values(
            status=AnalysisStatus.CANCELLED,
            status_message=f"Cancelled by {username}",
            last_activity=now,
            modified=now,
        )
        .returning(ObjAnalysis.id)
    )
    return result.first() is not None


async def _forget_summaries(
    session: AsyncSession, obj_id: str, analysis_ids: Iterable[int]
) -> None:
    """Drop the analyses' summary-history entries; the object row is locked meanwhile so a
    summary written concurrently is not lost."""
    obj = await lock_obj(session, obj_id)
    if obj is None:
        return
    for analysis_id in analysis_ids:
        forget_analysis(obj, analysis_id)


async def delete_analysis(session: AsyncSession, analysis: ObjAnalysis) -> str:
    """Delete the row, its artifacts (and any blob no other analysis shares) and, for summary
    services, its summary-history entries, all in the caller's transaction. Returns the
    analysis' unique_id."""
    if analysis.service.is_summary:
        await _forget_summaries(session, analysis.obj_id, [analysis.id])
    await delete_artifacts(session, [analysis.id])
    await session.execute(delete(ObjAnalysis).where(ObjAnalysis.id == analysis.id))
    return analysis.unique_id


async def delete_analyses_of_service(session: AsyncSession, service_id: int) -> list[str]:
    """Delete every analysis of a service, with its artifacts, in the caller's transaction,
    before the service row itself is deleted (the database cascade would otherwise remove the
    rows first and leave their blobs and summary entries behind). Returns their unique_ids.
    """
    rows = (
        await session.execute(
            select(ObjAnalysis.id, ObjAnalysis.unique_id, ObjAnalysis.obj_id).where(
                ObjAnalysis.analysis_service_id == service_id
            )
        )
    ).all()
    service = await session.get(AnalysisService, service_id)
    if service is not None and service.is_summary:
        by_obj: dict[str, list[int]] = defaultdict(list)
        for row in rows:
            by_obj[row.obj_id].append(row.id)
        for obj_id, analysis_ids in sorted(by_obj.items()):
            await _forget_summaries(session, obj_id, analysis_ids)
    await delete_analyses_where(session, ObjAnalysis.analysis_service_id == service_id)
    return [row.unique_id for row in rows]


async def delete_analyses_where(session: AsyncSession, condition: ColumnElement[bool]) -> None:
    """Delete the analyses matching ``condition`` and their artifacts (blobs no other analysis
    shares go too) in the caller's transaction. Summary-history entries are the caller's."""
    await delete_artifacts(session, select(ObjAnalysis.id).where(condition))
    await session.execute(delete(ObjAnalysis).where(condition))
