"""Set-based transitions: a cancel over a set of analyses moves only the active ones; against
concurrent writers on PostgreSQL, a deadlock PostgreSQL breaks by aborting a batch's statement
is retried, so the batch still lands, exactly once."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
import pytest
from sqlalchemy import select

from shared.db.models import ObjAnalysis, OutboxMessage
from shared.db.types import utcnow
from shared.domain import analysis_lifecycle as lifecycle
from shared.domain.enums import AnalysisStatus
from shared.runtime.resources import Resources
from tests.conftest import _dsn
from tests.support.api import Accounts
from tests.support.pipeline import (
    load_analysis,
    load_attempts,
    make_analysis,
    make_obj,
    make_service,
)


@pytest.mark.usefixtures("backend")
async def test_a_cancel_over_a_set_moves_only_the_active_analyses_each_once(
    resources: Resources, accounts: Accounts
) -> None:
    group = await accounts.group()
    author = await accounts.user(acls=("Run Analyses",), groups=(group,))
    obj_id = await make_obj(resources, [group])
    service_id = await make_service(resources, "http://127.0.0.1:9/", [group])
    queued, pending, completed = [
        await make_analysis(resources, obj_id, service_id, author.id, [group], status=status)
        for status in ("queued", "pending", "completed")
    ]
    ids = [queued.id, pending.id, completed.id, queued.id]
    async with resources.sessions.begin() as session:
        cancelled = await lifecycle.cancel_analyses(session, ids, "ada")

    assert sorted(cancelled) == sorted([queued.id, pending.id])
    rows = [await load_analysis(resources, r.id) for r in (queued, pending, completed)]
    assert [(r.status, r.status_message) for r in rows] == [
        ("cancelled", "Cancelled by ada"),
        ("cancelled", "Cancelled by ada"),
        ("completed", None),
    ]
    async with resources.sessions() as session:
        events = await session.scalars(
            select(OutboxMessage).where(OutboxMessage.routing_key == "analysis.cancelled")
        )
        announced = sorted(e.payload["analysis_id"] for e in events)
    assert [i for i in announced if i in ids] == sorted([queued.id, pending.id])


@pytest.mark.usefixtures("backend")
async def test_finished_at_is_stamped_by_the_transitions_to_a_final_status_only(
    resources: Resources, accounts: Accounts
) -> None:
    """The sweeps find the running analyses through an index on ``finished_at IS NULL``:
    every way out (cancelled, timed out, failed after an attempt) stamps it, and a move
    between running statuses (accepted, queued for a retry) leaves it empty."""
    group = await accounts.group()
    author = await accounts.user(acls=("Run Analyses",), groups=(group,))
    obj_id = await make_obj(resources, [group])
    service_id = await make_service(resources, "http://127.0.0.1:9/", [group])
    now = utcnow()

    async def analysis(**fields: object) -> int:
        row = await make_analysis(resources, obj_id, service_id, author.id, [group], **fields)
        return row.id

    cancelled = await analysis()
    expired = await analysis(status="pending", invalid_after=now - timedelta(seconds=1))
    failed, accepted, retried = [
        await analysis(status="dispatching", dispatch_attempts_count=1) for _ in range(3)
    ]
    async with resources.sessions.begin() as session:
        await lifecycle.cancel_analyses(session, [cancelled], "ada")
        await lifecycle.expire(session, ObjAnalysis.id == expired, now)
    ends = {
        failed: (AnalysisStatus.FAILURE, "refused", None),
        accepted: (AnalysisStatus.PENDING, "accepted", None),
        retried: (AnalysisStatus.QUEUED, "retry", now + timedelta(minutes=1)),
    }
    batch = [
        lifecycle.FinishedAttempt(
            lifecycle.Subject(analysis_id, obj_id, service_id, False),
            lifecycle.AttemptRecord(1, now, outcome, http_status=202),
            status,
            outcome,
            next_at,
        )
        for analysis_id, (status, outcome, next_at) in ends.items()
    ]
    assert await lifecycle.finish_attempts(
        resources.engine, batch, utcnow(), outbox=resources.outbox
    ) == [True, True, True]

    rows = {i: await load_analysis(resources, i) for i in (cancelled, expired, *ends)}
    assert {i: (r.status, r.finished_at is not None) for i, r in rows.items()} == {
        cancelled: ("cancelled", True),
        expired: ("timed_out", True),
        failed: ("failure", True),
        accepted: ("pending", False),
        retried: ("queued", False),
    }


async def test_a_batch_aborted_to_break_a_deadlock_is_written_again(
    resources: Resources, accounts: Accounts
) -> None:
    group = await accounts.group()
    author = await accounts.user(acls=("Run Analyses",), groups=(group,))
    obj_id = await make_obj(resources, [group])
    service_id = await make_service(resources, "http://127.0.0.1:9/", [group])
    first, second = [
        await make_analysis(
            resources,
            obj_id,
            service_id,
            author.id,
            [group],
            status="dispatching",
            dispatch_attempts_count=1,
        )
        for _ in range(2)
    ]
    started = utcnow() - timedelta(seconds=1)
    batch = [
        lifecycle.FinishedAttempt(
            lifecycle.Subject(row.id, obj_id, service_id, False),
            lifecycle.AttemptRecord(1, started, "accepted", http_status=202),
            AnalysisStatus.PENDING,
            "accepted",
        )
        for row in (first, second)
    ]
    database = resources.engine.url.database
    assert database is not None
    other = await asyncpg.connect(_dsn(database))
    try:
        # Another writer holds the second row and will want the first: whichever order the
        # batch takes them in, the two wait for each other. This writer waits longer before
        # checking for a deadlock, so PostgreSQL aborts the batch's statement.
        transaction = other.transaction()
        await transaction.start()
        await other.execute("SET LOCAL deadlock_timeout = '20s'")
        await other.execute("SELECT 1 FROM obj_analyses WHERE id = $1 FOR UPDATE", second.id)
        batch_done = asyncio.ensure_future(
            lifecycle.finish_attempts(resources.engine, batch, utcnow(), outbox=resources.outbox)
        )
        await _until_the_batch_waits_for_a_lock(other)
        await other.execute(
            "UPDATE obj_analyses SET status_message = 'other writer' WHERE id = $1", first.id
        )
        await transaction.commit()
        moved = await batch_done
    finally:
        await other.close()

    assert moved == [True, True]
    assert [(await load_analysis(resources, r.id)).status for r in (first, second)] == [
        "pending",
        "pending",
    ]
    for row in (first, second):
        assert [a.outcome for a in await load_attempts(resources, row.id)] == ["accepted"]


async def _until_the_batch_waits_for_a_lock(connection: asyncpg.Connection) -> None:
    """Until another session of this database waits for a row lock (polling its state)."""
    for _ in range(2000):
        waiting = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the batch never waited for the other writer's lock")
