"""A backlog the planner does not know of: the hot statements still read only their own rows.

After an outage, analyses pile up as ``queued`` faster than PostgreSQL's statistics follow
(autovacuum analyzes a table once a tenth of it changed). Planned from statistics that call
the status rare, a statement over a batch of ids that also checks the status scanned the
status index, so every claim and every callback batch read the whole backlog. These tests
build that situation inside a transaction they roll back (the rows, and the statistics
ANALYZE stored, go with it) and run the real statements under EXPLAIN ANALYZE.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text, true
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.dialect import NOW
from shared.db.models import ObjAnalysis
from shared.db.types import utcnow
from shared.domain import analysis_lifecycle as lifecycle
from tests.support.explain import plan_of, rolled_back_session, rows_read_from

BACKLOG = 20_000
BATCH = 64

_ROWS = """
INSERT INTO obj_analyses (unique_id, obj_id, author_id, analysis_service_id, token_hash, status,
    analysis_parameters, input_filters, show_parameters, show_plots, show_corner, invalid_after,
    last_activity, handled_by_url, artifacts, data_summary, dispatch_attempts_count, finished_at,
    created_at, modified)
SELECT md5(:tag || :status || g), :obj_id, :user_id, :service_id, md5(:tag || :status || g || 't'),
    :status, '{}', '{}', false, false, false, now() + interval '1 hour', now(), 'x', '{}', '{}',
    :attempts, CASE WHEN :status IN ('queued', 'dispatching', 'pending') THEN NULL ELSE now() END,
    now(), now()
FROM generate_series(1, :count) AS g
"""


async def _add_rows(
    session: AsyncSession, owner: dict[str, object], status: str, count: int
) -> None:
    attempts = 1 if status == "dispatching" else 0
    parameters = {**owner, "status": status, "count": count, "attempts": attempts}
    await session.execute(text(_ROWS), parameters)


async def _new_user(session: AsyncSession, name: str) -> int:
    return int(
        await session.scalar(
            text(
                "INSERT INTO users (username, is_admin, acls, preferences, created_at, modified) "
                "VALUES (:name, false, '[]', '{}', now(), now()) RETURNING id"
            ),
            {"name": name},
        )
    )


async def _new_obj(session: AsyncSession, obj_id: str) -> str:
    return str(
        await session.scalar(
            text(
                "INSERT INTO objs (id, ra, dec, summary_history, created_at, modified) "
                "VALUES (:id, 1, 1, '[]', now(), now()) RETURNING id"
            ),
            {"id": obj_id},
        )
    )


@pytest.fixture
async def backlog(database_url: str) -> AsyncIterator[AsyncSession]:
    """A session whose transaction holds a few hundred analyses that ANALYZE saw, then a
    backlog of queued ones and a batch in each other active status that it did not."""
    async with rolled_back_session(database_url) as session:
        await _fill_backlog(session)
        yield session


async def _fill_backlog(session: AsyncSession) -> None:
    tag = uuid.uuid4().hex[:10]
    owner = {
        "tag": tag,
        "user_id": await _new_user(session, f"backlog-{tag}"),
        "obj_id": await _new_obj(session, f"backlog_{tag}"),
        "service_id": await session.scalar(
            text(
                "INSERT INTO analysis_services (name, display_name, url, "
                "optional_analysis_parameters, authentication_type, enabled, analysis_type, "
                "input_data_types, inputs_format, timeout, upload_only, is_summary, "
                "display_on_resource_dropdown, created_at, modified) VALUES (:name, :name, "
                "'http://127.0.0.1:9', '{}', 'none', true, 'lightcurve_fitting', '[]', 'csv', "
                "3600, false, false, true, now(), now()) RETURNING id"
            ),
            {"name": f"backlog-{tag}"},
        ),
    }
    await _add_rows(session, owner, "completed", 300)
    await session.execute(text("ANALYZE obj_analyses"))
    await _add_rows(session, owner, "queued", BACKLOG)
    await _add_rows(session, owner, "dispatching", BATCH)
    await _add_rows(session, owner, "pending", BATCH)
    session.info["obj_id"] = owner["obj_id"]
    session.info["owner"] = owner


async def _ids(session: AsyncSession, status: str) -> list[int]:
    """A batch of the backlog's analyses in this status."""
    found = await session.scalars(
        text(
            "SELECT id FROM obj_analyses WHERE status = :status AND obj_id = :obj_id "
            "ORDER BY id LIMIT :count"
        ),
        {"status": status, "obj_id": session.info["obj_id"], "count": BATCH},
    )
    return list(found)


