"""Upload-only analyses: POST /api/obj/{obj_id}/analysis_upload/{analysis_service_id}."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from shared.runtime.resources import Resources
from tests.support.analyses import (
    PNG_B64,
    count_analyses,
    insert_analysis,
    load_analysis,
    make_obj,
    make_service,
    outbox_payloads,
    published,
)
from tests.support.api import Accounts, ApiClient, Reply, api_client
from tests.support.artifacts import artifact_names, stored_artifacts, unreferenced_blobs
from tests.test_webhook_receiver import HOSTILE_BODIES

pytestmark = pytest.mark.usefixtures("backend")

RUN = ("Run Analyses",)
PAYLOAD = {
    "plots": [{"format": "png", "data": PNG_B64}],
    "results": {"format": "json", "data": {"period": 0.52}},
    "model_name": "rrlyrae",
    "n_detections": 40,
}


class Setup:
    async def build(self, resources: Resources, accounts: Accounts) -> Setup:
        self.resources = resources
        self.group = await accounts.group()
        self.elsewhere = await accounts.group()
        self.user = await accounts.user(acls=RUN, groups=(self.group,))
        self.obj_id = await make_obj(resources, [self.group])
        self.service = await make_service(resources, [self.group], upload_only=True)
        return self

    def path(self, obj_id: str | None = None, service_id: Any = None) -> str:
        service = self.service.id if service_id is None else service_id
        return f"/api/obj/{obj_id or self.obj_id}/analysis_upload/{service}"

    async def folders(self) -> tuple[set[str], set[str]]:
        """(analyses with stored artifacts, blobs): what an upload may add to the database."""
        return await stored_artifacts(self.resources)


@pytest.fixture
async def setup(resources: Resources, accounts: Accounts) -> Setup:
    return await Setup().build(resources, accounts)


def _no_server_path(resources: Resources, reply: Reply) -> None:
    text = json.dumps(reply.body)
    assert str(resources.settings.artifact_dir) not in text
    assert ".joblib" not in text and "/" not in reply.data.get("message", "")


async def test_upload_stores_a_completed_analysis_and_announces_it(
    api: ApiClient, resources: Resources, setup: Setup
) -> None:
    body = {"analysis": PAYLOAD, "message": "period found", "status": "failure"}
    reply = await api.post(setup.path(), setup.user, body)
    assert reply.status == 200, reply.body
    analysis_id = reply.data["id"]
    assert reply.data["message"] == "Saved upload_only analysis data. Message: period found"
    _no_server_path(resources, reply)

    row = await load_analysis(resources, analysis_id)
    assert row is not None
    assert (row.status, row.status_message) == ("completed", "period found")
    assert (row.show_parameters, row.show_plots, row.show_corner) == (True, True, True)
    assert row.analysis_parameters == {} and row.handled_by_url == "/"
    assert row.data_summary == {"model_name": "rrlyrae", "n_detections": 40}
    assert [g.id for g in row.groups] == [setup.group.id]
    assert len(row.artifacts["plots"]) == 1 and row.artifacts["results"]["format"] == "json"
    assert json.loads(await resources.artifacts.read(row.artifacts["results"])) == {"period": 0.52}

    envelope = await published(resources, "analysis.completed", analysis_id)
    assert envelope.payload == {
        "analysis_id": analysis_id,
        "obj_id": setup.obj_id,
        "analysis_service_id": setup.service.id,
        "status": "completed",
        "is_summary": False,
    }
    results = await api.get(f"/api/obj/analysis/{analysis_id}?includeAnalysisData=1", setup.user)
    assert results.data["data"]["results"] == {"format": "json", "data": {"period": 0.52}}


async def test_an_uploads_annotations_are_stored_on_the_source_like_a_webhooks(
    api: ApiClient, setup: Setup
) -> None:
    def annotations(body: list[dict[str, Any]]) -> dict[str, Any]:
        return {**PAYLOAD, "annotations": body}

    first = annotations([{"data": {"period": 0.52}}, {"data": {"amp": 0.8}, "origin": "fit"}])
    assert (await api.post(setup.path(), setup.user, {"analysis": first})).status == 200
    again = annotations([{"data": {"period": 0.55}}])  # the same origin: updated, not added
    assert (await api.post(setup.path(), setup.user, {"analysis": again})).status == 200

    listed = await api.get(f"/api/sources/{setup.obj_id}/annotations", setup.user)
    assert listed.status == 200, listed.body
    stored = sorted((a["origin"], a["data"]) for a in listed.data)
    assert stored == [("fit", {"amp": 0.8}), (setup.service.name, {"period": 0.55})]


async def test_an_empty_upload_is_recorded_with_a_note(
    api: ApiClient, resources: Resources, setup: Setup
) -> None:
    body = {"message": "nothing to see", "show_plots": False}
    reply = await api.post(setup.path(), setup.user, body)
    assert reply.status == 200, reply.body
    assert (
        reply.data["message"] == "Note: empty analysis upload_only results. Message: nothing to see"
    )
    row = await load_analysis(resources, reply.data["id"])
    assert row is not None and row.status == "completed" and row.artifacts == {}
    assert (row.show_parameters, row.show_plots) == (True, False)
    assert await artifact_names(resources, row.unique_id) == []


async def test_summary_uploads_announce_a_summary(
    api: ApiClient, resources: Resources, setup: Setup
) -> None:
    summarizer = await make_service(resources, [setup.group], upload_only=True, is_summary=True)
    body = {"analysis": {"results": {"format": "json", "data": {"summary": "A type Ia SN."}}}}
    reply = await api.post(setup.path(service_id=summarizer.id), setup.user, body)
    assert reply.status == 200, reply.body
    envelope = await published(resources, "analysis.completed", reply.data["id"])
    assert envelope.payload["is_summary"] is True


@pytest.mark.parametrize(
    ("analysis", "message"),
    [
        ([1, 2], "Invalid analysis: must be a JSON object"),
        ({"plots": [{"format": "png", "data": "%%%not base64"}]}, "not valid base64"),
        ({"plots": [{"format": "png", "data": "aGVsbG8="}]}, "not a PNG image"),
        ({"results": {"format": "pickle", "data": "x"}}, "Invalid analysis payload"),
        ({"posterior_samples": {"t0": ["a"]}}, "Invalid analysis payload"),
        ({"n_detections": -1}, "Invalid analysis payload"),
    ],
)
async def test_a_bad_analysis_object_stores_nothing(
    api: ApiClient, resources: Resources, setup: Setup, analysis: Any, message: str
) -> None:
    # A valid plot first, so a half-written payload would be noticed.
    if isinstance(analysis, dict) and "plots" not in analysis:
        analysis = {**analysis, "plots": [{"format": "png", "data": PNG_B64}]}
    before, folders = await count_analyses(resources), await setup.folders()
    reply = await api.post(setup.path(), setup.user, {"analysis": analysis})
    assert reply.status == 400 and message in reply.message, reply.body
    assert await count_analyses(resources) == before
    assert await setup.folders() == folders


async def test_upload_refusals_follow_skyportal(
    api: ApiClient, resources: Resources, accounts: Accounts, setup: Setup
) -> None:
    regular = await make_service(resources, [setup.group])
    hidden = await make_service(resources, [setup.elsewhere], upload_only=True)
    disabled = await make_service(resources, [setup.group], upload_only=True, enabled=False)
    hidden_obj = await make_obj(resources, [setup.elsewhere])
    viewer = await accounts.user(groups=(setup.group,))
    body = {"analysis": PAYLOAD}
    cases = [
        (setup.path(service_id=hidden.id), setup.user, body, 403,
         f"Could not access Analysis Service ID: {hidden.id}."),
        (setup.path(service_id=regular.id), setup.user, body, 403,
         f"Analysis Service ID: {regular.id} is not of type upload_only."),
        (setup.path(service_id=disabled.id), setup.user, body, 403,
         f"Analysis Service ID: {disabled.id} is disabled"),
        (setup.path(), setup.user, {**body, "group_ids": [setup.elsewhere.id]}, 400,
         "Cannot find one or more groups with IDs"),
        (setup.path(obj_id=hidden_obj), setup.user, body, 404, f"Obj {hidden_obj} not found"),
        (setup.path(), setup.user, {**body, "message": 5}, 400, "Invalid message: must be a"),
        (setup.path(), setup.user, {**body, "show_corner": "no"}, 400, "Invalid show_corner"),
        (setup.path(service_id="x"), setup.user, body, 400, "Invalid analysis_service_id: x"),
        (setup.path(), viewer, body, 401, "This endpoint requires the ACL"),
    ]  # fmt: skip
    before, folders = await count_analyses(resources), await setup.folders()
    for path, user, payload, status, message in cases:
        reply = await api.post(path, user, payload)
        assert reply.status == status and reply.message.startswith(message), (path, reply.body)
    broken = await api.post(
        setup.path(), setup.user, None, data=b"{", headers={"Content-Type": "application/json"}
    )
    assert broken.status == 400 and broken.message.startswith("Error parsing JSON")
    candidate = await api.post(
        f"/api/candidate/{setup.obj_id}/analysis_upload/{setup.service.id}", setup.user, body
    )
    assert candidate.status in (404, 405)
    assert await count_analyses(resources) == before
    assert await setup.folders() == folders


async def test_uploads_respect_the_cap_even_when_concurrent(
    resources: Resources, setup: Setup
) -> None:
    resources.settings.max_analyses_per_obj_per_user = 4
    async with api_client(resources) as api:  # built with the cap above
        await insert_analysis(
            resources,
            obj_id=setup.obj_id,
            service_id=setup.service.id,
            author_id=setup.user.id,
            status="completed",
        )
        folders = await setup.folders()
        replies = await asyncio.gather(
            *(api.post(setup.path(), setup.user, {"analysis": PAYLOAD}) for _ in range(8))
        )
        assert sorted(r.status for r in replies) == [200] * 3 + [403] * 5
        refused = next(r for r in replies if r.status == 403)
        assert refused.message == (
            "You have reached the maximum number of analyses for this object. "
            "Please delete some analyses before uploading more."
        )
        completed = await count_analyses(resources, obj_id=setup.obj_id, status="completed")
        assert completed == 4
        # Refused uploads leave no files behind.
        ids = [r.data["id"] for r in replies if r.status == 200]
        kept = set()
        for analysis_id in ids:
            row = await load_analysis(resources, analysis_id)
            assert row is not None
            kept.add(row.unique_id)
        assert (await setup.folders())[0] - folders[0] == kept
        assert await unreferenced_blobs(resources) == []
        messages = await outbox_payloads(resources, "analysis.completed")
        assert {m["analysis_id"] for m in messages} >= set(ids)


@pytest.mark.parametrize("case", list(HOSTILE_BODIES), ids=lambda c: c.replace(" ", "-"))
async def test_hostile_results_are_refused_before_anything_is_stored(
    api: ApiClient, resources: Resources, setup: Setup, case: str
) -> None:
    """Fails on main: each of these is accepted and stored, to be decoded on every read."""
    analysis, expected = HOSTILE_BODIES[case]
    before, folders = await count_analyses(resources), await setup.folders()
    body = {"analysis": {"plots": [{"format": "png", "data": PNG_B64}], **analysis}}
    reply = await api.post(setup.path(), setup.user, body)
    assert (reply.status, reply.message.startswith(expected)) == (400, True), reply.body
    assert await count_analyses(resources) == before
    assert await setup.folders() == folders
