"""The webhook receiver: real bodies (matplotlib PNG, h5netcdf posterior, joblib results) posted
to the gateway on PostgreSQL and SQLite; replay, expiry, malformed and oversized bodies,
concurrency (PostgreSQL), annotation upsert, and that the token never leaks."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import xarray as xr
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from shared.db.models import (
    AnalysisService,
    Annotation,
    Group,
    Obj,
    ObjAnalysis,
    OutboxMessage,
)
from shared.db.types import utcnow
from shared.domain.analysis_data import load_analysis_data
from shared.runtime.resources import Resources
from shared.runtime.settings import Settings
from shared.security.secrets import hash_token
from skyhook.composition import platform_gateway_app
from tests.support.api import Accounts, ApiClient, unique
from tests.support.api import TestUser as ApiUser
from tests.support.artifacts import artifact_names, stored_bytes, unreferenced_blobs
from tests.support.hostile import HOSTILE_JOBLIB, HOSTILE_NETCDF
from webhook_receiver.app import create_webhook_app

MAX_BODY = 1024 * 1024


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"webhook_max_body_bytes": MAX_BODY})


# ---------------------------------------------------------------- real payload parts


def figure_bytes(fmt: str) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(3, 2), dpi=50)
    FigureCanvasAgg(figure)
    figure.subplots().plot([1, 2, 3], [3, 1, 2], "o-")
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt)
    return buffer.getvalue()


def netcdf_posterior(tmp_path: Path, draws: int = 400) -> bytes:
    rng = np.random.default_rng(7)
    dataset = xr.Dataset(
        {
            "z": (("chain", "draw"), rng.normal(0.05, 0.005, (2, draws))),
            "t0": (("chain", "draw"), rng.normal(59000.0, 2.0, (2, draws))),
            "amplitude": (("chain", "draw"), rng.lognormal(0.0, 0.1, (2, draws))),
            "fixed": (("chain", "draw"), np.full((2, draws), 3.0)),
        }
    )
    path = tmp_path / f"{unique('posterior')}.nc"
    dataset.to_netcdf(path, engine="h5netcdf", group="posterior")
    return path.read_bytes()


def joblib_bytes(value: Any, **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(value, buffer, **kwargs)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


SN_RESULT = {
    "parameters": np.array([0.05, 59000.0, 1.2e-5]),
    "covariance": np.eye(3) * 0.01,
    "param_names": ["z", "t0", "amplitude"],
    "chisq": np.float64(12.5),
    "ndof": np.int64(10),
    "success": True,
    "source": "nugent-sn2p",
}


def posterior_samples(n: int = 500) -> dict[str, list[float]]:
    rng = np.random.default_rng(3)
    return {"z": rng.normal(0.05, 0.01, n).tolist(), "t0": rng.normal(59000, 1, n).tolist()}


def full_analysis(tmp_path: Path) -> dict[str, Any]:
    return {
        "plots": [
            {"format": "png", "data": b64(figure_bytes("png"))},
            {"format": "jpeg", "data": b64(figure_bytes("jpeg"))},
        ],
        "inference_data": {"format": "netcdf4", "data": b64(netcdf_posterior(tmp_path))},
        "results": {"format": "joblib", "data": b64(joblib_bytes(SN_RESULT, compress=3))},
        "posterior_samples": posterior_samples(),
        "posteriors": {"nugent": posterior_samples(50)},
        "model_lightcurve": {"ztfg": [[59000.0, 19.1, 19.0, 19.2], [59001.0, 19.2, 19.1, 19.3]]},
        "model_lightcurves": {"nugent": {"ztfr": [[59000.0, 18.9, 18.8, 19.0]]}},
        "model_name": "nugent-sn2p",
        "n_detections": 12,
        "annotations": [{"data": {"period": 1.5}}, {"data": {"z_fit": 0.05}, "origin": "fit"}],
    }


# ---------------------------------------------------------------- rows written directly


@dataclass(frozen=True)
class MadeAnalysis:
    id: int
    unique_id: str
    token: str
    obj_id: str
    service_name: str
    author: ApiUser
    group: Group


async def make_analysis(
    resources: Resources,
    accounts: Accounts,
    *,
    status: str = "pending",
    expires_in: float = 3600.0,
    author: ApiUser | None = None,
    group: Group | None = None,
    artifacts: dict[str, Any] | None = None,
) -> MadeAnalysis:
    """A service, a source and an analysis row inserted straight into the database."""
    group = group or await accounts.group()
    author = author or await accounts.user(acls=("Run Analyses",), groups=(group,))
    uid = unique("uid")
    token = resources.callback_tokens.token_for(uid)
    async with resources.sessions.begin() as session:
        groups = [await session.get(Group, group.id)]
        service = AnalysisService(
            name=unique("svc"),
            display_name="SN fitter",
            url="http://127.0.0.1:9/analysis",
            authentication_type="none",
            analysis_type="lightcurve_fitting",
            groups=groups,
        )
        obj = Obj(id=unique("ZTF"), ra=10.0, dec=20.0, groups=groups)
        session.add_all([service, obj])
        await session.flush()
        now = utcnow()
        row = ObjAnalysis(
            unique_id=uid,
            obj_id=obj.id,
            author_id=author.id,
            analysis_service_id=service.id,
            token_hash=hash_token(token),
            status=status,
            invalid_after=now + timedelta(seconds=expires_in),
            last_activity=now - timedelta(seconds=2),
            artifacts=artifacts or {},
            groups=groups,
        )
        session.add(row)
        await session.flush()
        return MadeAnalysis(row.id, uid, token, obj.id, service.name, author, group)


def _json_parts(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    keys = ("posterior_samples", "posteriors", "model_lightcurve", "model_lightcurves")
    return [manifest[k] for k in (*keys, "annotations", "extra") if k in manifest]


async def load_row(resources: Resources, analysis_id: int) -> ObjAnalysis:
    async with resources.sessions() as session:
        row = await session.get(ObjAnalysis, analysis_id)
        assert row is not None
        return row


ENDED_KEYS = {"completed": "analysis.completed", "failure": "analysis.failed"}


async def outbox_for(resources: Resources, analysis_id: int) -> list[dict[str, Any]]:
    """The analysis' ended events; each one's routing key names its status."""
    async with resources.sessions() as session:
        rows = await session.scalars(
            select(OutboxMessage).where(OutboxMessage.routing_key.in_(ENDED_KEYS.values()))
        )
        mine = [r for r in rows if r.payload["analysis_id"] == analysis_id]
    assert all(r.routing_key == ENDED_KEYS[r.payload["status"]] for r in mine)
    return [r.payload for r in mine]


async def files_of(resources: Resources, uid: str) -> list[str]:
    """The artifact names stored in the database for the analysis."""
    return await artifact_names(resources, uid)


@dataclass
class Posted:
    status: int
    body: Any
    text: str

    @property
    def message(self) -> str:
        return str(self.body.get("message", "")) if isinstance(self.body, dict) else ""


async def post_raw(client: TestClient, path: str, data: Any, token: str = "") -> Posted:
    headers = {"Content-Type": "application/json"}
    async with client.post(path, data=data, headers=headers) as response:
        text = await response.text()
    if token:
        assert token not in text, "the webhook token must never appear in a response"
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    return Posted(response.status, body, text)


async def post_webhook(
    api: ApiClient, made: MadeAnalysis, body: Any, resource_type: str = "obj"
) -> Posted:
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    path = f"/api/webhook/{resource_type}_analysis/{made.token}"
    return await post_raw(api.test_client, path, data, made.token)


# ---------------------------------------------------------------- tests on both databases


@pytest.mark.usefixtures("backend")
async def test_a_full_result_is_stored_and_the_analysis_completed(
    api: ApiClient, accounts: Accounts, resources: Resources, tmp_path: Path
) -> None:
    made = await make_analysis(resources, accounts)
    analysis = full_analysis(tmp_path)
    body = {"status": "success", "message": "Good results with chi^2/dof=12.5/10"}
    reply = await post_webhook(api, made, {**body, "analysis": analysis})
    assert (reply.status, reply.body["data"]) == (200, {"status": "success"})

    row = await load_row(resources, made.id)
    assert row.status == "completed"
    assert row.status_message == "Good results with chi^2/dof=12.5/10"
    assert row.duration is not None and row.duration >= 2.0
    assert row.finished_at is not None  # out of the running analyses' index
    assert row.data_summary == {
        "model_name": "nugent-sn2p",
        "n_detections": 12,
        "message": body["message"],
    }
    manifest = row.artifacts
    assert [p["media_type"] for p in manifest["plots"]] == ["image/png", "image/jpeg"]
    # Results are decoded once, here: the JSON form is stored; the file as sent kept beside it.
    assert (manifest["results"]["format"], manifest["results"]["decoded_from"]) == (
        "json",
        "joblib",
    )
    assert manifest["results_original"]["format"] == "joblib"
    assert manifest["inference_data"]["media_type"] == "application/x-netcdf"
    entries = [*manifest["plots"], manifest["results"], manifest["results_original"]]
    for entry in [*entries, manifest["inference_data"]]:
        await stored_bytes(resources, entry)  # size and sha256 as the manifest says
    assert sorted(await files_of(resources, made.unique_id)) == sorted(
        e["name"] for e in [*entries, manifest["inference_data"], *_json_parts(manifest)]
    )
    original = await stored_bytes(resources, manifest["results_original"])
    assert b64(original) == analysis["results"]["data"]
    decoded = json.loads(await stored_bytes(resources, manifest["results"]))
    assert decoded["param_names"] == ["z", "t0", "amplitude"] and decoded["chisq"] == 12.5

    # SkyPortal's stored-data shape comes back from the artifacts.
    data = await load_analysis_data(resources.artifacts, row)
    assert data["plots"] == analysis["plots"]
    assert data["results"] == analysis["results"]
    assert data["inference_data"] == analysis["inference_data"]
    for key in ("posterior_samples", "posteriors", "model_lightcurve", "model_lightcurves"):
        assert data[key] == analysis[key]
    assert (data["model_name"], data["n_detections"]) == ("nugent-sn2p", 12)

    events = await outbox_for(resources, made.id)
    assert len(events) == 1
    assert events[0]["status"] == "completed" and events[0]["obj_id"] == made.obj_id

    async with resources.sessions() as session:
        notes = (
            await session.scalars(select(Annotation).where(Annotation.obj_id == made.obj_id))
        ).all()
    by_origin = {n.origin: n for n in notes}
    assert set(by_origin) == {made.service_name, "fit"}
    assert by_origin[made.service_name].data == {"period": 1.5}
    assert by_origin["fit"].owner_id == made.author.id
    assert [g.id for g in by_origin["fit"].groups] == [made.group.id]


@pytest.mark.usefixtures("backend")
async def test_a_replay_is_refused_and_changes_nothing(
    api: ApiClient, accounts: Accounts, resources: Resources, tmp_path: Path
) -> None:
    made = await make_analysis(resources, accounts)
    first = {"status": "success", "message": "done", "analysis": {"model_name": "a"}}
    assert (await post_webhook(api, made, first)).status == 200
    before = await files_of(resources, made.unique_id)

    replay = {"status": "success", "message": "again", "analysis": full_analysis(tmp_path)}
    reply = await post_webhook(api, made, replay)
    assert reply.status == 403
    assert reply.message == "Analysis already updated with status='completed' and message=done"
    row = await load_row(resources, made.id)
    assert (row.status, row.status_message, row.data_summary["model_name"]) == (
        "completed",
        "done",
        "a",
    )
    assert await files_of(resources, made.unique_id) == before
    assert len(await outbox_for(resources, made.id)) == 1


@pytest.mark.usefixtures("backend")
async def test_a_reported_failure_is_recorded_without_annotations(
    api: ApiClient, accounts: Accounts, resources: Resources
) -> None:
    made = await make_analysis(resources, accounts)
    body = {
        "status": "error",
        "message": "model failed to converge",
        "analysis": {"annotations": [{"data": {"x": 1}}]},
    }
    reply = await post_webhook(api, made, body)
    assert reply.status == 200
    row = await load_row(resources, made.id)
    assert (row.status, row.status_message) == ("failure", "model failed to converge")
    assert row.finished_at is not None
    assert [e["status"] for e in await outbox_for(resources, made.id)] == ["failure"]
    async with resources.sessions() as session:
        notes = await session.scalars(select(Annotation).where(Annotation.obj_id == made.obj_id))
        assert notes.all() == []


@pytest.mark.usefixtures("backend")
async def test_a_late_webhook_times_the_analysis_out(
    api: ApiClient, accounts: Accounts, resources: Resources
) -> None:
    made = await make_analysis(resources, accounts, expires_in=-5)
    body = {"status": "success", "message": "late", "analysis": {"model_name": "x"}}
    reply = await post_webhook(api, made, body)
    assert (reply.status, reply.message) == (400, "Token has expired")
    row = await load_row(resources, made.id)
    assert row.status == "timed_out"
    assert row.status_message is not None
    assert re.fullmatch(
        r"Analysis timed out before webhook call at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}",
        row.status_message,
    )
    assert await files_of(resources, made.unique_id) == []
    assert await outbox_for(resources, made.id) == []
    again = await post_webhook(api, made, body)
    assert (again.status, again.message) == (400, "Token has expired")


@pytest.mark.usefixtures("backend")
async def test_a_webhook_arriving_before_the_dispatcher_recorded_acceptance_wins(
    api: ApiClient, accounts: Accounts, resources: Resources
) -> None:
    inputs = {"name": "inputs.json", "path": "x/inputs.json", "size": 1, "sha256": "0" * 64}
    made = await make_analysis(
        resources, accounts, status="dispatching", artifacts={"inputs": inputs}
    )
    body = {"status": "success", "message": "fast", "analysis": {"model_name": "m"}}
    assert (await post_webhook(api, made, body)).status == 200
    row = await load_row(resources, made.id)
    assert row.status == "completed"
    assert row.artifacts["inputs"] == inputs  # the dispatcher's entry is kept


@pytest.mark.usefixtures("backend")
async def test_tokens_and_resource_types_are_checked(
    api: ApiClient, accounts: Accounts, resources: Resources
) -> None:
    made = await make_analysis(resources, accounts)
    body = json.dumps({"status": "success", "message": "", "analysis": {}})
    candidate = await post_webhook(api, made, body, resource_type="candidate")
    assert (candidate.status, candidate.message) == (403, "Invalid analysis resource type")
    unknown = "0d4a3c9e-4b7f-4c1e-8d2a-3f6b5e7a9c01"
    reply = await post_raw(api.test_client, f"/api/webhook/obj_analysis/{unknown}", body)
    assert (reply.status, reply.message) == (403, "Invalid token")
    reply = await post_raw(api.test_client, "/api/webhook/obj_analysis/", body)
    assert (reply.status, reply.message) == (403, "Invalid token")
    assert (await load_row(resources, made.id)).status == "pending"


@pytest.mark.usefixtures("backend")
async def test_a_cancelled_analysis_refuses_its_webhook(
    api: ApiClient, accounts: Accounts, resources: Resources
) -> None:
    made = await make_analysis(resources, accounts, status="cancelled")
    reply = await post_webhook(api, made, {"status": "success", "analysis": {}})
    assert reply.status == 403
    assert reply.message.startswith("Analysis already updated with status='cancelled'")


PNG_HEADER_ONLY = b64(b"\x89PNG\r\n\x1a\n" + b"\0" * 16)
MALFORMED: dict[str, tuple[bytes | str | Any, str]] = {
    "invalid JSON": (b'{"status": "success", "analysis": {', "Error parsing JSON"),
    "empty body": (b"", "request body is empty"),
    "not an object": ([1, 2], "the body must be a JSON object"),
    "NaN literal": (b'{"status": "success", "analysis": {"x": NaN}}', "NaN is not valid JSON"),
    "NUL in the message": (
        {"status": "success", "message": "ok\u0000", "analysis": {}},
        "Invalid message: must not contain NUL",
    ),
    "analysis not an object": ({"status": "success", "analysis": [1]}, "analysis"),
    "status not a string": ({"status": 1, "analysis": {}}, "status"),
    "unknown plot format": (
        {"status": "success", "analysis": {"plots": [{"format": "tiff", "data": "AAAA"}]}},
        "Invalid analysis.plots.0.format: 'tiff'",
    ),
    "bad base64": (
        {"status": "success", "analysis": {"plots": [{"format": "png", "data": "%%%"}]}},
        "Invalid analysis.plots.0.data: not valid base64",
    ),
    "JPEG bytes claimed as PNG": (
        {
            "status": "success",
            "analysis": {"plots": [{"format": "png", "data": b64(b"\xff\xd8\xff\xe0rest")}]},
        },
        "not a PNG image",
    ),
    "one bad plot among good ones": (
        {
            "status": "success",
            "analysis": {
                "plots": [
                    {"format": "png", "data": PNG_HEADER_ONLY},
                    {"format": "svg", "data": "AA"},
                ]
            },
        },
        "Invalid analysis.plots.1.data",
    ),
    "samples of strings": (
        {"status": "success", "analysis": {"posterior_samples": {"z": ["a"]}}},
        "analysis.posterior_samples.z.0",
    ),
    "n_detections a boolean": (
        {"status": "success", "analysis": {"n_detections": True}},
        "analysis.n_detections",
    ),
    "light curve rows of 3": (
        {"status": "success", "analysis": {"model_lightcurve": {"g": [[1, 2, 3]]}}},
        "analysis.model_lightcurve.g.0",
    ),
    "unknown results format": (
        {"status": "success", "analysis": {"results": {"format": "pickle", "data": "AA=="}}},
        "analysis.results.format",
    ),
    "json results not an object": (
        {"status": "success", "analysis": {"results": {"format": "json", "data": [1, 2]}}},
        "must be a JSON object",
    ),
    "joblib results not joblib": (
        {"status": "success", "analysis": {"results": {"format": "joblib", "data": b64(b"hi")}}},
        "not a joblib file",
    ),
    "inference data not netCDF": (
        {
            "status": "success",
            "analysis": {"inference_data": {"format": "netcdf4", "data": b64(b"junk" * 4)}},
        },
        "not a netCDF/HDF5 file",
    ),
    "annotation without data": (
        {"status": "success", "analysis": {"annotations": [{"origin": "x"}]}},
        "analysis.annotations.0.data",
    ),
}


@pytest.mark.usefixtures("backend")
async def test_malformed_bodies_are_refused_and_change_nothing(
    api: ApiClient, accounts: Accounts, resources: Resources
) -> None:
    made = await make_analysis(resources, accounts)
    for case, (body, expected) in MALFORMED.items():
        reply = await post_webhook(api, made, body)
        assert (reply.status, expected in reply.message) == (400, True), (case, reply.text)
        row = await load_row(resources, made.id)
        assert (row.status, row.artifacts, row.data_summary) == ("pending", {}, {}), case
        assert await files_of(resources, made.unique_id) == [], case
    assert await outbox_for(resources, made.id) == []
    # The token still works for a valid body afterwards.
    assert (await post_webhook(api, made, {"status": "success", "analysis": {}})).status == 200


HOSTILE_BODIES: dict[str, tuple[dict[str, Any], str]] = {
    **{
        f"joblib {name}": (
            {"results": {"format": "joblib", "data": b64(make())}},
            "Invalid analysis.results.data: refusing the joblib file: ",
        )
        for name, make in HOSTILE_JOBLIB.items()
    },
    **{
        f"netCDF {name}": (
            {"inference_data": {"format": "netcdf4", "data": b64(make())}},
            "Invalid analysis.inference_data.data: variable x declares ",
        )
        for name, make in HOSTILE_NETCDF.items()
    },
}


@pytest.mark.usefixtures("backend")
@pytest.mark.parametrize("case", list(HOSTILE_BODIES), ids=lambda c: c.replace(" ", "-"))
async def test_hostile_results_are_refused_before_anything_is_stored(
    api: ApiClient, accounts: Accounts, resources: Resources, case: str
) -> None:
    """Fails on main: each of these is accepted (200) and stored, to be decoded on every read."""
    analysis, expected = HOSTILE_BODIES[case]
    made = await make_analysis(resources, accounts)
    plot = {"format": "png", "data": b64(figure_bytes("png"))}  # a half-written payload shows
    body = {"status": "success", "analysis": {"plots": [plot], **analysis}}
    reply = await post_webhook(api, made, body)
    assert (reply.status, reply.message.startswith(expected)) == (400, True), reply.text
    row = await load_row(resources, made.id)
    assert (row.status, row.artifacts) == ("pending", {})
    assert await files_of(resources, made.unique_id) == []
    assert await outbox_for(resources, made.id) == []


@pytest.mark.usefixtures("backend")
async def test_an_oversized_body_gets_413_and_changes_nothing(
    api: ApiClient, accounts: Accounts, resources: Resources
) -> None:
    made = await make_analysis(resources, accounts)
    padding = "A" * (MAX_BODY + 10)
    body = json.dumps({"status": "success", "analysis": {"padding": padding}})
    reply = await post_webhook(api, made, body)
    assert reply.status == 413 and "too large" in reply.message

    async def chunks() -> Any:  # no Content-Length: the limit applies while streaming
        for _ in range(20):
            yield b"A" * (MAX_BODY // 10)

    path = f"/api/webhook/obj_analysis/{made.token}"
    streamed = await post_raw(api.test_client, path, chunks(), made.token)
    assert streamed.status == 413
    row = await load_row(resources, made.id)
    assert (row.status, row.artifacts) == ("pending", {})
    assert await files_of(resources, made.unique_id) == []


@pytest.mark.usefixtures("backend")
async def test_annotations_are_upserted_only_for_the_authors_own_same_group_ones(
    api: ApiClient, accounts: Accounts, resources: Resources
) -> None:
    made = await make_analysis(resources, accounts)
    other_group = await accounts.group()
    someone = await accounts.user(groups=(made.group,))
    async with resources.sessions.begin() as session:
        group = await session.get(Group, made.group.id)
        other = await session.get(Group, other_group.id)
        own = Annotation(
            obj_id=made.obj_id, owner_id=made.author.id, origin="fit", data={"v": 1}, groups=[group]
        )
        foreign = Annotation(
            obj_id=made.obj_id, owner_id=someone.id, origin="fit", data={"v": 2}, groups=[group]
        )
        own_elsewhere = Annotation(
            obj_id=made.obj_id,
            owner_id=made.author.id,
            origin=made.service_name,
            data={"v": 3},
            groups=[other],
        )
        session.add_all([own, foreign, own_elsewhere])
        await session.flush()
        ids = (own.id, foreign.id, own_elsewhere.id)
    annotations = [{"data": {"v": 10}, "origin": "fit"}, {"data": {"v": 30}}]
    body = {"status": "success", "analysis": {"annotations": annotations}}
    assert (await post_webhook(api, made, body)).status == 200

    async with resources.sessions() as session:
        notes = {
            n.id: n
            for n in await session.scalars(
                select(Annotation).where(Annotation.obj_id == made.obj_id)
            )
        }
    assert notes[ids[0]].data == {"v": 10}  # the author's own, same groups: updated
    assert notes[ids[1]].data == {"v": 2}  # someone else's: untouched (SkyPortal overwrote it)
    assert notes[ids[2]].data == {"v": 3}  # shared with other groups: untouched
    created = [n for i, n in notes.items() if i not in ids]
    assert [(n.origin, n.data, [g.id for g in n.groups]) for n in created] == [
        (made.service_name, {"v": 30}, [made.group.id])
    ]


@pytest.mark.usefixtures("backend")
async def test_the_token_is_never_logged(
    accounts: Accounts, resources: Resources, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    made = await make_analysis(resources, accounts)
    server = TestServer(platform_gateway_app(resources))
    await server.start_server(access_log=None)  # as the services run: no access log
    client = TestClient(server)
    try:
        path = f"/api/webhook/obj_analysis/{made.token}"
        await post_raw(client, path, b"{not json", made.token)
        body = {"status": "success", "analysis": {"model_name": "m"}}
        await post_raw(client, path, json.dumps(body), made.token)
        await post_raw(client, path, json.dumps(body), made.token)
    finally:
        await client.close()
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"analysis {made.id}: webhook accepted" in m for m in messages)
    assert made.token not in caplog.text


@pytest.mark.usefixtures("backend")
async def test_the_standalone_webhook_app_serves_the_same_route(
    accounts: Accounts, resources: Resources
) -> None:
    made = await make_analysis(resources, accounts)
    client = TestClient(TestServer(create_webhook_app(resources)))
    await client.start_server()
    try:
        path = f"/api/webhook/obj_analysis/{made.token}"
        body = json.dumps({"status": "success", "message": "ok", "analysis": {}})
        reply = await post_raw(client, path, body, made.token)
        assert reply.status == 200
        replay = await post_raw(client, path, body, made.token)
        assert replay.status == 403
    finally:
        await client.close()
    assert (await load_row(resources, made.id)).status == "completed"


@pytest.mark.usefixtures("backend")
async def test_callbacks_arriving_together_are_each_written_on_their_own_terms(
    api: ApiClient, accounts: Accounts, resources: Resources
) -> None:
    """Concurrent callbacks are written in one batch: each analysis gets its own message,
    summary and event, keeps the manifest members it had (JSON true, false and null
    included), shares one stored copy of a common plot; an expired one writes nothing."""
    earlier = {"inputs": {"sent": True, "signed": False, "note": None, "list": [1, {"a": None}]}}
    made = [await make_analysis(resources, accounts, artifacts=earlier) for _ in range(4)]
    expired = await make_analysis(resources, accounts, expires_in=-1.0)
    png = figure_bytes("png")

    def body(n: int) -> dict[str, Any]:
        analysis = {"plots": [{"format": "png", "data": b64(png)}], "n_detections": n}
        return {"status": "success", "message": f"fit {n}", "analysis": analysis}

    replies = await asyncio.gather(
        *(post_webhook(api, m, body(n)) for n, m in enumerate([*made, expired]))
    )

    assert [r.status for r in replies] == [200, 200, 200, 200, 400]
    rows = [await load_row(resources, m.id) for m in made]
    assert [(r.status, r.status_message) for r in rows] == [
        ("completed", f"fit {n}") for n in range(4)
    ]
    assert [r.data_summary["n_detections"] for r in rows] == [0, 1, 2, 3]
    assert all(r.artifacts["inputs"] == earlier["inputs"] for r in rows)
    assert all(r.duration is not None and r.duration >= 2.0 for r in rows)
    assert all(r.finished_at is not None for r in rows)
    assert [len(await outbox_for(resources, m.id)) for m in made] == [1, 1, 1, 1]
    shas = {r.artifacts["plots"][0]["sha256"] for r in rows}
    assert len(shas) == 1
    assert [await stored_bytes(resources, r.artifacts["plots"][0]) for r in rows] == [png] * 4
    gone = await load_row(resources, expired.id)
    assert gone.status == "timed_out"
    assert await files_of(resources, expired.unique_id) == []
    assert await outbox_for(resources, expired.id) == []


# ---------------------------------------------------------------- PostgreSQL only


async def test_exactly_one_of_many_concurrent_posts_wins(
    api: ApiClient,
    accounts: Accounts,
    resources: Resources,
    caplog: pytest.LogCaptureFixture,
) -> None:
    made = await make_analysis(resources, accounts)
    png = figure_bytes("png")

    def body(n: int) -> dict[str, Any]:
        return {
            "status": "success",
            "message": f"run {n}",
            "analysis": {"plots": [{"format": "png", "data": b64(png)}], "model_name": f"m{n}"},
        }

    caplog.set_level(logging.INFO, logger="skyhook.webhook")
    replies = await asyncio.gather(*(post_webhook(api, made, body(n)) for n in range(10)))
    # Several requests passed the first status check and were decided by the UPDATE itself.
    lost = sum("lost to a concurrent change" in r.getMessage() for r in caplog.records)
    assert lost >= 1
    statuses = sorted(r.status for r in replies)
    assert statuses == [200] + [403] * 9, [r.message for r in replies]
    row = await load_row(resources, made.id)
    winner = next(n for n, r in enumerate(replies) if r.status == 200)
    assert (row.status_message, row.data_summary["model_name"]) == (f"run {winner}", f"m{winner}")
    assert len(await outbox_for(resources, made.id)) == 1
    # Only the winner stored artifacts, and they are the ones the manifest names.
    assert await files_of(resources, made.unique_id) == [row.artifacts["plots"][0]["name"]]
    await stored_bytes(resources, row.artifacts["plots"][0])
    assert await unreferenced_blobs(resources) == []