def _assert_read_only_the_batch(plan: dict[str, object]) -> None:
    assert plan["Actual Rows"] == BATCH, "every row of the batch moved"
    read = rows_read_from(plan, "obj_analyses")
    print(plan)
    assert read <= BATCH, f"read {read} analyses to move {BATCH}"


async def test_a_claim_reads_its_batch_not_the_backlog(backlog: AsyncSession) -> None:
    claimed = await _ids(backlog, "queued")
    parameters = {"claimed_ids": claimed, NOW.key: utcnow()}

    plan = await plan_of(backlog, lifecycle._claiming("postgresql"), parameters)

    _assert_read_only_the_batch(plan)


async def test_a_callback_batch_reads_its_analyses_not_every_active_one(
    backlog: AsyncSession,
) -> None:
    pending = await _ids(backlog, "pending")
    completed, won = lifecycle._winning_update("postgresql")
    rows = [
        {
            "id": analysis_id,
            "status": "completed",
            "status_message": "fit done",
            "duration": 1.0,
            "artifacts": {},
            "data_summary": {},
            "message_id": str(uuid.uuid4()),
            "routing_key": "analysis.completed",
            "payload": {"analysis_id": analysis_id},
        }
        for analysis_id in pending
    ]

    plan = await plan_of(backlog, won, {**completed.bound(rows), NOW.key: utcnow()})

    _assert_read_only_the_batch(plan)


async def test_a_batch_of_attempt_ends_reads_its_analyses_not_every_active_one(
    backlog: AsyncSession,
) -> None:
    sent = await _ids(backlog, "dispatching")
    finished, write = lifecycle._finishing("postgresql", reaping=False)
    now = utcnow()
    rows = [
        {
            "analysis_id": analysis_id,
            "attempt_number": 1,
            "status": "pending",
            "status_message": "accepted",
            "next_attempt_at": None,
            "finished_at": None,
            "started_at": now - timedelta(seconds=1),
            "latency_ms": 5.0,
            "http_status": 200,
            "outcome": "accepted",
            "error": None,
            "message_id": None,
            "routing_key": None,
            "payload": None,
        }
        for analysis_id in sent
    ]
    plan = await plan_of(backlog, write.guard, {**finished.bound(rows), NOW.key: now})

    _assert_read_only_the_batch(plan)


@pytest.fixture
async def crowded_source(backlog: AsyncSession) -> AsyncSession:
    """The backlog's object also holds failures of its author's and another author's
    completed analyses, none of which count toward the cap, and the author has many more
    analyses of another object; ANALYZE has seen them all."""
    own = backlog.info["owner"]
    await _add_rows(backlog, {**own, "tag": uuid.uuid4().hex[:10]}, "failure", 2_000)
    other = await _new_user(backlog, f"other-{uuid.uuid4().hex[:10]}")
    await _add_rows(
        backlog, {**own, "user_id": other, "tag": uuid.uuid4().hex[:10]}, "completed", 5_000
    )
    elsewhere = await _new_obj(backlog, f"elsewhere_{uuid.uuid4().hex[:10]}")
    on_another = {**own, "obj_id": elsewhere, "tag": uuid.uuid4().hex[:10]}
    await _add_rows(backlog, on_another, "completed", 30_000)
    await backlog.execute(text("ANALYZE obj_analyses"))
    return backlog


