"""The whole pipeline end to end, used only through HTTP as a user and a service would: the
gateway, the webhook receiver and the dispatcher (each with its outbox relay) over real
PostgreSQL and RabbitMQ, and real analysis services on local ports."""

from __future__ import annotations

import asyncio
import base64
import csv
import hashlib
import io
import math
from collections import Counter
from pathlib import Path
from typing import Any

import joblib
import pytest

from dispatcher import Dispatcher
from dispatcher.inputs import PHOTOMETRY_COLUMNS
from shared.security.signing import SignatureError, verify
from tests.e2e.conftest import Scene
from tests.e2e.harness import Pipeline, ok
from tests.e2e.services import (
    Products,
    b64,
    failure_body,
    malicious_joblib,
    simple_success,
    success_body,
)
from tests.support.fake_service import (
    Call,
    DigestGate,
    FakeService,
    Gate,
    api_key_gate,
    basic_gate,
    header_token_gate,
)
from tests.support.polling import eventually
from tests.support.ports import free_port

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PAYLOAD_KEYS = {
    "callback_url",
    "callback_method",
    "invalid_after",
    "analysis_resource_type",
    "resource_id",
    "analysis_parameters",
    "inputs",
}


def _point_key(point: dict[str, Any]) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """(text columns, number columns) of a photometry point, from the CSV or the API."""
    numbers = tuple(float(point[c]) for c in ("mjd", "flux", "fluxerr"))
    return (point["filter"], point["instrument_name"]), numbers


def _same_points(got: list[Any], want: list[Any]) -> bool:
    def order(key: Any) -> Any:
        return key[1][0], key[0]

    if len(got) != len(want):
        return False
    for (got_text, got_numbers), (want_text, want_numbers) in zip(
        sorted(got, key=order), sorted(want, key=order), strict=True
    ):
        if got_text != want_text or not all(
            math.isclose(g, w, rel_tol=1e-12)
            for g, w in zip(got_numbers, want_numbers, strict=True)
        ):
            return False
    return True


async def _check_inputs(
    pipeline: Pipeline, scene: Scene, call: Call, analysis: dict[str, Any]
) -> None:
    """The service got SkyPortal's payload holding exactly the photometry astro can see, and
    the analysis records the hash of exactly those bytes."""
    payload = call.payload
    assert set(payload) == PAYLOAD_KEYS
    assert payload["resource_id"] == scene.source.obj_id
    assert payload["callback_method"] == "POST"
    assert payload["inputs"]["analysis_parameters"] == payload["analysis_parameters"]
    rows = list(csv.DictReader(io.StringIO(payload["inputs"]["photometry"])))
    header = payload["inputs"]["photometry"].splitlines()[0].split(",")
    assert tuple(header) == PHOTOMETRY_COLUMNS
    path = f"/api/sources/{scene.source.obj_id}/photometry"
    seen = ok(await pipeline.http.get(path, scene.astro))["photometry"]
    assert len(seen) == scene.source.visible_points
    assert _same_points([_point_key(r) for r in rows], [_point_key(p) for p in seen])
    assert not any(float(r["flux"]) > 900 for r in rows)  # the outsider's points stay out
    # The stored copy is what was sent, but the callback token (a secret).
    token = payload["callback_url"].rsplit("/", 1)[1]
    stored = call.body.replace(token.encode(), b"[redacted]")
    assert analysis["input_hash"] == hashlib.sha256(stored).hexdigest()
    assert analysis["artifacts"]["inputs"]["sha256"] == analysis["input_hash"]
    assert "path" not in analysis["artifacts"]["inputs"]


async def test_a_successful_fit_completes_and_serves_its_products(
    pipeline: Pipeline, scene: Scene, products: Products
) -> None:
    def answer(call: Call) -> dict[str, Any]:
        return success_body(products, call.payload["analysis_parameters"]["results_format"])

    async with FakeService(answer) as service:
        service_id = await pipeline.register(
            scene.astro,
            scene.group,
            service.url,
            optional_analysis_parameters={"results_format": ["joblib", "json"]},
        )
        started = {
            fmt: await pipeline.start(
                scene.astro,
                scene.source.obj_id,
                service_id,
                analysis_parameters={"results_format": fmt},
            )
            for fmt in ("joblib", "json")
        }
        finals = {fmt: await pipeline.wait_final(scene.astro, i) for fmt, i in started.items()}
    calls = {c.payload["analysis_parameters"]["results_format"]: c for c in service.received}
    assert len(service.received) == 2
    for fmt, analysis_id in started.items():
        analysis = finals[fmt]
        assert analysis["status"] == "completed", analysis["status_message"]
        assert analysis["status_message"] == "fit converged"
        assert analysis["num_plots"] == 1
        assert analysis["model_name"] == "gaussian"
        assert analysis["n_detections"] == 4
        await _check_inputs(pipeline, scene, calls[fmt], analysis)
        await _check_products(pipeline, scene, analysis_id, products, fmt)


