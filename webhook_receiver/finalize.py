"""The webhook's state changes: each one is a single conditional UPDATE.

Exactly one valid POST per token wins: ``status IN (queued, dispatching, pending) AND
invalid_after >= now`` is checked by the UPDATE itself, never by a read before it. The winner's
transaction also stores the artifacts, upserts the annotations and writes the
``analysis.completed`` outbox row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from shared import analysis_lifecycle as lifecycle
from shared.analysis_data import AnnotationIn, merged_json
from shared.artifacts import NewArtifact, artifact_ctes, write_artifacts
from shared.db.models import (
    AnalysisService,
    Annotation,
    Group,
    ObjAnalysis,
    OutboxMessage,
    obj_analysis_groups,
)
from shared.db.types import utcnow
from shared.enums import ACTIVE_STATUSES, AnalysisStatus
from shared.events import AnalysisEnded, analysis_ended
from shared.outbox import enqueue, outbox_values
from shared.web import ApiError, bad_request, forbidden

TOKEN_EXPIRED = "Token has expired"


@dataclass(frozen=True)
class Outcome:
    """What the service reported, ready to be written."""

    status: AnalysisStatus
    message: str
    artifacts: dict[str, Any]
    data_summary: dict[str, Any]
    annotations: list[AnnotationIn]


@dataclass(frozen=True)
class Callee:
    """The analysis a token names, as a plain row (the columns the webhook uses)."""

    id: int
    unique_id: str
    obj_id: str
    author_id: int
    analysis_service_id: int
    status: str
    status_message: str | None
    invalid_after: datetime
    last_activity: datetime
    service_name: str
    is_summary: bool


_CALLEE_COLUMNS = (
    ObjAnalysis.id,
    ObjAnalysis.unique_id,
    ObjAnalysis.obj_id,
    ObjAnalysis.author_id,
    ObjAnalysis.analysis_service_id,
    ObjAnalysis.status,
    ObjAnalysis.status_message,
    ObjAnalysis.invalid_after,
    ObjAnalysis.last_activity,
    AnalysisService.name,
    AnalysisService.is_summary,
)


def refusal(analysis: Callee) -> ApiError | None:
    """Why a webhook for this row is refused now, or None while it may still be accepted."""
    if analysis.status == AnalysisStatus.TIMED_OUT:
        return bad_request(TOKEN_EXPIRED)
    if analysis.status not in ACTIVE_STATUSES:
        return forbidden(
            f"Analysis already updated with status='{analysis.status}' "
            f"and message={analysis.status_message}"
        )
    return None


async def find_callee(connection: AsyncConnection, condition: ColumnElement[bool]) -> Callee | None:
    """One query, plain columns: no ORM session, no relationships."""
    query = (
        select(*_CALLEE_COLUMNS)
        .join(AnalysisService, AnalysisService.id == ObjAnalysis.analysis_service_id)
        .where(condition)
    )
    row = (await connection.execute(query)).first()
    return None if row is None else Callee(*row)


def _seconds_since(start: datetime, now: datetime) -> float:
    return max((now - start).total_seconds(), 0.0)


async def expire(session: AsyncSession, analysis: Callee, now: datetime) -> bool:
    """Active and past invalid_after → timed_out. False when another writer got there first."""
    return bool(await lifecycle.expire(session, ObjAnalysis.id == analysis.id, now))


def _winning_update(analysis: Callee, outcome: Outcome, now: datetime, dialect: str) -> Any:
    return (
        update(ObjAnalysis)
        .where(
            ObjAnalysis.id == analysis.id,
            ObjAnalysis.status.in_(ACTIVE_STATUSES),
            ObjAnalysis.invalid_after >= now,
        )
        .values(
            status=outcome.status,
            status_message=outcome.message,
            last_activity=now,
            duration=_seconds_since(analysis.last_activity, now),
            artifacts=merged_json(ObjAnalysis.artifacts, outcome.artifacts, dialect),
            data_summary=merged_json(ObjAnalysis.data_summary, outcome.data_summary, dialect),
            modified=now,
        )
        .returning(ObjAnalysis.id)
    )


def _completed_message(analysis: Callee, outcome: Outcome) -> AnalysisEnded:
    return analysis_ended(
        outcome.status,
        analysis.id,
        analysis.obj_id,
        analysis.analysis_service_id,
        analysis.is_summary,
    )


async def finalize(
    session: AsyncSession,
    analysis: Callee,
    outcome: Outcome,
    files: Sequence[NewArtifact] = (),
) -> bool:
    """The winning transition, with its artifacts (the bytes ``outcome.artifacts`` describes),
    annotations and outbox message. False = lost (nothing written)."""
    now = utcnow()
    statement = _winning_update(analysis, outcome, now, session.bind.dialect.name)
    if (await session.execute(statement)).first() is None:
        return False
    await write_artifacts(session, analysis.id, files)
    if outcome.status == AnalysisStatus.COMPLETED:
        await upsert_annotations(session, analysis, outcome.annotations)
    enqueue(session, _completed_message(analysis, outcome))
    return True


async def finalize_in_one_statement(
    connection: AsyncConnection,
    analysis: Callee,
    outcome: Outcome,
    files: Sequence[NewArtifact] = (),
) -> bool:
    """PostgreSQL, no annotations to store: the winning UPDATE, the artifacts' blob and link
    INSERTs and the outbox INSERT as one statement (data-modifying CTEs: the INSERTs write
    rows only if the UPDATE won), run on an autocommit connection: one round trip instead of
    BEGIN, several statements and COMMIT."""
    now = utcnow()
    won = _winning_update(analysis, outcome, now, "postgresql").cte("won")
    outbox = OutboxMessage.__table__
    row = {**outbox_values(_completed_message(analysis, outcome)), "created_at": now}
    queued = insert(outbox).from_select(
        list(row),
        select(*(literal(value, outbox.c[name].type) for name, value in row.items())).select_from(
            won
        ),
    )
    statement = select(won.c.id).add_cte(queued.cte("queued"), *artifact_ctes(won, files))
    return (await connection.execute(statement)).first() is not None


async def upsert_annotations(
    session: AsyncSession, analysis: Callee, items: list[AnnotationIn]
) -> None:
    """Update the author's own annotation with this origin when it is shared with exactly the
    analysis' groups; otherwise add a new one. Other annotations are never touched."""
    if not items:
        return
    groups = list(
        await session.scalars(
            select(Group)
            .join(obj_analysis_groups, obj_analysis_groups.c.group_id == Group.id)
            .where(obj_analysis_groups.c.obj_analysis_id == analysis.id)
        )
    )
    group_ids = {g.id for g in groups}
    for item in items:
        origin = item.origin or analysis.service_name
        mine = await session.scalars(
            select(Annotation)
            .where(
                Annotation.obj_id == analysis.obj_id,
                Annotation.origin == origin,
                Annotation.owner_id == analysis.author_id,
            )
            .order_by(Annotation.id.desc())
        )
        same_groups = [a for a in mine if {g.id for g in a.groups} == group_ids]
        if same_groups:
            same_groups[0].data = dict(item.data)
            same_groups[0].modified = utcnow()
        else:
            session.add(
                Annotation(
                    obj_id=analysis.obj_id,
                    owner_id=analysis.author_id,
                    origin=origin,
                    data=dict(item.data),
                    groups=list(groups),
                )
            )
    await session.flush()