async def test_a_start_counts_toward_the_cap_from_the_authors_analyses_of_the_object(
    crowded_source: AsyncSession,
) -> None:
    """The cap counts the author's completed and active analyses on the object (the creating
    insert counts them). Through an index on the object alone (or on the author alone) the
    count read every analysis of the object, the other author's 5,000 included (or the
    author's 30,000 of another object); it reads only the author's analyses of this object."""
    owner = crowded_source.info["owner"]
    counted = 300 + BACKLOG + 2 * BATCH
    writes = lifecycle._creation_writes("postgresql")

    async def start_under(cap: int) -> tuple[bool, Any]:
        analysis_id = await crowded_source.scalar(
            text("SELECT nextval(pg_get_serial_sequence('obj_analyses', 'id'))")
        )
        unique_id = str(uuid.uuid4())
        now = utcnow()
        row = {
            **dict.fromkeys(("id", *lifecycle.NEW_ROW)),
            "id": analysis_id,
            "unique_id": unique_id,
            "obj_id": owner["obj_id"],
            "author_id": owner["user_id"],
            "analysis_service_id": owner["service_id"],
            "token_hash": uuid.uuid4().hex * 2,
            "status": "queued",
            "analysis_parameters": {},
            "input_filters": {},
            "show_parameters": False,
            "show_plots": False,
            "show_corner": False,
            "invalid_after": now + timedelta(hours=1),
            "last_activity": now,
            "handled_by_url": "x",
            "artifacts": {},
            "data_summary": {},
            "cap_rank": 1,
        }
        parameters = {
            **writes.analyses.bound([row]),
            **writes.links.bound([]),
            **writes.messages.bound([]),
            NOW.key: now,
            lifecycle.CREATION_CAP.key: cap,
        }
        plan = await plan_of(crowded_source, writes.write.statement, parameters)
        found = text("SELECT count(*) FROM obj_analyses WHERE id = :id")
        inserted = await crowded_source.scalar(found, {"id": analysis_id}) == 1
        return inserted, plan

    refused, _ = await start_under(cap=counted)
    admitted, plan = await start_under(cap=counted + 1)

    assert (refused, admitted) == (False, True)
    read = rows_read_from(plan, "obj_analyses")
    authors_on_the_object = counted + 2_000
    assert read <= authors_on_the_object, f"read {read} analyses to count {counted}"


async def test_the_expiry_sweep_reads_the_running_analyses_not_the_finished_ones(
    backlog: AsyncSession,
) -> None:
    """A finished analysis keeps its ``invalid_after``, which passes: through an index on
    ``invalid_after`` over every analysis, each sweep read the whole history."""
    own = backlog.info["owner"]
    await _add_rows(backlog, {**own, "tag": uuid.uuid4().hex[:10]}, "completed", BACKLOG)
    past = {"obj_id": own["obj_id"]}
    await backlog.execute(
        text(
            "UPDATE obj_analyses SET invalid_after = now() - interval '1 day' "
            "WHERE obj_id = :obj_id AND status IN ('completed', 'pending')"
        ),
        past,
    )

    # Other tests' analyses left running past their time (the database is shared) time out too.
    now = utcnow()
    expired_elsewhere = await backlog.scalar(
        select(func.count())
        .select_from(ObjAnalysis)
        .where(
            lifecycle.running(),
            ObjAnalysis.obj_id != own["obj_id"],
            ObjAnalysis.invalid_after < now,
        )
    )
    expired = BATCH + (expired_elsewhere or 0)

    plan = await plan_of(backlog, lifecycle._expiring(true(), now, "postgresql"), {})

    assert plan["Actual Rows"] == expired, "the analyses past their time timed out"
    read = rows_read_from(plan, "obj_analyses")
    assert read <= expired, f"read {read} analyses to time out {expired}"
