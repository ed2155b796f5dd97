"""Operations: every service in its own OS process over PostgreSQL and RabbitMQ, as compose
runs them (see conftest.py). One analysis runs end to end and is observable (products,
attempts, metrics, JSON logs without secrets); then a batch survives a dispatcher killed with
SIGKILL and restarted, and every broker connection cut mid-run: each analysis completes, each
callback token is accepted exactly once, and nothing is left in flight, in the outbox, on the
queues or among the dead letters.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import uuid
from collections import Counter
from collections.abc import Awaitable
from typing import Any

import pytest

from tests.processes.conftest import (
    ACTIVE,
    DISPATCH_CONCURRENCY,
    DISPATCHERS,
    FINAL,
    Deployment,
    analysis_service,
    source_with_photometry,
    tiny_png,
    user_api,
)
from tests.support.api import ApiClient
from tests.support.fake_service import FakeService
from tests.support.metrics import metric_total
from tests.support.polling import eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")

PNG = tiny_png()


def fit_result(payload: dict[str, Any]) -> dict[str, Any]:
    rows = list(csv.DictReader(io.StringIO(payload["inputs"]["photometry"])))
    return {
        "status": "success",
        "message": "fit converged",
        "analysis": {
            "plots": [{"format": "png", "data": base64.b64encode(PNG).decode()}],
            "results": {"format": "json", "data": {"n_points": len(rows), "t0": 59015.0}},
        },
    }


async def group_id(api: ApiClient, name: str) -> int:
    groups = (await api.ok("GET", "/api/groups"))["user_groups"]
    return next(int(g["id"]) for g in groups if g["name"] == name)


async def register(api: ApiClient, group: int, url: str) -> int:
    body = {
        "name": f"fitter-{uuid.uuid4().hex[:8]}",
        "display_name": "Local fitter",
        "url": url,
        "authentication_type": "none",
        "analysis_type": "lightcurve_fitting",
        "input_data_types": ["photometry"],
        "timeout": 300.0,
        "group_ids": [group],
    }
    return int((await api.ok("POST", "/api/analysis_service", json=body))["id"])


async def setup_source(deployment: Deployment, service: FakeService) -> tuple[ApiClient, str, int]:
    name = f"ops-{uuid.uuid4().hex[:8]}"
    api = await user_api(deployment, name)
    group = await group_id(api, name)
    obj_id = await source_with_photometry(api, group)
    return api, obj_id, await register(api, group, service.url)


async def start_many(api: ApiClient, obj_id: str, service_id: int, count: int) -> list[int]:
    path = f"/api/obj/{obj_id}/analysis/{service_id}"
    limit = asyncio.Semaphore(8)

    async def start_one() -> int:
        async with limit:
            return int((await api.ok("POST", path, json={}))["id"])

    return list(await asyncio.gather(*(start_one() for _ in range(count))))


async def wait_final(api: ApiClient, obj_id: str, ids: list[int], within: float) -> dict[int, str]:
    statuses: dict[int, str] = {}

    async def all_final() -> bool:
        analyses = await api.ok("GET", f"/api/obj/{obj_id}/analysis")
        statuses.clear()
        statuses.update({a["id"]: a["status"] for a in analyses if a["id"] in ids})
        return all(statuses.get(i) in FINAL for i in ids)

    try:
        await eventually(all_final, "every analysis final", within, every=0.2)
    except AssertionError:
        raise AssertionError(f"not final after {within} s: {Counter(statuses.values())}") from None
    return statuses


async def _is_zero(count: Awaitable[int]) -> bool:
    return await count == 0


async def metrics_of(api: ApiClient, deployment: Deployment, name: str) -> str:
    assert api.http is not None
    async with api.http.get(f"{deployment.url(name)}/metrics") as response:
        assert response.status == 200
        return await response.text()


def assert_no_secret_in_logs(deployment: Deployment, secrets: set[str]) -> None:
    assert secrets, "no secrets to look for"
    for path in deployment.log_paths():
        text = path.read_text(errors="replace")
        leaked = [s[:6] + "…" for s in secrets if s in text]
        assert not leaked, f"{path.name} contains secrets: {leaked}"


async def test_one_analysis_runs_end_to_end_and_is_observable(deployment: Deployment) -> None:
    async with analysis_service(fit_result) as service:
        api, obj_id, service_id = await setup_source(deployment, service)
        try:
            path = f"/api/obj/{obj_id}/analysis/{service_id}"
            analysis_id = int((await api.ok("POST", path, json={}))["id"])
            statuses = await wait_final(api, obj_id, [analysis_id], within=30)
            assert statuses == {analysis_id: "completed"}
            await _check_products_and_attempts(api, analysis_id)
            await _check_metrics(api, deployment)
        finally:
            await api.close()
    (token,) = service.tokens()
    assert service.accepted == {token: 1}
    assert service.received[0].payload["resource_id"] == obj_id
    dispatcher_lines = [e for d in DISPATCHERS for e in deployment.log_entries(d)]
    assert any(e.get("analysis_id") == analysis_id for e in dispatcher_lines)
    assert_no_secret_in_logs(deployment, {token, *deployment.api_tokens, deployment.secret_key})


async def _check_products_and_attempts(api: ApiClient, analysis_id: int) -> None:
    analysis = await api.ok("GET", f"/api/obj/analysis/{analysis_id}")
    assert analysis["status_message"] == "fit converged"
    plot = await api.call("GET", f"/api/obj/analysis/{analysis_id}/plots")
    assert plot.status == 200 and plot.body == PNG
    results = await api.ok("GET", f"/api/obj/analysis/{analysis_id}/results")
    assert results == {"n_points": 4, "t0": 59015.0}
    attempts = await api.ok("GET", f"/api/obj/analysis/{analysis_id}/attempts")
    assert [(a["attempt_number"], a["outcome"], a["http_status"]) for a in attempts] == [
        (1, "accepted", 200)
    ]


async def _check_metrics(api: ApiClient, deployment: Deployment) -> None:
    dispatched = [await metrics_of(api, deployment, d) for d in DISPATCHERS]
    accepted = "skyhook_dispatch_attempts_total"
    assert sum(metric_total(text, accepted, outcome="accepted") for text in dispatched) >= 1
    webhook = await metrics_of(api, deployment, "webhook-receiver")
    assert metric_total(webhook, "skyhook_webhook_body_bytes_count") >= 1


# --- chaos ------------------------------------------------------------------------------------

WAVE_BEFORE_KILL, WAVE_BEFORE_CUT, WAVE_DURING_CUT = 40, 20, 10


def quick_result(payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "status": "success",
        "message": "done",
        "analysis": {"results": {"format": "json", "data": {"ok": True}}},
    }


async def test_a_killed_dispatcher_and_a_broker_cut_lose_nothing_and_repeat_nothing(
    deployment: Deployment,
) -> None:
    async with analysis_service(quick_result) as service:
        api, obj_id, service_id = await setup_source(deployment, service)
        try:
            ids, killed = await _kill_a_dispatcher_mid_batch(
                deployment, api, obj_id, service_id, service
            )
            ids += await _cut_the_broker_mid_batch(deployment, api, obj_id, service_id, service)
            statuses = await wait_final(api, obj_id, ids, within=60)
            # Every analysis is final, so nothing sends any more: once the service has answered
            # every request and every callback it posts was answered, late duplicates landed.
            await service.wait_idle()
            interrupted = await _interrupted_attempts(api, ids)
        finally:
            await api.close()
    assert Counter(statuses.values()) == {"completed": len(ids)}
    # Exactly one accepted callback per analysis; any other callback was a refused duplicate.
    assert len(service.accepted) == len(ids) and set(service.accepted.values()) == {1}
    assert service.tokens() == set(service.accepted)
    assert all(status == 403 for status, _ in service.refusals), service.refusals
    # The sends the kill cut short were given up by the reaper and sent again.
    assert len(interrupted) == DISPATCH_CONCURRENCY
    assert len(killed) >= DISPATCH_CONCURRENCY
    assert set(killed) <= set(service.accepted)
    # An operator finds each interrupted analysis in the dispatchers' logs by its id.
    reaped = {
        e.get("analysis_id")
        for d in DISPATCHERS
        for e in deployment.log_entries(d)
        if "was interrupted" in e["message"]
    }
    assert reaped == set(interrupted)
    await _check_nothing_left(deployment)
    secrets = {*service.tokens(), *deployment.api_tokens, deployment.secret_key}
    assert_no_secret_in_logs(deployment, secrets)


async def _kill_a_dispatcher_mid_batch(
    deployment: Deployment, api: ApiClient, obj_id: str, service_id: int, service: FakeService
) -> tuple[list[int], list[str]]:
    """SIGKILL a dispatcher while each dispatcher has its sends in flight (held by the
    service), then restart it. Returns the analysis ids and the tokens the kill cut short."""
    service.hold()
    ids = await start_many(api, obj_id, service_id, WAVE_BEFORE_KILL)
    both_busy = 2 * DISPATCH_CONCURRENCY
    await service.wait_until(lambda: service.held >= both_busy, "both dispatchers sending", 30)
    deployment.kill("dispatcher-1")
    # The killed dispatcher's sends (as many as it may have in flight) have lost their caller.
    await eventually(
        lambda: service.held_without_caller() >= DISPATCH_CONCURRENCY,
        "the killed dispatcher's held requests to lose their caller",
        within=30,
    )
    abandoned_before = len(service.abandoned)
    service.release()
    await service.wait_until(lambda: service.held == 0, "held requests answered", 10)
    killed = service.abandoned[abandoned_before:]
    await deployment.restart("dispatcher-1")
    return ids, killed


async def _cut_the_broker_mid_batch(
    deployment: Deployment, api: ApiClient, obj_id: str, service_id: int, service: FakeService
) -> list[int]:
    """With sends in flight and messages prefetched, the broker drops every connection of the
    deployment; analyses started right after wait in the outbox until the gateway is back."""
    service.hold()
    ids = await start_many(api, obj_id, service_id, WAVE_BEFORE_CUT)
    both_busy = 2 * DISPATCH_CONCURRENCY
    await service.wait_until(lambda: service.held >= both_busy, "both dispatchers sending", 30)
    cut = await deployment.cut_broker_connections()
    service.release()
    assert cut == deployment.pids(), "every service process had its connection cut"
    ids += await start_many(api, obj_id, service_id, WAVE_DURING_CUT)
    await deployment.wait_ready(within=30)  # every process reconnected
    return ids


async def _interrupted_attempts(api: ApiClient, ids: list[int]) -> list[int]:
    interrupted = []
    for analysis_id in ids:
        attempts = await api.ok("GET", f"/api/obj/analysis/{analysis_id}/attempts")
        assert [a["attempt_number"] for a in attempts] == list(range(1, len(attempts) + 1))
        # A send that timed out (retry) may still have reached the service, which called back.
        assert {a["outcome"] for a in attempts} <= {"accepted", "retry"}, attempts
        if any("interrupted" in (a["error"] or "") for a in attempts):
            interrupted.append(analysis_id)
    return interrupted


async def _check_nothing_left(deployment: Deployment) -> None:
    await deployment.wait_ready(within=10)  # every process still runs, connected
    active = ", ".join(f"'{s}'" for s in ACTIVE)
    assert (
        await deployment.count(f"SELECT count(*) FROM obj_analyses WHERE status IN ({active})") == 0
    )

    async def outbox_empty() -> bool:
        return await deployment.count("SELECT count(*) FROM outbox") == 0

    await eventually(outbox_empty, "no outbox rows", within=20, every=0.2)
    for queue in ("dispatcher", "summaries"):

        def queue_empty(q: str = queue) -> Awaitable[bool]:
            return _is_zero(deployment.queue_depth(q))

        await eventually(
            queue_empty,
            f"no messages in {queue}",
            within=20,
            every=0.2,
        )
    listing = await deployment.cli("dead-letters", "list")
    assert listing.strip() == "", f"dead letters:\n{listing}"
    assert await deployment.queue_depth("dead-letter") == 0
