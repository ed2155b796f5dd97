"""Every state change the dispatcher makes, each one conditional statement.

A claim increments ``dispatch_attempts_count`` and returns it: that number is the attempt's
fencing token. Every later update of the attempt requires ``status = 'dispatching'`` and the
same count, so an attempt that was reaped (and perhaps claimed again by another dispatcher),
cancelled, or overtaken by a fast webhook changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.db.dialect import name_of, skip_locked, upsert, write_together
from shared.db.models import DispatchAttempt, ObjAnalysis
from shared.enums import ACTIVE_STATUSES, AnalysisStatus
from shared.events import AnalysisRequested
from shared.outbox import enqueue

MESSAGE_LIMIT = 1024
BATCH_LIMIT = 500
SENDING = "sending"  # the HTTP call is under way (or its dispatcher died during it)
INTERRUPTED = "interrupted"  # its dispatcher died during it; the analysis moved on without it
UNFINISHED_OUTCOMES = (SENDING, INTERRUPTED)
ORPHAN_ERROR = "the dispatcher stopped during this attempt; the analysis moved on without it"

Sessions = async_sessionmaker[AsyncSession]


def naive_utc_text(moment: datetime) -> str:
    """SkyPortal's datetime text: naive UTC ``YYYY-MM-DD HH:MM:SS.ffffff``."""
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def truncate(text: str, limit: int = MESSAGE_LIMIT) -> str:
    return text if len(text) <= limit else text[:limit]


@dataclass(frozen=True)
class AttemptRecord:
    """What one attempt did, as stored in ``dispatch_attempts``."""

    attempt_number: int
    started_at: datetime
    outcome: str  # sending | accepted | retry | failed | interrupted
    latency_ms: float | None = None
    http_status: int | None = None
    error: str | None = None


def _fenced(analysis_id: int, attempt_number: int) -> ColumnElement[bool]:
    return and_(
        ObjAnalysis.id == analysis_id,
        ObjAnalysis.status == AnalysisStatus.DISPATCHING,
        ObjAnalysis.dispatch_attempts_count == attempt_number,
    )


