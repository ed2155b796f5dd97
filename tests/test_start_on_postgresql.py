"""Starts on PostgreSQL: the round trips of a batch, and the cap when another transaction
adds to it while a start waits for the pair's lock.

A start batch reads what admitting it needs in the same statement that takes the (author,
object) locks, so that read's snapshot can predate a transaction that held the lock and
committed while the statement waited; the insert counts again after the locks. The race test
holds the lock itself to make that interleaving happen every time. SQLite takes its write lock
before reading anything, so the interleaving cannot occur there.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from sqlalchemy import insert, text

from gateway.handlers.analyses import START_CAP_MESSAGE
from shared.db.models import ObjAnalysis, table_of
from shared.db.types import utcnow
from shared.runtime.resources import Resources
from shared.security.secrets import hash_token
from tests.support.analyses import count_analyses, make_obj, make_service
from tests.support.api import Accounts, api_client
from tests.support.statements import first_word, round_trips_on

WAITING_FOR_AN_ADVISORY_LOCK = text(
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
)


async def test_a_start_that_waited_for_the_lock_counts_what_the_holder_committed(
    resources: Resources, accounts: Accounts
) -> None:
    resources.settings.max_analyses_per_obj_per_user = 1
    group = await accounts.group()
    user = await accounts.user(acls=("Run Analyses",), groups=(group,))
    obj_id = await make_obj(resources, [group])
    service = await make_service(resources, [group])
    unique_id = str(uuid.uuid4())
    now = utcnow()
    queued_elsewhere = {
        "unique_id": unique_id,
        "obj_id": obj_id,
        "author_id": user.id,
        "analysis_service_id": service.id,
        "token_hash": hash_token(resources.callback_tokens.token_for(unique_id)),
        "status": "queued",
        "invalid_after": now + timedelta(hours=1),
        "last_activity": now,
    }
    async with api_client(resources) as api, resources.engine.connect() as holder:
        holding = await holder.begin()
        lock = text("SELECT pg_advisory_xact_lock(hashtext(:key))")
        await holder.execute(lock, {"key": f"{obj_id}:{user.id}"})
        await holder.execute(insert(table_of(ObjAnalysis)).values(**queued_elsewhere))

        start = asyncio.create_task(api.post(f"/api/obj/{obj_id}/analysis/{service.id}", user, {}))
        async with resources.engine.connect() as watcher:
            for _ in range(3000):  # until the start waits for the lock (at most 30 s)
                if (await watcher.execute(WAITING_FOR_AN_ADVISORY_LOCK)).scalar_one():
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("the start never waited for the pair's lock")
        await holding.commit()
        reply = await start

    assert reply.status == 403, reply.body
    assert reply.body["message"] == START_CAP_MESSAGE
    assert await count_analyses(resources, obj_id=obj_id, status="queued") == 1


async def test_a_start_batch_is_four_round_trips(resources: Resources, accounts: Accounts) -> None:
    """BEGIN, the locks with the read that admits the batch, the rows with their links and
    events, COMMIT: four round trips for every batch of starts, however many it holds."""
    group = await accounts.group()
    user = await accounts.user(acls=("Run Analyses",), groups=(group,))
    obj_ids = [await make_obj(resources, [group]) for _ in range(3)]
    service = await make_service(resources, [group])
    async with api_client(resources) as api:
        path = f"/api/obj/{obj_ids[0]}/analysis/{service.id}"
        assert (await api.post(path, user, {})).status == 200  # the caller and service cached
        with round_trips_on(resources.engine) as sent:
            replies = await asyncio.gather(
                *(api.post(f"/api/obj/{o}/analysis/{service.id}", user, {}) for o in obj_ids * 4)
            )
            await asyncio.sleep(0)  # asyncpg calls its query loggers soon, not at once

    assert [r.status for r in replies] == [200] * 12, [r.body for r in replies]
    batches = [s for s in sent if first_word(s) == "BEGIN"]
    assert batches and len(sent) == 4 * len(batches), "\n".join(s[:100] for s in sent)
