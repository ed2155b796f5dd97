"""A claim's inputs read the points of its batch's sources, whatever the photometry table's size.

On a small table (the statistics of a young portal, or of one group's few hundred points),
PostgreSQL planned the sources joined to their points by hashing every point the reader may
read, so each claim batch read all of them. The data here is built inside a transaction that
is rolled back (the rows, and the statistics ANALYZE stored, go with it) and the real query
runs under EXPLAIN ANALYZE.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncSession

from dispatcher.inputs import _sources_with_photometry_query
from shared.db.models import Group, Instrument, Obj, Photometry, obj_groups, photometry_groups
from tests.support.explain import plan_of, rolled_back_session, rows_read_from

SOURCES = 100
POINTS_PER_SOURCE = 5
BATCH = 10


@pytest.fixture
async def small_portal(database_url: str) -> AsyncIterator[AsyncSession]:
    """A session whose transaction holds one group's sources, each with a few points, all of
    them analyzed."""
    async with rolled_back_session(database_url) as session:
        await _fill(session)
        yield session


async def _fill(session: AsyncSession) -> None:
    tag = uuid.uuid4().hex[:10]
    group, instrument = Group(name=f"plan-{tag}"), Instrument(name=f"plan-{tag}")
    sources = [Obj(id=f"plan_{tag}_{n}", ra=1.0, dec=1.0) for n in range(SOURCES)]
    session.add_all([group, instrument, *sources])
    await session.flush()
    points = [
        Photometry(
            obj_id=source.id,
            instrument_id=instrument.id,
            mjd=59000.0 + n,
            filter="ztfg",
            flux=100.0,
            fluxerr=5.0,
        )
        for source in sources
        for n in range(POINTS_PER_SOURCE)
    ]
    session.add_all(points)
    await session.flush()
    await session.execute(
        insert(obj_groups), [{"obj_id": s.id, "group_id": group.id} for s in sources]
    )
    await session.execute(
        insert(photometry_groups), [{"photometry_id": p.id, "group_id": group.id} for p in points]
    )
    for table in ("objs", "obj_groups", "photometry", "photometry_groups", "instruments"):
        await session.execute(text(f"ANALYZE {table}"))
    session.info["group_id"] = group.id
    session.info["sources"] = [s.id for s in sources]


async def test_a_claim_batch_reads_the_points_of_its_sources_only(
    small_portal: AsyncSession,
) -> None:
    batch = small_portal.info["sources"][:BATCH]
    parameters = {
        "read_objs": batch,
        "reader_groups": [small_portal.info["group_id"]],
        "chosen_filters": [],
        "chosen_instruments": [],
    }
    query = _sources_with_photometry_query("postgresql", False, False, False)

    plan = await plan_of(small_portal, query, parameters)

    assert plan["Actual Rows"] == BATCH * POINTS_PER_SOURCE
    read = rows_read_from(plan, "photometry")
    assert read <= BATCH * POINTS_PER_SOURCE, f"read {read} points to send {BATCH} sources'"