async def _check_products(
    pipeline: Pipeline, scene: Scene, analysis_id: int, products: Products, fmt: str
) -> None:
    base = f"/api/obj/analysis/{analysis_id}"
    plot = await pipeline.http.get(f"{base}/plots/0", scene.astro)
    assert plot.status == 200
    assert plot.body == products.png
    results = await pipeline.http.get(f"{base}/results", scene.astro)
    assert results.status == 200, results.body
    assert results.data == products.results
    corner = await pipeline.http.get(f"{base}/corner", scene.astro)
    assert corner.status == 200, corner.body
    assert corner.body.startswith(PNG_MAGIC)
    stored = (await pipeline.analysis(scene.astro, analysis_id, includeAnalysisData="true"))["data"]
    assert stored["plots"] == [{"format": "png", "data": b64(products.png)}]
    assert stored["inference_data"] == {"format": "netcdf4", "data": b64(products.netcdf)}
    expected_results = (
        {"format": "joblib", "data": b64(products.joblib)}
        if fmt == "joblib"
        else {"format": "json", "data": products.results}
    )
    assert stored["results"] == expected_results
    assert (stored["model_name"], stored["n_detections"]) == ("gaussian", 4)


async def test_a_service_reporting_failure_ends_in_failure_with_its_message(
    pipeline: Pipeline, scene: Scene
) -> None:
    message = "fit did not converge: too few detections"
    async with FakeService(lambda call: failure_body(message)) as service:
        service_id = await pipeline.register(scene.astro, scene.group, service.url)
        analysis_id = await pipeline.start(scene.astro, scene.source.obj_id, service_id)
        analysis = await pipeline.wait_final(scene.astro, analysis_id)
    assert analysis["status"] == "failure"
    assert analysis["status_message"] == message
    results = await pipeline.http.get(f"/api/obj/analysis/{analysis_id}/results", scene.astro)
    assert results.status == 404
    assert [c.status for c in service.sent] == [200]


async def test_a_service_that_is_down_at_first_is_retried_until_it_accepts(
    pipeline: Pipeline, scene: Scene
) -> None:
    service = FakeService(lambda call: simple_success("late but done"), port=free_port())
    service_id = await pipeline.register(scene.astro, scene.group, service.url)
    analysis_id = await pipeline.start(scene.astro, scene.source.obj_id, service_id)

    async def two_failed() -> bool:
        return len(await pipeline.attempts(scene.astro, analysis_id)) >= 2

    await eventually(two_failed, "two attempts failed against the closed port")
    async with service:
        analysis = await pipeline.wait_final(scene.astro, analysis_id)
    attempts = await pipeline.attempts(scene.astro, analysis_id)
    assert analysis["status"] == "completed", analysis["status_message"]
    assert analysis["status_message"] == "late but done"
    assert len(attempts) >= 3
    assert [a["attempt_number"] for a in attempts] == list(range(1, len(attempts) + 1))
    for failed in attempts[:-1]:
        assert failed["outcome"] == "retry"
        assert failed["http_status"] is None
        assert f"Request to {service.url} failed" in failed["error"]
    assert attempts[-1]["outcome"] == "accepted"
    assert attempts[-1]["http_status"] == 200
    assert analysis["dispatch_attempts"] == len(attempts)
    assert len(service.received) == 1


async def test_a_service_that_never_calls_back_is_timed_out_by_the_sweeper(
    pipeline: Pipeline, scene: Scene
) -> None:
    async with FakeService(lambda call: None) as service:
        service_id = await pipeline.register(scene.astro, scene.group, service.url, timeout=2.0)
        analysis_id = await pipeline.start(scene.astro, scene.source.obj_id, service_id)
        analysis = await pipeline.wait_final(scene.astro, analysis_id, within=15)
        assert analysis["status"] == "timed_out"
        assert analysis["status_message"].startswith("Analysis timed out before webhook call at ")
        attempts = await pipeline.attempts(scene.astro, analysis_id)
        assert [a["outcome"] for a in attempts] == ["accepted"]
        # The service finally answers: too late.
        late = await service.post_callback(service.received[0].callback_url, simple_success())
    assert (late.status, late.reply["message"]) == (400, "Token has expired")
    assert (await pipeline.analysis(scene.astro, analysis_id))["status"] == "timed_out"


