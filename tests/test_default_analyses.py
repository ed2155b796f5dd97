"""Default analyses: the API (SkyPortal's fields and messages, who may do what) and the trigger
rules (threshold, daily limit under concurrency, duplicate events, unreadable sources, disabled
services, deleted defaults), on SQLite and PostgreSQL. The whole path through the bus is in
tests/e2e/test_default_analyses.py."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from dispatcher.triggers import DefaultAnalysisTriggers
from shared.bus.base import Envelope
from shared.db.models import (
    DefaultAnalysis,
    ObjAnalysis,
    OutboxMessage,
    PendingPhotometryTrigger,
)
from shared.domain import default_analyses
from shared.domain.events import ClassificationAdded
from shared.runtime.resources import Resources, analysis_creator
from tests.support.analyses import ids, make_obj, make_service
from tests.support.api import Accounts, ApiClient, TestUser
from tests.support.pipeline import add_classification

MANAGE = ("Manage Analysis Services", "Run Analyses")
IA_FILTER = {"classifications": [{"name": "Ia", "probability": 0.8}]}


def _path(service_id: int, default_id: int | None = None) -> str:
    base = f"/api/analysis_service/{service_id}/default_analysis"
    return base if default_id is None else f"{base}/{default_id}"


async def _create(api: ApiClient, user: TestUser, service_id: int, **body: Any) -> int:
    reply = await api.post(_path(service_id), user, {"source_filter": IA_FILTER, **body})
    assert reply.status == 200, reply.body
    return int(reply.data["id"])


async def _analyses_of(resources: Resources, default_id: int) -> list[ObjAnalysis]:
    async with resources.sessions() as session:
        rows = await session.scalars(
            select(ObjAnalysis).where(ObjAnalysis.default_analysis_id == default_id)
        )
        return list(rows)


async def _pending(resources: Resources, default_id: int) -> int:
    async with resources.sessions() as session:
        count = select(func.count()).where(
            PendingPhotometryTrigger.default_analysis_id == default_id
        )
        return int(await session.scalar(count) or 0)


async def _default(resources: Resources, default_id: int) -> DefaultAnalysis:
    async with resources.sessions() as session:
        found = await session.get(DefaultAnalysis, default_id)
        assert found is not None
        return found


async def test_create_read_patch_delete_with_skyportal_fields_and_stats(
    backend: str, api: ApiClient, accounts: Accounts, resources: Resources
) -> None:
    group = await accounts.group()
    manager = await accounts.user(acls=MANAGE, groups=(group,))
    service = await make_service(
        resources, [group], optional_analysis_parameters={"fix_z": ["True", "False"]}
    )
    default_id = await _create(
        api,
        manager,
        service.id,
        default_analysis_parameters='{"fix_z": "True"}',
        daily_limit=3,
        group_ids=[group.id],
        show_corner=False,
    )
    read = await api.get(_path(service.id, default_id), manager)
    assert read.status == 200
    data = read.data
    assert data["default_analysis_parameters"] == {"fix_z": "True"}
    assert data["source_filter"] == IA_FILTER
    assert (data["show_parameters"], data["show_plots"], data["show_corner"]) == (
        True,
        True,
        False,
    )
    assert data["stats"] == {"daily_limit": 3, "daily_count": 0, "last_run": None}
    assert [g["id"] for g in data["groups"]] == [group.id]
    assert data["author"]["username"] == manager.username

    patched = await api.patch(_path(service.id, default_id), manager, {"daily_limit": 7})
    assert patched.status == 200, patched.body
    listed = await api.get(_path(service.id), manager)
    assert [(d["id"], d["stats"]["daily_limit"]) for d in listed.data] == [(default_id, 7)]

    assert (await api.delete(_path(service.id, default_id), manager)).status == 200
    gone = await api.get(_path(service.id, default_id), manager)
    assert (gone.status, gone.message) == (400, f"Could not load default analysis {default_id}")
    again = await api.delete(_path(service.id, default_id), manager)
    assert (again.status, again.message) == (400, f"Could not find default analysis {default_id}")


async def test_invalid_defaults_are_refused_with_skyportal_messages(
    backend: str, api: ApiClient, accounts: Accounts, resources: Resources
) -> None:
    group = await accounts.group()
    manager = await accounts.user(acls=MANAGE, groups=(group,))
    service = await make_service(resources, [group])
    cases: list[tuple[dict[str, Any], str]] = [
        ({"daily_limit": 0}, "Invalid daily_limit: 0. Must be between 1 and 1000"),
        ({"daily_limit": 1001}, "Invalid daily_limit: 1001. Must be between 1 and 1000"),
        (
            {"source_filter": {"group_id": "3"}},
            "Invalid source_filter. Key group_id must be a int.",
        ),
        ({"source_filter": {"color": "red"}}, "Invalid source_filter: ['color']"),
        ({"source_filter": {"classifications": "Ia"}}, "Value must be a list."),
        ({"default_analysis_parameters": {"nope": 1}}, "Invalid default_analysis_parameters"),
        ({"source_filter": {}}, "Invalid source_filter: it must name at least one"),
    ]
    for body, message in cases:
        reply = await api.post(_path(service.id), manager, {"source_filter": IA_FILTER, **body})
        assert reply.status == 400, (body, reply.body)
        assert message in reply.message, (body, reply.message)
    async with resources.sessions() as session:
        count = select(func.count(DefaultAnalysis.id)).where(
            DefaultAnalysis.analysis_service_id == service.id
        )
        assert await session.scalar(count) == 0


async def test_only_service_managers_change_defaults_and_members_read_them(
    backend: str, api: ApiClient, accounts: Accounts, resources: Resources
) -> None:
    group, other = await accounts.group(), await accounts.group()
    manager = await accounts.user(acls=MANAGE, groups=(group,))
    member = await accounts.user(acls=("Run Analyses",), groups=(group,))
    stranger = await accounts.user(acls=MANAGE, groups=(other,))
    service = await make_service(resources, [group])
    default_id = await _create(api, manager, service.id)

    refused = await api.post(_path(service.id), member, {"source_filter": IA_FILTER})
    assert refused.status == 401
    assert "Manage Analysis Services" in refused.message
    assert (
        await api.patch(_path(service.id, default_id), member, {"daily_limit": 2})
    ).status == 401
    assert (await api.delete(_path(service.id, default_id), member)).status == 401
    assert (await api.get(_path(service.id, default_id), member)).status == 200
    for call in (
        api.get(_path(service.id), stranger),
        api.post(_path(service.id), stranger, {"source_filter": IA_FILTER}),
        api.delete(_path(service.id, default_id), stranger),
    ):
        reply = await call
        assert (reply.status, reply.message) == (404, f"Analysis service {service.id} not found")
    assert (await _default(resources, default_id)).daily_limit == 10


async def test_adding_a_classification_writes_its_event_in_the_same_transaction(
    backend: str, api: ApiClient, accounts: Accounts, resources: Resources
) -> None:
    group = await accounts.group()
    user = await accounts.user(acls=("Upload Data",), groups=(group,))
    obj_id = await make_obj(resources, [group])
    body = {"obj_id": obj_id, "classification": "Ia", "probability": 0.95, "group_ids": [group.id]}
    reply = await api.post("/api/classification", user, body)
    assert reply.status == 200, reply.body
    async with resources.sessions() as session:
        rows = await session.scalars(
            select(OutboxMessage).where(OutboxMessage.routing_key == "classification.added")
        )
        payloads = [r.payload for r in rows if r.payload["obj_id"] == obj_id]
    assert payloads == [
        {
            "classification_id": reply.data["classification_id"],
            "obj_id": obj_id,
            "classification": "Ia",
            "probability": 0.95,
            "group_ids": [group.id],
        }
    ]


async def _scene(accounts: Accounts, resources: Resources, **default: Any) -> tuple[Any, ...]:
    group = await accounts.group()
    author = await accounts.user(acls=MANAGE, groups=(group,))
    service = await make_service(resources, [group])
    obj_id = await make_obj(resources, [group])
    async with resources.sessions.begin() as session:
        row = DefaultAnalysis(
            analysis_service_id=service.id,
            author_id=author.id,
            source_filter=default.pop("source_filter", IA_FILTER),
            daily_limit=default.pop("daily_limit", 10),
            **default,
        )
        session.add(row)
        await session.flush()
        default_id = row.id
    return group, author, service, obj_id, default_id


def _classified(obj_id: str, name: str, probability: float, group_ids: list[int]) -> Envelope:
    event = ClassificationAdded(
        classification_id=1,
        obj_id=obj_id,
        classification=name,
        probability=probability,
        group_ids=group_ids,
    )
    return Envelope(str(uuid.uuid4()), event.ROUTING_KEY, event.model_dump(mode="json"))


async def test_the_probability_threshold_decides_and_the_analysis_says_what_started_it(
    backend: str, accounts: Accounts, resources: Resources
) -> None:
    group, author, service, obj_id, default_id = await _scene(accounts, resources)
    triggers = DefaultAnalysisTriggers(resources)
    await triggers.handle_message(_classified(obj_id, "Ia", 0.79, ids([group])))
    await triggers.handle_message(_classified(obj_id, "II", 0.99, ids([group])))
    assert await _analyses_of(resources, default_id) == []
    await triggers.handle_message(_classified(obj_id, "Ia", 0.8, ids([group])))
    (analysis,) = await _analyses_of(resources, default_id)
    assert (analysis.status, analysis.author_id, analysis.obj_id) == ("queued", author.id, obj_id)
    assert analysis.trigger == "classification Ia (0.8)"
    assert analysis.analysis_service_id == service.id


async def test_the_same_event_delivered_twice_starts_one_analysis(
    backend: str, accounts: Accounts, resources: Resources
) -> None:
    group, _, _, obj_id, default_id = await _scene(accounts, resources)
    triggers = DefaultAnalysisTriggers(resources)
    envelope = _classified(obj_id, "Ia", 0.9, ids([group]))
    await triggers.handle_message(envelope)
    await triggers.handle_message(envelope)
    assert len(await _analyses_of(resources, default_id)) == 1


async def test_the_daily_limit_holds_when_triggers_arrive_at_once(
    backend: str, accounts: Accounts, resources: Resources
) -> None:
    group, _, _, _, default_id = await _scene(accounts, resources, daily_limit=4)
    objs = [await make_obj(resources, [group]) for _ in range(12)]
    default = await _default(resources, default_id)
    outcomes = await asyncio.gather(
        *(
            default_analyses.start_default(
                analysis_creator(resources),
                default,
                obj_id,
                event_id=str(uuid.uuid4()),
                trigger="test",
            )
            for obj_id in objs
        )
    )
    assert sorted(outcomes).count("started") == 4
    assert sorted(outcomes).count("limited:daily_limit") == 8
    assert len(await _analyses_of(resources, default_id)) == 4
    async with resources.sessions() as session:
        stored = await session.get(DefaultAnalysis, default_id)
        assert stored is not None
        stats = await default_analyses.stats_of(session, stored)
    assert stats["daily_count"] == 4
    assert stats["last_run"] is not None


async def test_an_author_who_cannot_read_the_source_or_the_classification_starts_nothing(
    backend: str, accounts: Accounts, resources: Resources
) -> None:
    _, _, _, readable_obj, default_id = await _scene(accounts, resources)
    elsewhere = await accounts.group()
    hidden_obj = await make_obj(resources, [elsewhere])
    default = await _default(resources, default_id)
    creator = analysis_creator(resources)
    hidden_source = await default_analyses.start_default(
        creator, default, hidden_obj, event_id=str(uuid.uuid4()), trigger="t"
    )
    hidden_classification = await default_analyses.start_default(
        creator,
        default,
        readable_obj,
        event_id=str(uuid.uuid4()),
        trigger="t",
        readable_group_ids=ids([elsewhere]),
    )
    assert hidden_source == "skipped:author_cannot_read"
    assert hidden_classification == "skipped:trigger_not_readable"
    assert await _analyses_of(resources, default_id) == []


async def test_disabled_services_and_deleted_defaults_trigger_nothing(
    backend: str, api: ApiClient, accounts: Accounts, resources: Resources
) -> None:
    group, author, service, obj_id, default_id = await _scene(accounts, resources)
    _, _, other_service, _, deleted_id = await _scene(accounts, resources)
    manager = TestUser(author.id, author.username, author.token)
    patched = await api.patch(f"/api/analysis_service/{service.id}", manager, {"enabled": False})
    assert patched.status == 200, patched.body
    async with resources.sessions.begin() as session:
        await session.delete(await session.get(DefaultAnalysis, deleted_id))
    await DefaultAnalysisTriggers(resources).handle_message(
        _classified(obj_id, "Ia", 0.99, ids([group]))
    )
    assert await _analyses_of(resources, default_id) == []
    async with resources.sessions() as session:
        started = await session.scalar(
            select(func.count(ObjAnalysis.id)).where(
                ObjAnalysis.analysis_service_id.in_([service.id, other_service.id])
            )
        )
    assert started == 0


async def test_photometry_starts_once_after_the_quiet_period_when_the_source_qualifies(
    backend: str, accounts: Accounts, resources: Resources
) -> None:
    source_filter = {"on_new_photometry": True, "classifications": [{"name": "Ia"}]}
    group, _, _, obj_id, default_id = await _scene(accounts, resources, source_filter=source_filter)
    creator, no_quiet = analysis_creator(resources), timedelta(0)
    # Other tests' defaults may share the database: count only what this default does.
    for _ in range(3):  # three batches in a row: one deadline, pushed back each time
        assert (
            await default_analyses.on_photometry_added(
                resources.sessions, no_quiet, str(uuid.uuid4()), obj_id
            )
            >= 1
        )
    assert await _pending(resources, default_id) == 1
    outcomes = await default_analyses.start_due_photometry_triggers(creator)
    assert "skipped:source_filter_not_met" in outcomes
    assert await _pending(resources, default_id) == 0
    assert await _analyses_of(resources, default_id) == []

    await add_classification(resources, obj_id, [group], classification="Ia", probability=0.5)
    await default_analyses.on_photometry_added(
        resources.sessions, no_quiet, str(uuid.uuid4()), obj_id
    )
    await default_analyses.start_due_photometry_triggers(creator)
    await default_analyses.start_due_photometry_triggers(creator)
    (analysis,) = await _analyses_of(resources, default_id)
    assert analysis.trigger == "new photometry"
