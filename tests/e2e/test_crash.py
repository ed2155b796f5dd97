"""The dispatcher is killed (SIGKILL) in the middle of a batch and restarted: every analysis
still completes, and completes exactly once.

The dispatcher runs as its own OS process (``skyhook dispatcher``), the gateway and the webhook
receiver in this process. The service may see a request twice for an analysis whose dispatch
was interrupted (at-least-once delivery); skyhook must accept exactly one callback per
analysis.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from sqlalchemy import exists, func, select

from shared.db.models import AnalysisArtifact, ArtifactBlob, ObjAnalysis
from shared.db.session import create_engine
from shared.runtime.settings import Settings
from tests.e2e.conftest import MANAGE_SERVICES, RUN_ANALYSES, UPLOAD_DATA
from tests.e2e.harness import (
    DISPATCHER_QUEUE,
    Pipeline,
    ok,
    running_pipeline,
    wait_for_queue,
)
from tests.e2e.services import simple_success
from tests.support.fake_service import FakeService
from tests.support.polling import eventually
from tests.support.ports import free_port

BATCH = 60
CONCURRENCY = 4  # sends in flight at once: the most a kill can interrupt
SKYHOOK = Path(sys.executable).with_name("skyhook")


def dispatcher_environment(settings: Settings) -> dict[str, str]:
    """The dispatcher's settings as SKYHOOK_* variables, as a deployment would give them."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("SKYHOOK_")}
    values = {
        "DATABASE_URL": settings.database_url,
        "AMQP_URL": settings.amqp_url,
        "BUS_PREFIX": settings.bus_prefix,
        "PUBLIC_URL": settings.public_url,
        "SECRET_KEY": settings.secret_key.get_secret_value(),
        "ALLOW_LOOPBACK_URLS": "true",
        "ALLOW_PRIVATE_URLS": "true",
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
        "DISPATCH_CONCURRENCY": str(CONCURRENCY),
        "DISPATCH_PREFETCH": str(CONCURRENCY),
        "DISPATCH_TIMEOUT_SECONDS": "2",
        "DISPATCH_REAP_MARGIN_SECONDS": "0.5",
        "DISPATCH_POLL_INTERVAL_SECONDS": "0.1",
        "DISPATCH_REQUEUE_AFTER_SECONDS": "3",
        "DISPATCH_RETRY_DELAYS_SECONDS": "0.2,0.5,1,1,1",
        "SWEEP_INTERVAL_SECONDS": "0.25",
    }
    return {**inherited, **{f"SKYHOOK_{k}": v for k, v in values.items()}}


