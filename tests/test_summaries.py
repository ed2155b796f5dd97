"""Source summaries: the ``analysis.completed`` consumer (idempotent, locked, JSON and joblib
results), manual edits (``PATCH /api/sources/{id}``), deletion, the user's LLM key, and the
whole pipeline in-process (gateway + dispatcher + summarizer + webhook + summary service)
against a real local OpenAI-compatible server, on PostgreSQL and SQLite (and RabbitMQ once)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import joblib
import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr
from sqlalchemy import delete, text, update

from dispatcher import Dispatcher
from dispatcher.triggers import declare_trigger_queue
from llm_summarizer.app import SummarizerConfig, create_summarizer_app
from llm_summarizer.demo import summarizer_registration
from shared.bus.base import Envelope
from shared.bus.rabbit import RabbitBus
from shared.db.models import Group, Obj, ObjAnalysis, OutboxMessage, SourceEmbedding, User
from shared.domain.analysis_data import store_analysis_payload
from shared.domain.analysis_lifecycle import delete_analyses_where
from shared.domain.artifacts import NewArtifact, write_artifacts
from shared.domain.events import AnalysisCompleted
from shared.runtime.resources import Resources
from shared.runtime.settings import Settings
from skyhook.composition import outbox_relay, platform_gateway_app, run_service
from summary_service import SummaryService, declare_summary_queue, running_summary_service
from tests.conftest import AMQP_URL
from tests.support.api import Accounts, ApiClient, unique
from tests.support.api import TestUser as ApiUser
from tests.support.buses import isolated_rabbit
from tests.support.fake_openai import FakeOpenAI
from tests.support.pipeline import (
    load_analysis,
    make_analysis,
    make_obj,
    make_service,
    wait_for_status,
)
from tests.support.polling import eventually
from tests.support.ports import free_port

SITE_KEY = "sk-site-valid-key-0001"
USER_KEY = "sk-user-own-key-9f8e7d6c5b4a"
BAD_KEY = "sk-user-revoked-key-000111222"
FAST = {
    "dispatch_retry_delays_seconds": [0.2],
    "dispatch_poll_interval_seconds": 0.05,
    "dispatch_timeout_seconds": 5.0,
    "llm_max_retries": 0,
    "embeddings_refresh_interval_seconds": 3600.0,
}


@pytest.fixture
def applied(monkeypatch: pytest.MonkeyPatch) -> list[Envelope]:
    """Every delivery a summary service of this test handled without an error, in order (the
    service must start after this fixture: it wraps the handler it subscribes)."""
    handled: list[Envelope] = []
    original = SummaryService.handle_message

    async def counted(self: SummaryService, envelope: Envelope) -> None:
        await original(self, envelope)
        handled.append(envelope)

    monkeypatch.setattr(SummaryService, "handle_message", counted)
    return handled


@pytest.fixture
async def llm() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(valid_keys={SITE_KEY, USER_KEY}) as fake:
        yield fake


@pytest.fixture
def gateway_port() -> int:
    return free_port()


@pytest.fixture
def settings(settings: Settings, llm: FakeOpenAI, gateway_port: int) -> Settings:
    return settings.model_copy(
        update={
            "public_url": f"http://127.0.0.1:{gateway_port}",
            "llm_base_url": llm.base_url,
            "llm_api_key": SecretStr(SITE_KEY),
            "llm_model": "fake-chat",
            "embeddings_model": "fake-embed",
            **FAST,
        }
    )


@dataclass
class Scene:
    group: Group
    author: ApiUser
    reader: ApiUser
    obj_id: str
    service_id: int


@pytest.fixture
async def scene(resources: Resources, accounts: Accounts) -> Scene:
    group = await accounts.group()
    acls = ("Run Analyses", "Upload Data")
    author = await accounts.user(acls=acls, groups=(group,))
    reader = await accounts.user(groups=(group,))
    obj_id = await make_obj(resources, [group])
    service_id = await make_service(
        resources,
        "http://127.0.0.1:9/summarize",
        [group],
        is_summary=True,
        analysis_type="meta_analysis",
        input_data_types=["comments"],
    )
    return Scene(group, author, reader, obj_id, service_id)


async def load_obj(resources: Resources, obj_id: str) -> Obj:
    async with resources.sessions() as session:
        obj = await session.get(Obj, obj_id, populate_existing=True)
        assert obj is not None
        return obj


def joblib_b64(value: Any) -> str:
    buffer = io.BytesIO()
    joblib.dump(value, buffer, compress=3)
    return base64.b64encode(buffer.getvalue()).decode()


async def finished_analysis(
    resources: Resources,
    scene: Scene,
    results: dict[str, Any] | None,
    *,
    fmt: str = "json",
    service_id: int | None = None,
) -> ObjAnalysis:
    """A completed analysis whose results were stored as the webhook stores them."""
    row = await make_analysis(
        resources, scene.obj_id, service_id or scene.service_id, scene.author.id, [scene.group]
    )
    artifacts: dict[str, Any] = {}
    files: list[NewArtifact] = []
    if results is not None:
        data = joblib_b64(results) if fmt == "joblib" else results
        payload = {"results": {"format": fmt, "data": data}}
        stored = await store_analysis_payload(row.unique_id, payload)
        artifacts, files = stored.artifacts, stored.files
    async with resources.sessions.begin() as session:
        await session.execute(
            update(ObjAnalysis)
            .where(ObjAnalysis.id == row.id)
            .values(status="completed", artifacts=artifacts)
        )
        await write_artifacts(session, row.id, files)
    return await load_analysis(resources, row.id)


def completed(row: ObjAnalysis, *, is_summary: bool = True) -> Envelope:
    event = AnalysisCompleted(
        analysis_id=row.id,
        obj_id=row.obj_id,
        analysis_service_id=row.analysis_service_id,
        status=row.status,
        is_summary=is_summary,
    )
    return Envelope(unique("msg"), event.ROUTING_KEY, event.model_dump(mode="json"))


# --- the consumer -----------------------------------------------------------------------------


@pytest.mark.usefixtures("backend")
async def test_completed_summary_becomes_the_source_summary(
    resources: Resources, scene: Scene
) -> None:
    row = await finished_analysis(resources, scene, {"summary": "  A bright SN Ia.  "})
    await SummaryService(resources).handle_message(completed(row))

    obj = await load_obj(resources, scene.obj_id)
    assert obj.summary == "A bright SN Ia."
    (entry,) = obj.summary_history
    assert entry["summary"] == "A bright SN Ia."
    assert entry["is_bot"] is True
    assert entry["analysis_id"] == row.id
    assert entry["set_by_user_id"] == scene.author.id
    assert entry["set_at_utc"].endswith("+00:00")


@pytest.mark.usefixtures("backend")
async def test_redelivered_event_changes_nothing(resources: Resources, scene: Scene) -> None:
    row = await finished_analysis(resources, scene, {"summary": "First and only."})
    service = SummaryService(resources)
    await service.handle_message(completed(row))
    before = await load_obj(resources, scene.obj_id)

    await service.handle_message(completed(row))  # redelivered (same analysis, new message)
    await service.handle_message(completed(row))

    after = await load_obj(resources, scene.obj_id)
    assert after.summary_history == before.summary_history
    assert len(after.summary_history) == 1
    assert after.modified == before.modified


async def test_redelivery_through_the_bus_changes_nothing(
    resources: Resources, scene: Scene, applied: list[Envelope]
) -> None:
    row = await finished_analysis(resources, scene, {"summary": "Delivered twice."})
    async with running_summary_service(resources):
        envelope = completed(row)
        await resources.bus.publish([envelope, envelope, completed(row)])
        await eventually(lambda: _history_length(resources, scene.obj_id, 1), "one summary")
        # The duplicates are consumed too: the service handled all three deliveries.
        await eventually(lambda: len(applied) == 3, "the summary service to handle 3 deliveries")
    obj = await load_obj(resources, scene.obj_id)
    assert [e["summary"] for e in obj.summary_history] == ["Delivered twice."]
    assert await resources.bus.list_dead_letters() == []


async def _history_length(resources: Resources, obj_id: str, count: int) -> bool:
    return len((await load_obj(resources, obj_id)).summary_history) == count


async def test_joblib_results_are_decoded_safely(resources: Resources, scene: Scene) -> None:
    results = {"summary": "From joblib.", "embedding": np.arange(3, dtype=np.float64)}
    row = await finished_analysis(resources, scene, results, fmt="joblib")
    await SummaryService(resources).handle_message(completed(row))
    assert (await load_obj(resources, scene.obj_id)).summary == "From joblib."


@pytest.mark.parametrize(
    "case", ["not a summary service", "no results", "no summary key", "empty summary"]
)
async def test_nothing_to_apply_changes_nothing(
    resources: Resources, scene: Scene, case: str
) -> None:
    results: dict[str, Any] | None = {
        "not a summary service": {"summary": "ignored"},
        "no results": None,
        "no summary key": {"chi2": 1.0},
        "empty summary": {"summary": "   "},
    }[case]
    row = await finished_analysis(resources, scene, results)
    envelope = completed(row, is_summary=case != "not a summary service")
    await SummaryService(resources).handle_message(envelope)
    obj = await load_obj(resources, scene.obj_id)
    assert (obj.summary, obj.summary_history) == (None, [])


async def test_analysis_deleted_before_its_event_is_not_applied(
    resources: Resources, scene: Scene
) -> None:
    row = await finished_analysis(resources, scene, {"summary": "Too late."})
    async with resources.sessions.begin() as session:
        await delete_analyses_where(session, ObjAnalysis.id == row.id)
    await SummaryService(resources).handle_message(completed(row))
    assert (await load_obj(resources, scene.obj_id)).summary_history == []


@pytest.mark.usefixtures("backend")
async def test_concurrent_summaries_are_all_kept(resources: Resources, scene: Scene) -> None:
    rows = [await finished_analysis(resources, scene, {"summary": f"S{n}"}) for n in range(6)]
    service = SummaryService(resources)
    await asyncio.gather(*(service.handle_message(completed(r)) for r in rows))
    obj = await load_obj(resources, scene.obj_id)
    assert sorted(e["analysis_id"] for e in obj.summary_history) == sorted(r.id for r in rows)
    assert obj.summary == obj.summary_history[0]["summary"]


async def test_deleting_a_summary_analysis_restores_the_previous_summary(
    resources: Resources, scene: Scene, api: ApiClient
) -> None:
    reply = await api.patch(f"/api/sources/{scene.obj_id}", scene.author, {"summary": "Manual."})
    assert reply.status == 200, reply.body
    row = await finished_analysis(resources, scene, {"summary": "From the bot."})
    async with running_summary_service(resources) as service:
        await service.handle_message(completed(row))
        assert service.embedder is not None
        stored = await _embedding(resources, scene.obj_id)
        assert stored is not None and stored.summary == "From the bot."

        reply = await api.delete(f"/api/obj/analysis/{row.id}", scene.author)
        assert reply.status == 200, reply.body
        obj = await load_obj(resources, scene.obj_id)
        assert obj.summary == "Manual."
        assert [e["summary"] for e in obj.summary_history] == ["Manual."]

        await service.embedder.reconcile()
    stored = await _embedding(resources, scene.obj_id)
    assert stored is not None and stored.summary == "Manual."


async def _embedding(resources: Resources, obj_id: str) -> SourceEmbedding | None:
    async with resources.sessions() as session:
        return await session.get(SourceEmbedding, obj_id, populate_existing=True)


async def test_uploaded_summary_results_are_applied(
    resources: Resources, scene: Scene, api: ApiClient
) -> None:
    """An upload-only summary service: the uploaded results become the summary (the upload
    emits analysis.completed like a webhook)."""
    service_id = await make_service(
        resources,
        "http://127.0.0.1:9/unused",
        [scene.group],
        is_summary=True,
        upload_only=True,
        analysis_type="meta_analysis",
    )
    body = {"analysis": {"results": {"format": "json", "data": {"summary": "Uploaded."}}}}
    async with running_summary_service(resources), outbox_relay(resources):
        reply = await api.post(
            f"/api/obj/{scene.obj_id}/analysis_upload/{service_id}", scene.author, body
        )
        assert reply.status == 200, reply.body
        await eventually(lambda: _history_length(resources, scene.obj_id, 1), "one summary")
    obj = await load_obj(resources, scene.obj_id)
    assert obj.summary == "Uploaded."
    assert obj.summary_history[0]["analysis_id"] == reply.data["id"]


async def test_summary_only_lists_summary_analyses(
    resources: Resources, scene: Scene, api: ApiClient
) -> None:
    summary_row = await finished_analysis(resources, scene, {"summary": "x"})
    other_service = await make_service(resources, "http://127.0.0.1:9/fit", [scene.group])
    other_row = await finished_analysis(resources, scene, None, service_id=other_service)

    reply = await api.get(f"/api/obj/{scene.obj_id}/analysis?summaryOnly=true", scene.reader)
    assert reply.status == 200, reply.body
    assert [a["id"] for a in reply.data] == [summary_row.id]
    reply = await api.get(f"/api/obj/{scene.obj_id}/analysis", scene.reader)
    assert {a["id"] for a in reply.data} == {summary_row.id, other_row.id}
    reply = await api.get("/api/obj/analysis?summaryOnly=true", scene.reader)
    assert reply.status == 200, reply.body
    assert [a["id"] for a in reply.data] == [summary_row.id]
    reply = await api.get(f"/api/obj/analysis?summaryOnly=true&objID={scene.obj_id}", scene.reader)
    assert [a["id"] for a in reply.data] == [summary_row.id]


# --- PATCH /api/sources/{obj_id} --------------------------------------------------------------


@pytest.mark.usefixtures("backend")
async def test_manual_summary_and_redshift(
    resources: Resources, scene: Scene, api: ApiClient
) -> None:
    body = {
        "summary": "Hand-written summary.",
        "summary_origin": "note",
        "redshift": 0.031,
        "redshift_error": 0.001,
    }
    reply = await api.patch(f"/api/sources/{scene.obj_id}", scene.author, body)
    assert reply.status == 200, reply.body

    source = (await api.get(f"/api/sources/{scene.obj_id}", scene.reader)).data
    assert source["summary"] == "Hand-written summary."
    assert (source["redshift"], source["redshift_error"]) == (0.031, 0.001)
    (entry,) = source["summary_history"]
    assert entry["is_bot"] is False
    assert entry["origin"] == "note"
    assert entry["analysis_id"] is None
    assert entry["set_by_user_id"] == scene.author.id

    reply = await api.patch(f"/api/sources/{scene.obj_id}", scene.author, {"redshift": None})
    assert reply.status == 200
    source = (await api.get(f"/api/sources/{scene.obj_id}", scene.reader)).data
    assert source["redshift"] is None
    assert len(source["summary_history"]) == 1
    assert source["summary_history"][0]["set_by_username"] == scene.author.username

    reply = await api.patch(f"/api/sources/{scene.obj_id}", scene.author, {"summary": None})
    assert reply.status == 200, reply.body
    source = (await api.get(f"/api/sources/{scene.obj_id}", scene.reader)).data
    assert source["summary"] is None
    assert [e["summary"] for e in source["summary_history"]] == [None, "Hand-written summary."]


async def test_manual_summary_may_name_a_readable_analysis(
    resources: Resources, scene: Scene, api: ApiClient
) -> None:
    row = await finished_analysis(resources, scene, None)
    body = {"summary": "Edited bot text.", "is_bot": True, "analysis_id": row.id}
    reply = await api.patch(f"/api/sources/{scene.obj_id}", scene.author, body)
    assert reply.status == 200, reply.body
    obj = await load_obj(resources, scene.obj_id)
    assert obj.summary_history[0]["analysis_id"] == row.id
    assert obj.summary_history[0]["is_bot"] is True


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "Nothing to update"),
        ({"summary": ""}, "Invalid summary: must be a non-empty string"),
        ({"summary": 5}, "Invalid summary: must be a non-empty string"),
        ({"summary": "x" * 20_001}, "Invalid summary: must be at most 20000 characters"),
        ({"summary": "ok", "is_bot": "yes"}, "Invalid is_bot: must be a boolean"),
        ({"summary": "ok", "analysis_id": "7"}, "Invalid analysis_id"),
        ({"summary": "ok", "analysis_id": 2**31 - 2}, "Invalid analysis_id: no analysis"),
        ({"summary": "ok", "summary_origin": 3}, "Invalid summary_origin"),
        ({"summary_origin": "x"}, "summary_origin describe a summary: give summary too"),
        ({"redshift": "high"}, "Invalid redshift"),
        ({"redshift_error": -1}, "Invalid redshift_error: must be >= 0"),
        ({"summary": "ok", "ra": 3}, "Invalid fields for a source: ['ra']"),
    ],
)
async def test_bad_patches_change_nothing(
    resources: Resources, scene: Scene, api: ApiClient, body: dict[str, Any], message: str
) -> None:
    reply = await api.patch(f"/api/sources/{scene.obj_id}", scene.author, body)
    assert reply.status == 400
    assert reply.message.startswith(message), reply.message
    obj = await load_obj(resources, scene.obj_id)
    assert (obj.summary, obj.summary_history, obj.redshift) == (None, [], None)


async def test_patch_needs_upload_data_and_a_visible_source(
    resources: Resources, scene: Scene, api: ApiClient, accounts: Accounts
) -> None:
    body = {"summary": "Nope."}
    reply = await api.patch(f"/api/sources/{scene.obj_id}", scene.reader, body)
    assert (reply.status, reply.message) == (401, "This endpoint requires the ACL: Upload Data")

    stranger = await accounts.user(acls=("Upload Data",), groups=(await accounts.group(),))
    reply = await api.patch(f"/api/sources/{scene.obj_id}", stranger, body)
    assert (reply.status, reply.message) == (404, f"Source {scene.obj_id} not found")
    reply = await api.patch("/api/sources/NoSuchSource", scene.author, body)
    assert reply.status == 404
    assert (await load_obj(resources, scene.obj_id)).summary is None


# --- the user's LLM key -----------------------------------------------------------------------


async def _secrets_column(resources: Resources, user_id: int) -> str | None:
    async with resources.sessions() as session:
        user = await session.get(User, user_id, populate_existing=True)
        assert user is not None
        return user.secrets_ciphertext


async def test_llm_key_is_stored_encrypted_and_never_returned(
    resources: Resources, scene: Scene, api: ApiClient
) -> None:
    path = "/api/internal/profile/llm_key"
    assert (await api.get(path, scene.author)).data == {"llm_key_set": False}

    reply = await api.call("PUT", path, scene.author, {"api_key": f"  {USER_KEY} "})
    assert (reply.status, reply.data) == (200, {"llm_key_set": True})
    assert (await api.get(path, scene.author)).data == {"llm_key_set": True}
    profile = await api.get("/api/internal/profile", scene.author)
    assert profile.data["llm_key_set"] is True
    assert USER_KEY not in json.dumps(profile.body)
    stored = await _secrets_column(resources, scene.author.id)
    assert stored and USER_KEY not in stored and USER_KEY[-8:] not in stored
    # Another user is unaffected.
    assert (await api.get(path, scene.reader)).data == {"llm_key_set": False}

    reply = await api.delete(path, scene.author)
    assert (reply.status, reply.data) == (200, {"llm_key_set": False})
    assert await _secrets_column(resources, scene.author.id) is None
    assert (await api.get("/api/internal/profile", scene.author)).data["llm_key_set"] is False


@pytest.mark.parametrize("api_key", [None, "", "   ", 42, "has space", "k" * 501])
async def test_bad_llm_keys_are_refused(
    resources: Resources, scene: Scene, api: ApiClient, api_key: Any
) -> None:
    reply = await api.call(
        "PUT", "/api/internal/profile/llm_key", scene.author, {"api_key": api_key}
    )
    assert reply.status == 400
    assert reply.message.startswith("Invalid api_key")
    assert await _secrets_column(resources, scene.author.id) is None


# --- the whole pipeline in-process ------------------------------------------------------------


@dataclass
class Pipeline:
    resources: Resources
    api: ApiClient
    summarizer_url: str
    summaries: SummaryService


@asynccontextmanager
async def pipeline(resources: Resources, gateway_port: int) -> AsyncIterator[Pipeline]:
    """Gateway (with the webhook) on the public URL's port, dispatcher, summarizer, summary
    service and outbox relay, all in this process."""
    gateway = TestClient(TestServer(platform_gateway_app(resources), port=gateway_port))
    config = SummarizerConfig(resources.settings, callback_retry_delays_seconds=(0.1, 0.2))
    summarizer = TestServer(create_summarizer_app(config))
    await gateway.start_server()
    await summarizer.start_server()
    dispatcher = Dispatcher(resources)
    await dispatcher.start()
    try:
        async with running_summary_service(resources) as summaries, outbox_relay(resources):
            url = str(summarizer.make_url("/summarize"))
            yield Pipeline(resources, ApiClient(gateway), url, summaries)
    finally:
        await dispatcher.stop()
        await summarizer.close()
        await gateway.close()


async def register_summarizer(run: Pipeline, accounts: Accounts, scene: Scene) -> int:
    manager = await accounts.user(acls=("Manage Analysis Services",), groups=(scene.group,))
    body = summarizer_registration(run.summarizer_url, [scene.group.id])
    body["name"] = unique("summarizer")
    reply = await run.api.post("/api/analysis_service", manager, body)
    assert reply.status == 200, reply.body
    return int(reply.data["id"])


async def comment(run: Pipeline, scene: Scene, words: str) -> None:
    reply = await run.api.post(
        f"/api/sources/{scene.obj_id}/comments", scene.author, {"text": words}
    )
    assert reply.status == 200, reply.body


async def start_summary(run: Pipeline, scene: Scene, service_id: int) -> int:
    reply = await run.api.post(f"/api/obj/{scene.obj_id}/analysis/{service_id}", scene.author, {})
    assert reply.status == 200, reply.body
    return int(reply.data["id"])


async def query(run: Pipeline, user: ApiUser, **body: Any) -> list[dict[str, Any]]:
    reply = await run.api.post("/api/summary_query", user, body)
    assert reply.status == 200, reply.body
    return list(reply.data["query_results"])


@pytest.mark.usefixtures("backend")
async def test_comment_summary_search_delete(
    resources: Resources, scene: Scene, accounts: Accounts, gateway_port: int, llm: FakeOpenAI
) -> None:
    async with pipeline(resources, gateway_port) as run:
        reply = await run.api.patch(
            f"/api/sources/{scene.obj_id}", scene.author, {"summary": "Earlier manual note."}
        )
        assert reply.status == 200
        await comment(run, scene, "Luminous blue transient with helium lines near a dwarf host")
        service_id = await register_summarizer(run, accounts, scene)
        analysis_id = await start_summary(run, scene, service_id)

        done = await wait_for_status(resources, analysis_id, ["completed", "failure"], within=15)
        assert done.status == "completed", done.status_message

        async def summarized() -> dict[str, Any] | None:
            source = (await run.api.get(f"/api/sources/{scene.obj_id}", scene.reader)).data
            return source if len(source["summary_history"]) == 2 else None

        source = await eventually(summarized, "the second summary")
        assert "helium lines near a dwarf host" in source["summary"]
        newest = source["summary_history"][0]
        assert (newest["is_bot"], newest["analysis_id"]) == (True, analysis_id)
        (chat,) = llm.requests_to("/v1/chat/completions")
        assert "Luminous blue transient" in chat.body["messages"][1]["content"]

        reply = await run.api.get(f"/api/obj/analysis/{analysis_id}/results", scene.reader)
        assert reply.status == 200, reply.body

        async def found() -> list[dict[str, Any]]:
            hits = await query(run, scene.reader, q="helium transient dwarf host", k=3)
            return [h for h in hits if h["id"] == scene.obj_id]

        (hit,) = await eventually(found, "the summary found by the query")
        assert hit["metadata"]["summary"] == source["summary"]
        assert 0 < hit["score"] <= 1.0

        reply = await run.api.delete(f"/api/obj/analysis/{analysis_id}", scene.author)
        assert reply.status == 200, reply.body
        source = (await run.api.get(f"/api/sources/{scene.obj_id}", scene.reader)).data
        assert source["summary"] == "Earlier manual note."
        assert [e["summary"] for e in source["summary_history"]] == ["Earlier manual note."]

        assert await query(run, scene.reader, q="helium transient dwarf host") == []
        assert run.summaries.embedder is not None
        await run.summaries.embedder.reconcile()
        (hit,) = await query(run, scene.reader, q="earlier manual note")
        assert hit["metadata"]["summary"] == "Earlier manual note."


async def _all_text(resources: Resources) -> str:
    """Every row of the tables an LLM key could leak into, as text."""
    dump: list[str] = []
    async with resources.sessions() as session:
        for table in ("obj_analyses", "dispatch_attempts", "outbox", "objs", "users"):
            rows = await session.execute(text(f"SELECT * FROM {table}"))
            dump.extend(str(tuple(row)) for row in rows)
    return "\n".join(dump)


async def test_user_key_reaches_only_the_llm(
    resources: Resources,
    scene: Scene,
    accounts: Accounts,
    gateway_port: int,
    llm: FakeOpenAI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with pipeline(resources, gateway_port) as run:
        reply = await run.api.call(
            "PUT", "/api/internal/profile/llm_key", scene.author, {"api_key": USER_KEY}
        )
        assert reply.status == 200
        await comment(run, scene, "Red nova candidate")
        service_id = await register_summarizer(run, accounts, scene)
        analysis_id = await start_summary(run, scene, service_id)
        done = await wait_for_status(resources, analysis_id, ["completed", "failure"], within=15)
        assert done.status == "completed", done.status_message

        (chat,) = llm.requests_to("/v1/chat/completions")
        assert chat.headers["Authorization"] == f"Bearer {USER_KEY}"

        inputs = await resources.artifacts.read(done.artifacts["inputs"])
        assert USER_KEY not in inputs.decode()
        assert "openai_api_key" not in json.loads(inputs)["inputs"]["analysis_parameters"]
        assert USER_KEY not in await _all_text(resources)
        responses = [
            await run.api.get(f"/api/obj/analysis/{analysis_id}?includeAnalysisData=true", u)
            for u in (scene.author, scene.reader)
        ]
        responses.append(await run.api.get(f"/api/obj/{scene.obj_id}/analysis", scene.author))
        responses.append(await run.api.get("/api/obj/analysis", scene.author))
        responses.append(
            await run.api.get(f"/api/sources/{scene.obj_id}?includeAnalyses=true", scene.author)
        )
        responses.append(
            await run.api.get(f"/api/obj/analysis/{analysis_id}/attempts", scene.author)
        )
        responses.append(await run.api.get("/api/internal/profile", scene.author))
        for response in responses:
            assert response.status == 200, response.body
            assert USER_KEY not in json.dumps(response.body)
    assert USER_KEY not in caplog.text


async def test_invalid_user_key_fails_with_actionable_message(
    resources: Resources, scene: Scene, accounts: Accounts, gateway_port: int
) -> None:
    async with pipeline(resources, gateway_port) as run:
        reply = await run.api.call(
            "PUT", "/api/internal/profile/llm_key", scene.author, {"api_key": BAD_KEY}
        )
        assert reply.status == 200
        await comment(run, scene, "Anything")
        service_id = await register_summarizer(run, accounts, scene)
        analysis_id = await start_summary(run, scene, service_id)
        done = await wait_for_status(resources, analysis_id, ["completed", "failure"], within=15)

        reply = await run.api.get(f"/api/obj/analysis/{analysis_id}", scene.author)
    assert done.status == "failure"
    assert reply.data["status_message"] == (
        "The LLM API rejected the API key (401). Set a valid key with PUT "
        "/api/internal/profile/llm_key or ask the operator to set SKYHOOK_LLM_API_KEY."
    )
    assert BAD_KEY not in json.dumps(reply.body)
    assert (await load_obj(resources, scene.obj_id)).summary is None


async def test_skyhook_summary_service_process_over_rabbitmq(
    resources: Resources, scene: Scene, applied: list[Envelope]
) -> None:
    """``skyhook summary-service`` as the composition root runs it, consuming from RabbitMQ:
    an event published twice is applied once."""
    row = await finished_analysis(resources, scene, {"summary": "Via RabbitMQ."})
    # The service's relay would publish what other tests left in the shared database's outbox.
    async with resources.sessions.begin() as session:
        await session.execute(delete(OutboxMessage))
    async with isolated_rabbit(AMQP_URL) as make_bus:
        # The service's own bus has RabbitBus's default delivery limit: the same queue arguments.
        publisher = make_bus(delivery_limit=RabbitBus(AMQP_URL).delivery_limit)
        await publisher.start()
        # Declared by the service too: declared here so the test's cleanup deletes them.
        await declare_summary_queue(publisher)
        await declare_trigger_queue(publisher)
        port = free_port()
        settings = resources.settings.model_copy(
            update={"amqp_url": AMQP_URL, "bus_prefix": publisher.prefix, "port": port}
        )
        process = asyncio.create_task(run_service("summary-service", settings))
        try:
            async with aiohttp.ClientSession() as http:

                async def healthy() -> bool:
                    try:
                        async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                            return response.status == 200
                    except aiohttp.ClientConnectionError:
                        return False

                await eventually(healthy, "the summary service to be healthy", within=15)
            envelope = completed(row)
            await publisher.publish([envelope, envelope])
            await eventually(
                lambda: _history_length(resources, scene.obj_id, 1), "one summary", within=15
            )
            # The duplicate is consumed too: the service handled both deliveries.
            await eventually(lambda: len(applied) == 2, "the service to handle 2 deliveries")
        finally:
            process.cancel()
            await asyncio.gather(process, return_exceptions=True)
        obj = await load_obj(resources, scene.obj_id)
        assert [e["summary"] for e in obj.summary_history] == ["Via RabbitMQ."]
        assert await publisher.list_dead_letters() == []


async def test_embeddings_off_without_a_model(resources: Resources) -> None:
    settings = resources.settings.model_copy(update={"embeddings_model": None})
    async with running_summary_service(dataclasses.replace(resources, settings=settings)) as s:
        assert s.embedder is None