async def test_a_second_callback_is_refused_and_changes_nothing(
    pipeline: Pipeline, scene: Scene
) -> None:
    first = simple_success("first result")
    second = {
        "status": "success",
        "message": "second result",
        "analysis": {"results": {"format": "json", "data": {"answer": 0}}},
    }
    async with FakeService(lambda call: [first, second]) as service:
        service_id = await pipeline.register(scene.astro, scene.group, service.url)
        analysis_id = await pipeline.start(scene.astro, scene.source.obj_id, service_id)
        await pipeline.wait_final(scene.astro, analysis_id)
        await service.wait_until(lambda: len(service.sent) == 2)
    assert [c.status for c in service.sent] == [200, 403]
    assert service.sent[1].reply["message"] == (
        "Analysis already updated with status='completed' and message=first result"
    )
    analysis = await pipeline.analysis(scene.astro, analysis_id)
    assert (analysis["status"], analysis["status_message"]) == ("completed", "first result")
    results = await pipeline.http.get(f"/api/obj/analysis/{analysis_id}/results", scene.astro)
    assert results.data == {"answer": 42}


# The dispatcher's periodic jobs: what could still move an analysis nobody touches any more.
PERIODIC_JOBS = ("announce_due", "reap_stuck", "sweep_expired")


@pytest.fixture
def periodic_passes(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How many passes of each periodic job the dispatcher finished (it must start after this
    fixture: tests name it in ``usefixtures``, which come before the pipeline)."""
    passes: Counter[str] = Counter()
    for name in PERIODIC_JOBS:
        original = getattr(Dispatcher, name)

        async def counted(
            self: Dispatcher, *args: Any, _job: str = name, _run: Any = original, **kwargs: Any
        ) -> Any:
            try:
                return await _run(self, *args, **kwargs)
            finally:
                passes[_job] += 1

        monkeypatch.setattr(Dispatcher, name, counted)
    return passes


@pytest.mark.usefixtures("periodic_passes")
async def test_a_callback_before_the_services_answer_is_never_overwritten(
    pipeline: Pipeline, scene: Scene, periodic_passes: Counter[str]
) -> None:
    service = FakeService(lambda call: simple_success("fast"), callback_before_answer=True)
    async with service:
        service_id = await pipeline.register(scene.astro, scene.group, service.url)
        analysis_id = await pipeline.start(scene.astro, scene.source.obj_id, service_id)
        await pipeline.wait_final(scene.astro, analysis_id)

        async def answer_recorded() -> bool:
            attempts = await pipeline.attempts(scene.astro, analysis_id)
            return bool(attempts) and attempts[-1]["outcome"] != "sending"

        await eventually(answer_recorded, "the dispatcher recorded the service's answer")
        await service.wait_idle()  # the service has nothing more to post
    attempts = await pipeline.attempts(scene.astro, analysis_id)
    assert [c.status for c in service.sent] == [200]
    assert [(a["outcome"], a["http_status"]) for a in attempts] == [("accepted", 200)]
    # Nothing may move it afterwards either: each of the dispatcher's periodic jobs runs a
    # whole pass that starts after the answer was recorded.
    seen = Counter(periodic_passes)

    def every_job_ran_again() -> bool:
        return all(periodic_passes[job] >= seen[job] + 2 for job in PERIODIC_JOBS)

    await eventually(every_job_ran_again, "a full pass of each periodic dispatcher job")
    assert [c.status for c in service.sent] == [200]
    analysis = await pipeline.analysis(scene.astro, analysis_id)
    assert (analysis["status"], analysis["status_message"]) == ("completed", "fast")


async def test_a_malicious_pickle_is_never_unpickled(
    pipeline: Pipeline, scene: Scene, tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled-by-skyhook"
    payload = malicious_joblib(marker)
    # The payload is live: loading it the naive way does create a marker file.
    control = tmp_path / "unpickled-by-joblib-load"
    await asyncio.to_thread(joblib.load, io.BytesIO(malicious_joblib(control)))
    assert control.exists()
    body = {
        "status": "success",
        "message": "results attached",
        "analysis": {"results": {"format": "joblib", "data": b64(payload)}},
    }
    async with FakeService(lambda call: body) as service:
        service_id = await pipeline.register(scene.astro, scene.group, service.url)
        analysis_id = await pipeline.start(scene.astro, scene.source.obj_id, service_id)
        await service.wait_until(lambda: len(service.sent) == 1)
    # Refused at ingest, before anything is stored: nothing is left to decode later.
    (callback,) = service.sent
    assert callback.status == 400
    assert callback.reply["message"].startswith(
        "Invalid analysis.results.data: refusing the joblib file: the pickle references"
    )
    analysis = await pipeline.analysis(scene.astro, analysis_id)
    assert analysis["status"] == "pending"
    results = await pipeline.http.get(f"/api/obj/analysis/{analysis_id}/results", scene.astro)
    assert results.status == 404
    assert not marker.exists()


AUTH_CASES: dict[str, tuple[Any, dict[str, Any], dict[str, Any], str]] = {
    # each: (gate factory, right _authinfo, wrong _authinfo, the service's refusal)
    "header_token": (
        lambda: header_token_gate("X-Fitter-Token", "t0ken-abc"),
        {"header_token": {"X-Fitter-Token": "t0ken-abc"}},
        {"header_token": {"X-Fitter-Token": "guess"}},
        "missing or wrong X-Fitter-Token header",
    ),
    "api_key": (
        lambda: api_key_gate("fitter_key", "k3y-xyz"),
        {"api_key_name": "fitter_key", "api_key": "k3y-xyz"},
        {"api_key_name": "fitter_key", "api_key": "guess"},
        "missing or wrong fitter_key in the request body",
    ),
    "HTTPBasicAuth": (
        lambda: basic_gate("astro", "pa55-basic"),
        {"username": "astro", "password": "pa55-basic"},
        {"username": "astro", "password": "guess"},
        "wrong basic credentials",
    ),
    "HTTPDigestAuth": (
        lambda: DigestGate("astro", "pa55-digest"),
        {"username": "astro", "password": "pa55-digest"},
        {"username": "astro", "password": "guess"},
        "wrong digest credentials",
    ),
}


@pytest.mark.parametrize("auth_type", list(AUTH_CASES))
async def test_authentication_right_credentials_complete_wrong_ones_fail(
    pipeline: Pipeline, scene: Scene, auth_type: str
) -> None:
    make_gate, right, wrong, refusal = AUTH_CASES[auth_type]
    gate: Gate = make_gate()
    async with FakeService(lambda call: simple_success("authenticated"), gate=gate) as service:
        ids = {}
        for label, authinfo in (("right", right), ("wrong", wrong)):
            service_id = await pipeline.register(
                scene.astro,
                scene.group,
                service.url,
                authentication_type=auth_type,
                _authinfo=authinfo,
            )
            ids[label] = await pipeline.start(scene.astro, scene.source.obj_id, service_id)
        good = await pipeline.wait_final(scene.astro, ids["right"])
        bad = await pipeline.wait_final(scene.astro, ids["wrong"])
    assert (good["status"], good["status_message"]) == ("completed", "authenticated")
    assert (bad["status"], bad["status_message"]) == ("failure", refusal)
    attempts = await pipeline.attempts(scene.astro, ids["wrong"])
    assert [(a["outcome"], a["http_status"]) for a in attempts] == [("failed", 401)]
    assert len(service.received) == 1  # only the right credentials got through


async def test_a_signed_service_receives_standard_webhooks_headers_that_verify(
    pipeline: Pipeline, scene: Scene
) -> None:
    secret = "whsec_" + base64.b64encode(b"e2e-signing-key-32-bytes-long!!!").decode()
    async with FakeService(lambda call: simple_success()) as service:
        service_id = await pipeline.register(
            scene.astro, scene.group, service.url, signing_secret=secret
        )
        described = ok(await pipeline.http.get(f"/api/analysis_service/{service_id}", scene.astro))
        analysis_id = await pipeline.start(scene.astro, scene.source.obj_id, service_id)
        analysis = await pipeline.wait_final(scene.astro, analysis_id)
    assert analysis["status"] == "completed"
    assert described["has_signing_secret"] is True
    assert secret not in str(described)
    (call,) = service.received
    message_id = verify(secret, call.headers, call.body)
    assert message_id
    with pytest.raises(SignatureError):
        verify(secret, call.headers, call.body.replace(b"photometry", b"photometrx"))
    other = "whsec_" + base64.b64encode(b"another-key-also-32-bytes-long!!").decode()
    with pytest.raises(SignatureError):
        verify(other, call.headers, call.body)
