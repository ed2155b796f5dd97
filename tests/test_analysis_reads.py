"""Reading, listing, cancelling and deleting analyses; dispatch attempts."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import insert, update

from shared.db.models import DispatchAttempt, Obj, ObjAnalysis
from shared.db.types import utcnow
from shared.domain.analysis_lifecycle import delete_analyses_of_service
from shared.domain.artifacts import delete_artifacts
from shared.domain.summaries import prepend_summary
from shared.runtime.resources import Resources
from tests.support.analyses import (
    PNG_B64,
    callback_token,
    insert_analysis,
    load_analysis,
    make_obj,
    make_service,
)
from tests.support.api import Accounts, ApiClient, Reply, TestUser
from tests.support.artifacts import (
    artifact_names,
    links_of,
    put_artifact,
    unreferenced_blobs,
)

pytestmark = pytest.mark.usefixtures("backend")

RUN = ("Run Analyses",)
PAYLOAD: dict[str, Any] = {
    "plots": [{"format": "png", "data": PNG_B64}],
    "results": {"format": "json", "data": {"chi2": 1.5, "params": {"t0": 59000.1}}},
    "posterior_samples": {"t0": [59000.0, 59000.2], "x1": [0.1, 0.3]},
    "model_lightcurve": {"ztfg": [[59000.0, 18.1, 18.0, 18.2], [59001.0, 18.3, 18.2, 18.4]]},
    "model_name": "salt3",
    "n_detections": 12,
}


class Team:
    """A group with an author, a colleague and a source; an outsider in another group."""

    async def build(self, resources: Resources, accounts: Accounts) -> Team:
        self.resources = resources
        self.group = await accounts.group()
        self.elsewhere = await accounts.group()
        self.author = await accounts.user(acls=RUN, groups=(self.group,))
        self.colleague = await accounts.user(acls=RUN, groups=(self.group,))
        self.outsider = await accounts.user(acls=RUN, groups=(self.elsewhere,))
        self.admin = await accounts.user(admin=True)
        self.obj_id = await make_obj(resources, [self.group])
        self.service = await make_service(resources, [self.group])
        self.uploader = await make_service(resources, [self.group], upload_only=True)
        return self

    async def analysis(self, status: str = "completed", **fields: Any) -> ObjAnalysis:
        values: dict[str, Any] = {
            "obj_id": self.obj_id,
            "service_id": self.service.id,
            "author_id": self.author.id,
            "groups": [self.group],
        }
        values.update(fields)
        return await insert_analysis(self.resources, status=status, **values)

    async def upload(self, api: ApiClient, payload: dict[str, Any] = PAYLOAD) -> int:
        path = f"/api/obj/{self.obj_id}/analysis_upload/{self.uploader.id}"
        reply = await api.post(path, self.author, {"analysis": payload, "message": "fit ok"})
        assert reply.status == 200, reply.body
        return int(reply.data["id"])


@pytest.fixture
async def team(resources: Resources, accounts: Accounts) -> Team:
    return await Team().build(resources, accounts)


def _no_secrets(resources: Resources, reply: Reply, *analyses: ObjAnalysis) -> None:
    text = json.dumps(reply.body)
    for analysis in analyses:
        assert callback_token(resources, analysis) not in text
        assert analysis.token_hash not in text
        assert analysis.unique_id not in text


async def test_group_members_and_admins_read_an_analysis_others_cannot(
    api: ApiClient, resources: Resources, team: Team
) -> None:
    analysis = await team.analysis(status="pending", analysis_parameters={"source": "salt3"})
    for reader in (team.author, team.colleague, team.admin):
        for path in (
            f"/api/obj/analysis/{analysis.id}",
            f"/api/obj/{team.obj_id}/analysis/{analysis.id}",
        ):
            reply = await api.get(path, reader)
            assert reply.status == 200, reply.body
            assert reply.data["id"] == analysis.id and reply.data["status"] == "pending"
            assert reply.data["analysis_service_name"] == "Test fitter"
            assert reply.data["analysis_parameters"] == {"source": "salt3"}
            assert reply.data["groups"] == [{"id": team.group.id, "name": team.group.name}]
            _no_secrets(resources, reply, analysis)
    refused = await api.get(f"/api/obj/analysis/{analysis.id}", team.outsider)
    assert (refused.status, refused.message) == (403, "Cannot access this Analysis.")
    missing = await api.get("/api/obj/analysis/999999", team.admin)
    assert (missing.status, missing.message) == (403, "Cannot access this Analysis.")
    bad = await api.get("/api/obj/analysis/abc", team.admin)
    assert (bad.status, bad.message) == (400, "Invalid analysis_id: abc")


async def test_reading_needs_the_object_too(
    api: ApiClient, resources: Resources, accounts: Accounts, team: Team
) -> None:
    # Shared with the outsider's group, but the outsider cannot read the source.
    analysis = await team.analysis(groups=[team.group, team.elsewhere])
    reply = await api.get(f"/api/obj/analysis/{analysis.id}", team.outsider)
    assert (reply.status, reply.message) == (403, "Cannot access this Analysis.")
    hidden = await api.get(f"/api/obj/{team.obj_id}/analysis/{analysis.id}", team.outsider)
    assert (hidden.status, hidden.message) == (404, f"Obj {team.obj_id} not found")
    listed = await api.get(f"/api/obj/{team.obj_id}/analysis", team.outsider)
    assert (listed.status, listed.message) == (404, f"Obj {team.obj_id} not found")
    everywhere = await api.get("/api/obj/analysis", team.outsider)
    assert analysis.id not in [a["id"] for a in everywhere.data]


async def test_an_analysis_read_through_another_object_is_refused(
    api: ApiClient, resources: Resources, team: Team
) -> None:
    analysis = await team.analysis()
    other_obj = await make_obj(resources, [team.group])
    reply = await api.get(f"/api/obj/{other_obj}/analysis/{analysis.id}", team.author)
    assert (reply.status, reply.message) == (403, "Cannot access this Analysis.")


async def test_an_unreadable_service_does_not_break_reads(
    api: ApiClient, resources: Resources, team: Team
) -> None:
    private_service = await make_service(resources, [team.elsewhere], display_name="Private")
    analysis = await team.analysis(service_id=private_service.id)
    single = await api.get(f"/api/obj/analysis/{analysis.id}", team.colleague)
    assert single.status == 200 and single.data["analysis_service_id"] == private_service.id
    listed = await api.get(f"/api/obj/{team.obj_id}/analysis", team.colleague)
    assert listed.status == 200 and [a["id"] for a in listed.data] == [analysis.id]
    summaries = await api.get("/api/obj/analysis?summaryOnly=true", team.colleague)
    assert summaries.status == 200


async def test_lists_have_skyportals_shapes_and_filters(
    api: ApiClient, resources: Resources, team: Team
) -> None:
    second_service = await make_service(resources, [team.group], is_summary=True)
    first = await team.analysis(data_summary={"model_name": "salt3", "n_detections": 7})
    second = await team.analysis(service_id=second_service.id, status="queued")
    # An object whose id contains the first one's: SkyPortal's LIKE filter mixed them up.
    longer = await make_obj(resources, [team.group], obj_id=team.obj_id + "0")
    third = await team.analysis(obj_id=longer)

    everything = await api.get("/api/obj/analysis", team.colleague)
    assert everything.status == 200
    brief = {a["id"]: a for a in everything.data}
    assert {first.id, second.id, third.id} <= set(brief)
    assert set(brief[first.id]) == {
        "id", "obj_id", "status", "status_message", "created_at", "last_activity",
        "analysis_service_id", "analysis_service_name", "analysis_service_description",
    }  # fmt: skip

    exact = await api.get(f"/api/obj/analysis?objID={team.obj_id}", team.colleague)
    assert [a["id"] for a in exact.data] == [first.id, second.id]
    per_obj = await api.get(f"/api/obj/{team.obj_id}/analysis", team.colleague)
    assert [a["id"] for a in per_obj.data] == [first.id, second.id]
    full = per_obj.data[0]
    assert (full["model_name"], full["n_detections"]) == ("salt3", 7)
    assert (full["model_lightcurve"], full["model_lightcurves"]) == (None, None)
    assert "groups" in full and "analysis_parameters" in full
    assert "model_lightcurve" not in brief[first.id]  # SkyPortal's list without an object
    for reply, analysis in ((everything, first), (per_obj, second)):
        _no_secrets(resources, reply, analysis)

    by_service = await api.get(
        f"/api/obj/{team.obj_id}/analysis?analysisServiceID={second_service.id}", team.colleague
    )
    assert [a["id"] for a in by_service.data] == [second.id]
    summary_only = await api.get(f"/api/obj/{team.obj_id}/analysis?summaryOnly=t", team.colleague)
    assert [a["id"] for a in summary_only.data] == [second.id]
    bad = await api.get("/api/obj/analysis?analysisServiceID=x", team.colleague)
    assert (bad.status, bad.message) == (400, "Invalid analysisServiceID: x")


async def test_admins_list_everything(api: ApiClient, resources: Resources, team: Team) -> None:
    mine = await team.analysis()
    other_obj = await make_obj(resources, [team.elsewhere])
    theirs = await team.analysis(obj_id=other_obj, groups=[team.elsewhere])
    listed = await api.get("/api/obj/analysis", team.admin)
    assert {mine.id, theirs.id} <= {a["id"] for a in listed.data}
    mine_only = await api.get("/api/obj/analysis", team.colleague)
    ids = {a["id"] for a in mine_only.data}
    assert mine.id in ids and theirs.id not in ids


async def test_pagination_and_the_bounded_unpaginated_list(
    api: ApiClient, resources: Resources, team: Team
) -> None:
    created = [(await team.analysis()).id for _ in range(5)]
    path = f"/api/obj/{team.obj_id}/analysis"
    page = await api.get(f"{path}?pageNumber=2&numPerPage=2", team.author)
    assert page.status == 200
    # SkyPortal clients index data as the list; the paging metadata sits beside it.
    assert [a["id"] for a in page.data] == created[2:4]
    assert (page.body["totalMatches"], page.body["pageNumber"], page.body["numPerPage"]) == (
        5,
        2,
        2,
    )
    last = await api.get(f"{path}?pageNumber=3&numPerPage=2", team.author)
    assert [a["id"] for a in last.data] == created[4:]
    assert last.body["totalMatches"] == 5
    everywhere = await api.get("/api/obj/analysis?numPerPage=2", team.author)
    assert isinstance(everywhere.data, list) and len(everywhere.data) == 2
    too_big = await api.get(f"{path}?numPerPage=100000", team.author)
    assert too_big.status == 400 and "numPerPage" in too_big.message

    resources.settings.page_size_max = 3
    headers = {"Authorization": f"token {team.author.token}"}
    response = await api.test_client.get(path, headers=headers)
    body = await response.json()
    assert [a["id"] for a in body["data"]] == created[:3]
    assert response.headers["X-Total-Matches"] == "5"


async def test_include_analysis_data_rebuilds_skyportals_stored_shape(
    api: ApiClient, resources: Resources, team: Team
) -> None:
    analysis_id = await team.upload(api)
    reply = await api.get(
        f"/api/obj/{team.obj_id}/analysis/{analysis_id}?includeAnalysisData=true", team.colleague
    )
    assert reply.status == 200, reply.body
    data = reply.data["data"]
    assert data["plots"] == [{"format": "png", "data": PNG_B64}]
    assert base64.b64decode(data["plots"][0]["data"]).startswith(b"\x89PNG")
    assert data["results"] == {"format": "json", "data": PAYLOAD["results"]["data"]}
    assert data["posterior_samples"] == PAYLOAD["posterior_samples"]
    assert data["model_lightcurve"] == PAYLOAD["model_lightcurve"]
    assert (data["model_name"], data["n_detections"]) == ("salt3", 12)
    assert reply.data["num_plots"] == 1
    assert all("path" not in v for v in reply.data["artifacts"].values() if isinstance(v, dict))
    row = await load_analysis(resources, analysis_id)
    assert row is not None
    _no_secrets(resources, reply, row)
    plain = await api.get(f"/api/obj/analysis/{analysis_id}", team.colleague)
    assert "data" not in plain.data


async def test_per_object_lists_carry_the_model_light_curves(
    api: ApiClient, resources: Resources, team: Team
) -> None:
    analysis_id = await team.upload(api)
    without = await team.analysis()
    path = f"/api/obj/{team.obj_id}/analysis"
    listed = await api.get(path, team.author)
    items = {a["id"]: a for a in listed.data}
    assert items[analysis_id]["model_lightcurve"] == PAYLOAD["model_lightcurve"]
    assert items[analysis_id]["model_lightcurves"] is None
    assert (items[without.id]["model_lightcurve"], items[without.id]["model_lightcurves"]) == (
        None,
        None,
    )

    row = await load_analysis(resources, analysis_id)
    assert row is not None
    async with resources.sessions.begin() as session:  # lost bytes do not break the list
        await delete_artifacts(session, [row.id])
        lost = {**row.artifacts["model_lightcurve"], "sha256": "0" * 64}
        await session.execute(
            update(ObjAnalysis)
            .where(ObjAnalysis.id == row.id)
            .values(artifacts={**row.artifacts, "model_lightcurve": lost})
        )
    listed = await api.get(path, team.author)
    assert listed.status == 200
    item = next(a for a in listed.data if a["id"] == analysis_id)
    assert (item["model_name"], item["n_detections"]) == ("salt3", 12)
    assert item["model_lightcurve"] is None


async def test_dispatch_attempts_are_listed_in_order(
    api: ApiClient, resources: Resources, team: Team
) -> None:
    # As the dispatcher leaves it after a retry and an acceptance (a queued row would be
    # claimed again by the next test's dispatcher, clashing with these records).
    analysis = await team.analysis(status="pending", dispatch_attempts_count=2)
    started = utcnow()
    async with resources.sessions.begin() as session:
        await session.execute(
            insert(DispatchAttempt),
            [
                {
                    "analysis_id": analysis.id,
                    "attempt_number": 2,
                    "started_at": started + timedelta(seconds=5),
                    "latency_ms": 12.5,
                    "http_status": 200,
                    "outcome": "accepted",
                    "error": None,
                },
                {
                    "analysis_id": analysis.id,
                    "attempt_number": 1,
                    "started_at": started,
                    "latency_ms": 30000.0,
                    "http_status": 503,
                    "outcome": "retry",
                    "error": "Service Unavailable",
                },
            ],
        )
    reply = await api.get(f"/api/obj/analysis/{analysis.id}/attempts", team.colleague)
    assert reply.status == 200, reply.body
    assert [(a["attempt_number"], a["http_status"], a["outcome"]) for a in reply.data] == [
        (1, 503, "retry"),
        (2, 200, "accepted"),
    ]
    assert reply.data[0]["error"] == "Service Unavailable"
    assert set(reply.data[0]) == {
        "attempt_number", "started_at", "http_status", "latency_ms", "outcome", "error",
    }  # fmt: skip
    refused = await api.get(f"/api/obj/analysis/{analysis.id}/attempts", team.outsider)
    assert (refused.status, refused.message) == (403, "Cannot access this Analysis.")


async def test_cancel_active_analyses_only(
    api: ApiClient, resources: Resources, accounts: Accounts, team: Team
) -> None:
    for status in ("queued", "dispatching", "pending"):
        analysis = await team.analysis(status=status)
        reply = await api.post(f"/api/obj/analysis/{analysis.id}/cancel", team.author)
        assert reply.status == 200, reply.body
        assert reply.data == {"id": analysis.id, "status": "cancelled"}
        row = await load_analysis(resources, analysis.id)
        assert row is not None and row.status == "cancelled"
        assert row.status_message == f"Cancelled by {team.author.username}"
    again = await api.post(f"/api/obj/analysis/{analysis.id}/cancel", team.author)
    assert (again.status, again.message) == (400, "Analysis is already cancelled")
    done = await team.analysis(status="completed")
    refused = await api.post(f"/api/obj/analysis/{done.id}/cancel", team.author)
    assert (refused.status, refused.message) == (400, "Analysis is already completed")


async def test_only_the_author_or_an_admin_cancels(
    api: ApiClient, resources: Resources, accounts: Accounts, team: Team
) -> None:
    analysis = await team.analysis(status="pending")
    path = f"/api/obj/analysis/{analysis.id}/cancel"
    colleague = await api.post(path, team.colleague)
    assert colleague.status == 403 and "author" in colleague.message
    outsider = await api.post(path, team.outsider)
    assert (outsider.status, outsider.message) == (403, "Cannot access this Analysis.")
    viewer = await accounts.user(groups=(team.group,))
    assert (await api.post(path, viewer)).status == 401
    row = await load_analysis(resources, analysis.id)
    assert row is not None and row.status == "pending"
    admin = await api.post(path, team.admin)
    assert admin.status == 200
    row = await load_analysis(resources, analysis.id)
    assert row is not None and row.status_message == f"Cancelled by {team.admin.username}"


async def test_concurrent_cancels_succeed_once(api: ApiClient, team: Team) -> None:
    analysis = await team.analysis(status="queued")
    path = f"/api/obj/analysis/{analysis.id}/cancel"
    replies = await asyncio.gather(*(api.post(path, team.author) for _ in range(5)))
    assert sorted(r.status for r in replies) == [200, 400, 400, 400, 400]


async def test_delete_removes_the_row_and_its_files(
    api: ApiClient, resources: Resources, team: Team
) -> None:
    analysis_id = await team.upload(api)
    row = await load_analysis(resources, analysis_id)
    assert row is not None
    stored = await artifact_names(resources, row.unique_id)
    assert stored
    path = f"/api/obj/analysis/{analysis_id}"
    colleague = await api.delete(path, team.colleague)
    assert (colleague.status, colleague.message) == (403, "Cannot delete this Analysis.")
    outsider = await api.delete(path, team.outsider)
    assert (outsider.status, outsider.message) == (403, "Cannot access this Analysis.")
    assert await artifact_names(resources, row.unique_id) == stored

    deleted = await api.delete(path, team.author)
    assert deleted.status == 200, deleted.body
    assert await load_analysis(resources, analysis_id) is None
    # No link rows, and no blob left that nothing refers to (in the same transaction).
    assert await links_of(resources, [analysis_id]) == 0
    assert await unreferenced_blobs(resources) == []
    gone = await api.get(path, team.author)
    assert (gone.status, gone.message) == (403, "Cannot access this Analysis.")
    again = await api.delete(path, team.author)
    assert again.status == 403


async def test_admins_delete_any_analysis(api: ApiClient, resources: Resources, team: Team) -> None:
    analysis = await team.analysis(status="pending")
    reply = await api.delete(f"/api/obj/analysis/{analysis.id}", team.admin)
    assert reply.status == 200
    assert await load_analysis(resources, analysis.id) is None


async def _summaries(
    resources: Resources, obj_id: str, entries: list[tuple[str, int | None]]
) -> None:
    async with resources.sessions.begin() as session:
        obj = await session.get(Obj, obj_id)
        assert obj is not None
        for text, analysis_id in entries:
            prepend_summary(obj, text, set_by_user_id=None, is_bot=True, analysis_id=analysis_id)


async def _obj(resources: Resources, obj_id: str) -> Obj:
    async with resources.sessions() as session:
        obj = await session.get(Obj, obj_id)
        assert obj is not None
        return obj


async def test_deleting_a_summary_analysis_drops_its_summaries(
    api: ApiClient, resources: Resources, team: Team
) -> None:
    summarizer = await make_service(resources, [team.group], is_summary=True)
    older = await team.analysis(service_id=summarizer.id)
    newer = await team.analysis(service_id=summarizer.id)
    await _summaries(
        resources, team.obj_id, [("manual", None), ("old", older.id), ("new", newer.id)]
    )

    reply = await api.delete(f"/api/obj/analysis/{newer.id}", team.author)
    assert reply.status == 200
    obj = await _obj(resources, team.obj_id)
    assert obj.summary == "old"
    assert [e["summary"] for e in obj.summary_history] == ["old", "manual"]


async def test_deleting_a_services_analyses_cleans_files_and_summaries(
    api: ApiClient, resources: Resources, team: Team
) -> None:
    summarizer = await make_service(resources, [team.group], is_summary=True)
    first = await team.analysis(service_id=summarizer.id)
    second = await team.analysis(service_id=summarizer.id)
    kept = await team.analysis()
    await _summaries(resources, team.obj_id, [("manual", None), ("a", first.id), ("b", second.id)])
    shared = {}
    for analysis in (first, second, kept):  # the same bytes: one blob, three links
        shared = await put_artifact(resources, analysis.id, "x.json", b"{}", "application/json")
        await put_artifact(
            resources, analysis.id, "own.json", analysis.unique_id.encode(), "application/json"
        )

    async with resources.sessions.begin() as session:
        removed = await delete_analyses_of_service(session, summarizer.id)
    assert sorted(removed) == sorted([first.unique_id, second.unique_id])
    assert await links_of(resources, [first.id, second.id]) == 0
    assert await unreferenced_blobs(resources) == []
    assert await artifact_names(resources, kept.unique_id) == ["own.json", "x.json"]
    assert await resources.artifacts.read(shared) == b"{}"  # still referenced by `kept`
    assert await load_analysis(resources, first.id) is None
    assert await load_analysis(resources, kept.id) is not None
    obj = await _obj(resources, team.obj_id)
    assert (obj.summary, [e["summary"] for e in obj.summary_history]) == ("manual", ["manual"])


async def test_a_rolled_back_service_deletion_keeps_everything(
    resources: Resources, team: Team
) -> None:
    analysis = await team.analysis()
    ref = await put_artifact(resources, analysis.id, "x.json", b"{}", "application/json")
    with pytest.raises(RuntimeError):
        async with resources.sessions.begin() as session:
            await delete_analyses_of_service(session, team.service.id)
            raise RuntimeError("abort")
    assert await artifact_names(resources, analysis.unique_id) == ["x.json"]
    assert await resources.artifacts.read(ref) == b"{}"
    assert await load_analysis(resources, analysis.id) is not None


async def test_no_read_ever_returns_the_callback_token(
    api: ApiClient, resources: Resources, team: Team
) -> None:
    analyses = [await team.analysis(status=s) for s in ("queued", "pending", "completed")]
    uploaded = await load_analysis(resources, await team.upload(api))
    assert uploaded is not None
    analyses.append(uploaded)
    user: TestUser = team.author
    paths = ["/api/obj/analysis", f"/api/obj/{team.obj_id}/analysis?includeAnalysisData=1"]
    paths += [f"/api/obj/analysis/{a.id}?includeAnalysisData=true" for a in analyses]
    paths += [f"/api/obj/analysis/{a.id}/attempts" for a in analyses]
    for path in paths:
        reply = await api.get(path, user)
        assert reply.status == 200, (path, reply.body)
        _no_secrets(resources, reply, *analyses)
