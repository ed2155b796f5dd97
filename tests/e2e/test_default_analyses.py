"""Default analyses end to end, used only through HTTP: each trigger (classification, save to a
group, new photometry) on the split deployment (PostgreSQL + RabbitMQ, each service as its own
``run_service``) and on the embedded default (``skyhook run``: SQLite + the in-process bus), with a
real local analysis service; and a storm of 1,000 classifications on PostgreSQL + RabbitMQ."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from shared.runtime.settings import load_settings
from skyhook.composition import run_embedded
from tests.e2e.conftest import MANAGE_SERVICES, RUN_ANALYSES, UPLOAD_DATA
from tests.e2e.harness import (
    AMQP_URL,
    FAST,
    SECRET_KEY,
    Pipeline,
    User,
    ok,
    running_pipeline,
    wait_listening,
)
from tests.e2e.services import simple_success
from tests.support.fake_service import FakeService
from tests.support.metrics import metric_total
from tests.support.polling import eventually
from tests.support.ports import free_port

TRIGGER_SETTINGS: dict[str, Any] = {
    "default_analysis_quiet_seconds": 1.0,
    "default_analysis_poll_interval_seconds": 0.05,
}


@contextlib.asynccontextmanager
async def embedded_stack(tmp_path: Path) -> AsyncIterator[Pipeline]:
    """``skyhook run`` as the embedded default runs it: one process, SQLite, in-process bus."""
    port = free_port()
    settings = load_settings(
        None,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'skyhook.db'}",
        amqp_url="memory://",
        artifact_dir=tmp_path / "artifacts",
        secret_key=SECRET_KEY,
        host="127.0.0.1",
        port=port,
        **FAST,
        **TRIGGER_SETTINGS,
    )
    task = asyncio.create_task(run_embedded(settings))
    pipeline = Pipeline(settings, f"http://127.0.0.1:{port}")
    try:
        await wait_listening(port, task)
        yield pipeline
    finally:
        await pipeline.http.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.fixture(params=["split", "embedded"])
async def stack(
    request: pytest.FixtureRequest, tmp_path: Path, bus_prefix: str, pg_database_url: str
) -> AsyncIterator[Pipeline]:
    if request.param == "embedded":
        async with embedded_stack(tmp_path) as pipeline:
            yield pipeline
        return
    async with running_pipeline(
        pg_database_url, tmp_path / "artifacts", bus_prefix, **TRIGGER_SETTINGS
    ) as pipeline:
        yield pipeline


class Scene:
    """An astronomer who manages services and the source they run on."""

    def __init__(self, pipeline: Pipeline, astro: User, group: str, group_id: int) -> None:
        self.pipeline, self.astro, self.group, self.group_id = pipeline, astro, group, group_id

    async def source(self, group_ids: list[int] | None = None, owner: User | None = None) -> str:
        obj_id = f"ZTF24{uuid.uuid4().hex[:8]}"
        body = {"id": obj_id, "ra": 150.1, "dec": 2.2, "group_ids": group_ids or [self.group_id]}
        ok(await self.pipeline.http.post("/api/sources", owner or self.astro, body))
        return obj_id

    async def default(self, service_id: int, source_filter: dict[str, Any], **body: Any) -> int:
        path = f"/api/analysis_service/{service_id}/default_analysis"
        reply = await self.pipeline.http.post(
            path, self.astro, {"source_filter": source_filter, **body}
        )
        return int(ok(reply)["id"])

    async def classify(self, obj_id: str, name: str, probability: float) -> None:
        body = {"obj_id": obj_id, "classification": name, "probability": probability}
        ok(await self.pipeline.http.post("/api/classification", self.astro, body))

    async def analyses(self, obj_id: str, default_id: int) -> list[dict[str, Any]]:
        reply = await self.pipeline.http.get(
            f"/api/sources/{obj_id}", self.astro, params={"includeAnalyses": "true"}
        )
        return [a for a in ok(reply)["analyses"] if a["default_analysis_id"] == default_id]

    async def completed(self, obj_id: str, default_id: int, count: int) -> list[dict[str, Any]]:
        async def done() -> bool:
            found = await self.analyses(obj_id, default_id)
            return len(found) >= count and all(a["status"] == "completed" for a in found)

        await eventually(done, f"{count} completed analyses of default {default_id}")
        return await self.analyses(obj_id, default_id)

    async def stats(self, service_id: int, default_id: int) -> dict[str, Any]:
        path = f"/api/analysis_service/{service_id}/default_analysis/{default_id}"
        return dict(ok(await self.pipeline.http.get(path, self.astro))["stats"])


async def _scene(pipeline: Pipeline) -> Scene:
    group = f"defaults-{uuid.uuid4().hex[:8]}"
    astro = await pipeline.user([RUN_ANALYSES, UPLOAD_DATA, MANAGE_SERVICES], [group])
    (group_id,) = await pipeline.group_ids(astro, [group])
    return Scene(pipeline, astro, group, group_id)


async def test_a_classification_over_the_threshold_starts_the_default_and_it_completes(
    stack: Pipeline,
) -> None:
    scene = await _scene(stack)
    async with FakeService(lambda call: simple_success("fitted")) as service:
        service_id = await stack.register(scene.astro, scene.group, service.url)
        witness_service = await stack.register(scene.astro, scene.group, service.url)
        default_id = await scene.default(
            service_id, {"classifications": [{"name": "Ia", "probability": 0.8}]}
        )
        # Runs on every Ia: once it has run twice, both classifications were handled.
        witness = await scene.default(witness_service, {"classifications": [{"name": "Ia"}]})
        obj_id = await scene.source()
        await scene.classify(obj_id, "Ia", 0.5)
        await scene.classify(obj_id, "Ia", 0.93)
        await scene.completed(obj_id, witness, 2)
        (analysis,) = await scene.completed(obj_id, default_id, 1)
    assert analysis["trigger"] == "classification Ia (0.93)"
    assert analysis["status_message"] == "fitted"
    assert (await scene.stats(service_id, default_id))["daily_count"] == 1
    assert {c.payload["resource_id"] for c in service.received} == {obj_id}


async def test_saving_a_source_to_a_group_starts_the_default(stack: Pipeline) -> None:
    scene = await _scene(stack)
    second = f"defaults-2-{uuid.uuid4().hex[:8]}"
    other = await stack.user([UPLOAD_DATA], [scene.group, second])
    (second_id,) = await stack.group_ids(other, [second])
    async with FakeService(lambda call: simple_success()) as service:
        service_id = await stack.register(scene.astro, scene.group, service.url)
        default_id = await scene.default(service_id, {"group_id": second_id})
        obj_id = await scene.source()
        save = {"objId": obj_id, "inviteGroupIds": [second_id]}
        ok(await stack.http.post("/api/source_groups", other, save))
        (analysis,) = await scene.completed(obj_id, default_id, 1)
    assert analysis["trigger"] == f"save to group {second_id}"


async def test_new_photometry_starts_the_default_once_after_a_quiet_period(
    stack: Pipeline,
) -> None:
    scene = await _scene(stack)
    instrument = {"name": f"ZTF-{uuid.uuid4().hex[:6]}", "filters": ["ztfg", "ztfr"]}
    instrument_id = ok(await stack.http.post("/api/instrument", scene.astro, instrument))["id"]
    async with FakeService(lambda call: simple_success()) as service:
        service_id = await stack.register(scene.astro, scene.group, service.url)
        default_id = await scene.default(service_id, {"on_new_photometry": True})
        obj_id = await scene.source()
        for night in range(3):  # three batches within the quiet period: one analysis
            points = {
                "obj_id": obj_id,
                "instrument_id": instrument_id,
                "mjd": [59001.5 + night],
                "filter": ["ztfg"],
                "flux": [120.0],
                "fluxerr": [5.0],
                "zp": 25.0,
                "magsys": "ab",
            }
            ok(await stack.http.post("/api/photometry", scene.astro, points))
        (analysis,) = await scene.completed(obj_id, default_id, 1)
    assert analysis["trigger"] == "new photometry"
    (call,) = service.received
    assert call.payload["inputs"]["photometry"].count("\n") >= 3  # header + every point


async def test_an_author_who_cannot_read_the_source_starts_nothing(stack: Pipeline) -> None:
    scene = await _scene(stack)
    elsewhere = f"defaults-x-{uuid.uuid4().hex[:8]}"
    outsider = await stack.user([UPLOAD_DATA], [elsewhere])
    (elsewhere_id,) = await stack.group_ids(outsider, [elsewhere])
    before = await _trigger_count(stack, "skipped")
    async with FakeService(lambda call: simple_success()) as service:
        service_id = await stack.register(scene.astro, scene.group, service.url)
        default_id = await scene.default(service_id, {"classifications": [{"name": "Ia"}]})
        obj_id = await scene.source([elsewhere_id], owner=outsider)
        body = {"obj_id": obj_id, "classification": "Ia", "probability": 1.0}
        ok(await stack.http.post("/api/classification", outsider, body))

        async def skipped() -> bool:
            return await _trigger_count(stack, "skipped") > before

        await eventually(skipped, "the trigger counted as skipped")
    assert service.received == []
    assert (await scene.stats(service_id, default_id))["daily_count"] == 0


async def _trigger_count(pipeline: Pipeline, outcome: str, **reason: str) -> float:
    """The counter as /metrics shows it, summed over its reasons unless ``reason`` names one
    (every service of these stacks runs in this process)."""
    reply = await pipeline.http.get("/metrics", None)
    text = reply.body.decode() if isinstance(reply.body, bytes) else str(reply.body)
    name = "skyhook_default_analysis_triggers_total"
    return metric_total(text, name, outcome=outcome, **reason)


async def _queue_messages(name: str) -> int:
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        return int(queue.declaration_result.message_count or 0)
    finally:
        await connection.close()


async def test_a_storm_of_classifications_starts_exactly_the_daily_limit(
    pg_database_url: str, tmp_path: Path, bus_prefix: str
) -> None:
    async with running_pipeline(
        pg_database_url, tmp_path / "artifacts", bus_prefix, **TRIGGER_SETTINGS
    ) as stack:
        scene = await _scene(stack)
        handled_before = await _trigger_count(stack, "limited", reason="daily_limit")
        async with FakeService(lambda call: simple_success()) as service:
            service_id = await stack.register(scene.astro, scene.group, service.url)
            default_id = await scene.default(
                service_id, {"classifications": [{"name": "Ia"}]}, daily_limit=7
            )
            objs = [await scene.source() for _ in range(10)]
            slots = asyncio.Semaphore(16)

            async def classify(i: int) -> None:
                async with slots:
                    await scene.classify(objs[i % len(objs)], "Ia", 0.99)

            await asyncio.gather(*(classify(i) for i in range(1000)))

            async def all_handled() -> bool:
                limited = await _trigger_count(stack, "limited", reason="daily_limit")
                return limited - handled_before >= 993

            await eventually(all_handled, "993 triggers limited", within=180)
            await service.wait_until(lambda: len(service.received) == 7)
        assert (await scene.stats(service_id, default_id))["daily_count"] == 7
        started = [a for obj_id in objs for a in await scene.analyses(obj_id, default_id)]
        assert len(started) == 7
        assert await _queue_messages(f"{bus_prefix}.default_analyses") == 0
