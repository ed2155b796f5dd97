"""``skyhook run`` starting on a database a previous run left work in.

The in-process bus keeps its messages in memory: the outbox relay deletes a row as soon as the
bus took it, so an ``analysis.requested`` still waiting in the bus (or a send under way) when
the process ends exists nowhere any more. Its row stays ``queued`` (or ``dispatching``) with
nothing in the log, and only the lost-message poller (``SKYHOOK_DISPATCH_REQUEUE_AFTER_SECONDS``,
300 s by default) or the reaper would send it again. So the next start re-sends every such row
at once (``recover_embedded_work``), however many there are: the lifecycle's queries work in
batches, and a start that took one batch left the rest waiting for the poller.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from shared.db.migrate import upgrade
from shared.db.models import OutboxMessage
from shared.db.types import utcnow
from shared.domain import analysis_lifecycle as lifecycle
from shared.domain.enums import AnalysisStatus
from shared.domain.events import AnalysisRequested
from shared.runtime.resources import Resources
from skyhook.composition import recover_embedded_work
from tests.support.api import Accounts
from tests.support.pipeline import load_analysis, make_analysis, make_obj, make_service

BATCH = 3  # the lifecycle's batch size for this test, so a few rows make several batches


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """A database of its own: the start re-sends every unfinished row it finds."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'skyhook.db'}"
    upgrade(url)
    return url


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(lifecycle, "BATCH_LIMIT", BATCH)
    yield


@pytest.mark.usefixtures("small_batches")
async def test_a_start_re_sends_every_row_the_previous_run_left_unsent(
    resources: Resources, accounts: Accounts
) -> None:
    group = await accounts.group()
    author = await accounts.user(acls=("Run Analyses",), groups=(group,))
    obj_id = await make_obj(resources, [group])
    service_id = await make_service(resources, "http://127.0.0.1:9/never", [group])
    earlier = utcnow() - timedelta(seconds=1)  # the previous run's last touch

    async def left(count: int, **fields: object) -> list[int]:
        rows = [
            await make_analysis(
                resources, obj_id, service_id, author.id, [group], last_activity=earlier, **fields
            )
            for _ in range(count)
        ]
        return [row.id for row in rows]

    # Messages that died in the bus: more rows than one batch holds.
    queued = await left(3 * BATCH + 1)
    # Sends that died with the process.
    dispatching = await left(2 * BATCH + 1, status="dispatching", dispatch_attempts_count=1)
    # A retry the previous run scheduled for later: the retry poller sends it when it is due.
    scheduled = await left(1, next_attempt_at=utcnow() + timedelta(hours=1))

    announced = await recover_embedded_work(resources)

    async with resources.sessions() as session:
        messages = list(
            await session.scalars(
                select(OutboxMessage).where(
                    OutboxMessage.routing_key == AnalysisRequested.ROUTING_KEY
                )
            )
        )
    sent_again = sorted(m.payload["analysis_id"] for m in messages)
    assert sent_again == sorted(queued + dispatching)  # each one, once
    assert announced == len(queued) + len(dispatching)
    for analysis_id in queued + dispatching:
        row = await load_analysis(resources, analysis_id)
        assert row.status == AnalysisStatus.QUEUED
        assert row.next_attempt_at is None
    (later,) = scheduled
    assert (await load_analysis(resources, later)).next_attempt_at is not None