class DispatcherProcess:
    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.environment = dispatcher_environment(settings)
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                str(SKYHOOK),
                "dispatcher",
                env=self.environment,
                stdout=log,
                stderr=log,
                stdin=asyncio.subprocess.DEVNULL,
            )

    async def stop(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(sig)
            await self.process.wait()
        self.process = None

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


async def _statuses(pipeline: Pipeline, user: Any, obj_id: str) -> dict[int, str]:
    analyses = ok(await pipeline.http.get(f"/api/obj/{obj_id}/analysis", user))
    return {a["id"]: a["status"] for a in analyses}


async def _wait_all_final(
    pipeline: Pipeline, user: Any, obj_id: str, ids: list[int], within: float
) -> dict[int, str]:
    """The statuses once no analysis of ``ids`` is active, or after ``within`` seconds
    (the caller's assertions say what is still active)."""
    statuses: dict[int, str] = {}

    async def none_active() -> bool:
        statuses.clear()
        statuses.update(await _statuses(pipeline, user, obj_id))
        return not [i for i in ids if statuses.get(i) in {"queued", "dispatching", "pending"}]

    with contextlib.suppress(AssertionError):
        await eventually(none_active, "no active analysis", within, every=0.1)
    return statuses


async def test_a_dispatcher_killed_mid_batch_completes_every_analysis_exactly_once(
    pg_database_url: str, tmp_path: Path, bus_prefix: str
) -> None:
    service = FakeService(
        lambda call: simple_success("fitted"),
        callback_delay=lambda: random.uniform(0.05, 0.4),
        answer_delay=lambda: random.uniform(0.1, 0.25),
    )
    async with (
        running_pipeline(
            pg_database_url,
            tmp_path / "artifacts",
            bus_prefix,
            services=("gateway", "webhook-receiver"),
            max_analyses_per_obj_per_user=BATCH,
        ) as pipeline,
        service,
    ):
        dispatcher = DispatcherProcess(pipeline.settings, tmp_path / "dispatcher.log")
        try:
            outcome = await _run_batch(pipeline, service, dispatcher)
        finally:
            await dispatcher.stop(signal.SIGKILL)
    ids, statuses, received_at_kill, attempts = outcome
    log = dispatcher.log_tail()

    assert 0 < received_at_kill < BATCH, f"the kill came too late or too early\n{log}"
    assert Counter(statuses[i] for i in ids) == {"completed": BATCH}, log
    # Exactly one accepted callback per analysis, each analysis called back for.
    accepted = Counter(c.url for c in service.sent if c.status == 200)
    assert len(accepted) == BATCH
    assert set(accepted.values()) == {1}
    assert {c.status for c in service.sent} <= {200, 403}
    assert len({call.callback_url for call in service.received}) == BATCH
    duplicates = len(service.received) - BATCH
    assert 0 <= duplicates <= CONCURRENCY
    _check_attempts(ids, attempts)
    await _check_stored_inputs(pipeline.settings.database_url, ids)


async def _check_stored_inputs(database_url: str, ids: list[int]) -> None:
    """The inputs are stored by the claiming transaction: a claim the kill cut short stored
    nothing, so every analysis holds exactly one ``inputs.json``, the one its hash names (beside
    its results), and no blob is left that nothing refers to."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(ObjAnalysis.id, ObjAnalysis.input_hash, AnalysisArtifact.name)
                    .join(AnalysisArtifact, AnalysisArtifact.analysis_id == ObjAnalysis.id)
                    .where(
                        ObjAnalysis.id.in_(ids), AnalysisArtifact.sha256 == ObjAnalysis.input_hash
                    )
                )
            ).all()
            links = await connection.scalar(
                select(func.count()).where(
                    AnalysisArtifact.analysis_id.in_(ids), AnalysisArtifact.name == "inputs.json"
                )
            )
            orphans = await connection.scalar(
                select(func.count())
                .select_from(ArtifactBlob)
                .where(~exists().where(AnalysisArtifact.sha256 == ArtifactBlob.sha256))
            )
    finally:
        await engine.dispose()
    assert sorted((row.id, row.name) for row in rows) == [(i, "inputs.json") for i in sorted(ids)]
    assert (links, orphans) == (len(ids), 0)


def _check_attempts(ids: list[int], attempts: dict[int, list[dict[str, Any]]]) -> None:
    """Every analysis lists every attempt. One cut short by the kill whose service completed
    the analysis anyway stays ``sending`` (``interrupted`` once the reaper has seen it): at
    most one per send in flight at the kill."""
    unrecorded = [i for i in ids if not attempts[i]]
    assert unrecorded == []
    cut_short = [a for i in ids for a in attempts[i] if a["outcome"] in {"sending", "interrupted"}]
    assert len(cut_short) <= CONCURRENCY
    for analysis_id in ids:
        numbers = [a["attempt_number"] for a in attempts[analysis_id]]
        assert len(numbers) == len(set(numbers))
        outcomes = {a["outcome"] for a in attempts[analysis_id]}
        assert outcomes <= {"accepted", "retry", "sending", "interrupted"}, attempts[analysis_id]


async def _run_batch(
    pipeline: Pipeline, service: FakeService, dispatcher: DispatcherProcess
) -> tuple[list[int], dict[int, str], int, dict[int, list[dict[str, Any]]]]:
    group, other = f"e2e-{uuid.uuid4().hex[:8]}", f"e2e-other-{uuid.uuid4().hex[:8]}"
    astro = await pipeline.user([RUN_ANALYSES, UPLOAD_DATA, MANAGE_SERVICES], [group])
    outsider = await pipeline.user([UPLOAD_DATA], [group, other])
    source = await pipeline.source_with_photometry(astro, group, outsider, other)
    service_id = await pipeline.register(astro, group, service.url)

    await dispatcher.start()
    await wait_for_queue(f"{pipeline.prefix}.{DISPATCHER_QUEUE}")
    ids = [await pipeline.start(astro, source.obj_id, service_id) for _ in range(BATCH)]
    await service.wait_until(lambda: len(service.received) >= BATCH // 4, within=30)
    await dispatcher.stop(signal.SIGKILL)
    received_at_kill = len(service.received)

    await dispatcher.start()
    statuses = await _wait_all_final(pipeline, astro, source.obj_id, ids, within=45)
    await dispatcher.stop(signal.SIGTERM)
    # No dispatcher sends any more: once the service has answered every request and every
    # callback it posts has been answered (retries included), late duplicates have landed.
    await service.wait_idle()
    attempts: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for analysis_id in ids:
        attempts[analysis_id] = await pipeline.attempts(astro, analysis_id)
    return ids, statuses, received_at_kill, attempts