async def claim(session: AsyncSession, analysis_id: int, now: datetime) -> int | None:
    """``queued → dispatching`` if the row is due; returns the attempt number, or None."""
    statement = (
        update(ObjAnalysis)
        .where(
            ObjAnalysis.id == analysis_id,
            ObjAnalysis.status == AnalysisStatus.QUEUED,
            or_(ObjAnalysis.next_attempt_at.is_(None), ObjAnalysis.next_attempt_at <= now),
            ObjAnalysis.invalid_after > now,
        )
        .values(
            status=AnalysisStatus.DISPATCHING,
            dispatch_attempts_count=ObjAnalysis.dispatch_attempts_count + 1,
            next_attempt_at=None,
            last_activity=now,
        )
        .returning(ObjAnalysis.dispatch_attempts_count)
        .execution_options(synchronize_session=False)
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def mark_sending(
    session: AsyncSession,
    analysis_id: int,
    attempt_number: int,
    now: datetime,
    started_at: datetime,
    provenance: dict[str, Any] | None = None,
) -> bool:
    """Just before the HTTP call, in the claiming transaction: refreshes ``last_activity`` (the
    reaper's clock), on the first attempt records the inputs' provenance (artifact manifest,
    hash), and writes the attempt row (outcome ``sending``), so an attempt cut short by a
    crash is listed even when the service's callback completes the analysis."""
    values: dict[str, Any] = {"last_activity": now, **(provenance or {})}
    statement = (
        update(ObjAnalysis)
        .where(_fenced(analysis_id, attempt_number))
        .values(**values)
        .returning(ObjAnalysis.id)
        .execution_options(synchronize_session=False)
    )
    sending = AttemptRecord(attempt_number=attempt_number, started_at=started_at, outcome=SENDING)
    if (await session.execute(statement)).scalar_one_or_none() is None:
        return False
    await record_attempt(session, analysis_id, sending)
    return True


def _attempt_upsert(dialect: str, analysis_id: int, record: AttemptRecord) -> Any:
    """INSERT of the attempt's row that replaces its ``sending`` (or ``interrupted``) state;
    a final outcome already written for this attempt (by the reaper) wins."""
    values = {
        "analysis_id": analysis_id,
        "attempt_number": record.attempt_number,
        "started_at": record.started_at,
        "latency_ms": record.latency_ms,
        "http_status": record.http_status,
        "outcome": record.outcome,
        "error": truncate(record.error) if record.error else None,
    }
    return upsert(
        dialect,
        DispatchAttempt,
        values,
        ["analysis_id", "attempt_number"],
        where=DispatchAttempt.outcome.in_(UNFINISHED_OUTCOMES),
    )


async def record_attempt(session: AsyncSession, analysis_id: int, record: AttemptRecord) -> None:
    """Write the attempt's row (see ``_attempt_upsert``)."""
    await session.execute(_attempt_upsert(name_of(session), analysis_id, record))


def _finish_update(
    analysis_id: int,
    record: AttemptRecord,
    new_status: AnalysisStatus,
    status_message: str | None,
    now: datetime,
    next_attempt_at: datetime | None,
) -> Any:
    return (
        update(ObjAnalysis)
        .where(_fenced(analysis_id, record.attempt_number))
        .values(
            status=new_status,
            status_message=truncate(status_message) if status_message is not None else None,
            last_activity=now,
            next_attempt_at=next_attempt_at,
        )
        .returning(ObjAnalysis.id)
    )


async def finish_attempt(
    engine: AsyncEngine,
    analysis_id: int,
    record: AttemptRecord,
    new_status: AnalysisStatus,
    status_message: str | None,
    now: datetime,
    next_attempt_at: datetime | None = None,
) -> bool:
    """Record the attempt and move the row on (only if the attempt still owns it), in one
    atomic write."""
    moved = _finish_update(analysis_id, record, new_status, status_message, now, next_attempt_at)
    recorded = _attempt_upsert(name_of(engine), analysis_id, record)
    rows = await write_together(engine, moved, always=[recorded.returning(DispatchAttempt.id)])
    return bool(rows)


async def announce_due(sessions: Sessions, now: datetime, lost_after: timedelta) -> list[int]:
    """Queue an ``analysis.requested`` (via the outbox) for every ``queued`` row that is due.

    Due: its retry time has come, or it never had one and has waited ``lost_after`` (its
    message was probably lost). Clearing ``next_attempt_at`` and touching ``last_activity`` in
    the same statement makes each row announced once, however many dispatchers poll.
    """
    due = and_(
        ObjAnalysis.status == AnalysisStatus.QUEUED,
        ObjAnalysis.invalid_after > now,
        or_(
            ObjAnalysis.next_attempt_at <= now,
            and_(
                ObjAnalysis.next_attempt_at.is_(None),
                ObjAnalysis.last_activity < now - lost_after,
            ),
        ),
    )
    async with sessions.begin() as session:
        candidates = skip_locked(
            select(ObjAnalysis.id).where(due).limit(BATCH_LIMIT), name_of(session)
        )
        # Read first: most polls find nothing, and then take no write lock at all.
        found = list(await session.scalars(candidates))
        if not found:
            return []
        statement = (
            update(ObjAnalysis)
            .where(ObjAnalysis.id.in_(found), due)
            .values(next_attempt_at=None, last_activity=now)
            .returning(ObjAnalysis.id)
            .execution_options(synchronize_session=False)
        )
        ids = list((await session.execute(statement)).scalars())
        for analysis_id in ids:
            enqueue(session, AnalysisRequested(analysis_id=analysis_id))
    return ids


@dataclass(frozen=True)
class StuckRow:
    analysis_id: int
    attempt_number: int
    last_activity: datetime


async def stuck_rows(sessions: Sessions, cutoff: datetime) -> list[StuckRow]:
    """Rows ``dispatching`` with no activity since ``cutoff``."""
    async with sessions() as session:
        rows = await session.execute(
            select(ObjAnalysis.id, ObjAnalysis.dispatch_attempts_count, ObjAnalysis.last_activity)
            .where(
                ObjAnalysis.status == AnalysisStatus.DISPATCHING,
                ObjAnalysis.last_activity < cutoff,
            )
            .limit(BATCH_LIMIT)
        )
        return [StuckRow(r.id, r.dispatch_attempts_count, r.last_activity) for r in rows]


async def release_stuck(
    sessions: Sessions,
    analysis_id: int,
    attempt_number: int,
    cutoff: datetime,
    record: AttemptRecord,
    new_status: AnalysisStatus,
    status_message: str,
    now: datetime,
) -> bool:
    """Give a stuck attempt up: back to ``queued`` (due now) or to ``failure``."""
    statement = (
        update(ObjAnalysis)
        .where(_fenced(analysis_id, attempt_number), ObjAnalysis.last_activity < cutoff)
        .values(
            status=new_status,
            status_message=truncate(status_message),
            last_activity=now,
            next_attempt_at=now if new_status == AnalysisStatus.QUEUED else None,
        )
        .returning(ObjAnalysis.id)
        .execution_options(synchronize_session=False)
    )
    async with sessions.begin() as session:
        released = (await session.execute(statement)).scalar_one_or_none() is not None
        if released:
            await record_attempt(session, analysis_id, record)
        return released


async def mark_orphaned_attempts(sessions: Sessions, cutoff: datetime) -> int:
    """Attempts still ``sending`` since before ``cutoff`` whose analysis is no longer in that
    attempt (completed by the service's callback, cancelled, timed out): their dispatcher died
    during the call. Marked ``interrupted``; a dispatcher that was only slow still writes its
    real outcome over it."""
    in_this_attempt = (
        select(ObjAnalysis.id)
        .where(
            ObjAnalysis.id == DispatchAttempt.analysis_id,
            ObjAnalysis.status == AnalysisStatus.DISPATCHING,
            ObjAnalysis.dispatch_attempts_count == DispatchAttempt.attempt_number,
        )
        .exists()
    )
    statement = (
        update(DispatchAttempt)
        .where(
            DispatchAttempt.outcome == SENDING,
            DispatchAttempt.started_at < cutoff,
            ~in_this_attempt,
        )
        .values(outcome=INTERRUPTED, error=ORPHAN_ERROR)
        .returning(DispatchAttempt.id)
        .execution_options(synchronize_session=False)
    )
    async with sessions.begin() as session:
        return len(list((await session.execute(statement)).scalars()))


def timed_out_message(now: datetime) -> str:
    return f"Analysis timed out before webhook call at {naive_utc_text(now)}"


async def sweep_expired(sessions: Sessions, now: datetime) -> list[int]:
    """Active rows past ``invalid_after`` → ``timed_out``."""
    statement = (
        update(ObjAnalysis)
        .where(ObjAnalysis.status.in_(ACTIVE_STATUSES), ObjAnalysis.invalid_after < now)
        .values(
            status=AnalysisStatus.TIMED_OUT,
            status_message=timed_out_message(now),
            last_activity=now,
            next_attempt_at=None,
        )
        .returning(ObjAnalysis.id)
        .execution_options(synchronize_session=False)
    )
    async with sessions.begin() as session:
        return list((await session.execute(statement)).scalars())
