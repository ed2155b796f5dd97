"""Starting an analysis: POST /api/obj/{obj_id}/analysis/{analysis_service_id}."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest

from shared.db.types import utcnow
from shared.runtime.resources import Resources
from shared.security.secrets import hash_token
from tests.support.analyses import (
    count_analyses,
    data_url,
    insert_analysis,
    load_analysis,
    make_obj,
    make_service,
    outbox_payloads,
    published,
)
from tests.support.api import Accounts, ApiClient, TestUser, api_client
from tests.support.artifacts import artifact_names, stored_artifacts

pytestmark = pytest.mark.usefixtures("backend")

RUN = ("Run Analyses",)
PARAMETERS = {
    "source": ["nugent-sn2p", "salt3"],
    "fix_z": ["True", "False"],
    "z": {"type": "number", "required": "True", "description": "redshift"},
    "n_walkers": {"type": "integer"},
    "label": {"type": "string"},
    "verbose": {"type": "boolean", "required": False},
    "template": {"type": "file"},
}
VALID = {"source": "salt3", "fix_z": "False", "z": 0.1}


class World:
    """One group with a runner, a source and a fitter shared with the group."""

    def __init__(self, resources: Resources, accounts: Accounts) -> None:
        self.resources = resources
        self.accounts = accounts

    async def build(self, **service_fields: Any) -> World:
        self.group = await self.accounts.group()
        self.user = await self.accounts.user(acls=RUN, groups=(self.group,))
        self.obj_id = await make_obj(self.resources, [self.group])
        fields = {"optional_analysis_parameters": json.dumps(PARAMETERS), **service_fields}
        self.service = await make_service(self.resources, [self.group], **fields)
        return self

    def path(self, obj_id: str | None = None, service_id: Any = None) -> str:
        service = self.service.id if service_id is None else service_id
        return f"/api/obj/{obj_id or self.obj_id}/analysis/{service}"


@pytest.fixture
async def world(resources: Resources, accounts: Accounts) -> World:
    return await World(resources, accounts).build()


async def test_start_queues_the_row_and_its_outbox_message_together(
    api: ApiClient, resources: Resources, world: World
) -> None:
    other = await world.accounts.group()
    await world.accounts.user(groups=(other,))
    body = {
        "analysis_parameters": {**VALID, "correct_extinction": True},
        "show_plots": True,
        "input_filters": {
            "photometry": {"filters": [" ztfg ", "", "ztfr"], "instruments": [3, "7"]}
        },
        "group_ids": [world.group.id],
    }
    before = utcnow()
    reply = await api.post(world.path(), world.user, body)
    assert reply.status == 200, reply.body
    analysis_id = reply.data["id"]
    assert reply.data == {"id": analysis_id}

    row = await load_analysis(resources, analysis_id)
    assert row is not None and row.status == "queued"
    assert (row.obj_id, row.author_id, row.analysis_service_id) == (
        world.obj_id,
        world.user.id,
        world.service.id,
    )
    assert row.analysis_parameters == {**VALID, "correct_extinction": True}
    assert row.input_filters == {"photometry": {"filters": ["ztfg", "ztfr"], "instruments": [3, 7]}}
    assert (row.show_parameters, row.show_plots, row.show_corner) == (False, True, False)
    assert [g.id for g in row.groups] == [world.group.id]
    assert row.token_hash == hash_token(resources.callback_tokens.token_for(row.unique_id))
    expected_expiry = before + timedelta(seconds=world.service.timeout)
    assert abs((row.invalid_after - expected_expiry).total_seconds()) < 5

    messages = await outbox_payloads(resources, "analysis.requested")
    assert {"analysis_id": analysis_id} in messages
    envelope = await published(resources, "analysis.requested", analysis_id)
    assert envelope.payload == {"analysis_id": analysis_id}


async def test_group_ids_default_to_all_of_the_callers_groups(
    api: ApiClient, resources: Resources, world: World
) -> None:
    second = await world.accounts.group()
    user = await world.accounts.user(acls=RUN, groups=(world.group, second))
    reply = await api.post(world.path(), user, {"analysis_parameters": VALID})
    assert reply.status == 200, reply.body
    row = await load_analysis(resources, reply.data["id"])
    assert row is not None and sorted(g.id for g in row.groups) == sorted(
        [world.group.id, second.id]
    )


async def test_starts_arriving_together_each_see_only_the_services_shared_with_them(
    api: ApiClient, resources: Resources, world: World
) -> None:
    """Services are read in batches: concurrent starts of several callers each get the answer
    their own groups give (the service, or SkyPortal's 403), never a neighbour's."""
    elsewhere = await world.accounts.group()
    stranger = await world.accounts.user(acls=RUN, groups=(elsewhere,))
    admin = await world.accounts.user(admin=True, groups=(world.group,))
    theirs = await make_service(resources, [elsewhere])
    public_obj = await make_obj(resources, [world.group, elsewhere])
    ok = {"analysis_parameters": VALID}
    attempts = [
        (world.user, world.service.id, ok, 200),
        (stranger, world.service.id, ok, 403),
        (admin, world.service.id, ok, 200),
        (stranger, theirs.id, {}, 200),
        (world.user, theirs.id, {}, 403),
    ] * 3
    replies = await asyncio.gather(
        *(
            api.post(world.path(public_obj, service_id), user, body)
            for user, service_id, body, _ in attempts
        )
    )
    assert [r.status for r in replies] == [status for *_, status in attempts], [
        r.body for r in replies
    ]
    for (_, service_id, _, status), reply in zip(attempts, replies, strict=True):
        if status == 403:
            assert reply.message == f"Could not access Analysis Service ID: {service_id}."
        else:
            row = await load_analysis(resources, reply.data["id"])
            assert row is not None and row.analysis_service_id == service_id


async def _refused(
    api: ApiClient, path: str, user: TestUser, body: Any, status: int, message: str, **kw: Any
) -> None:
    reply = await api.post(path, user, body, **kw)
    assert (reply.status, reply.body["status"]) == (status, "error"), reply.body
    assert reply.message.startswith(message), reply.message


async def test_every_refusal_has_skyportals_status_and_message_and_changes_nothing(
    api: ApiClient, resources: Resources, world: World
) -> None:
    accounts = world.accounts
    elsewhere = await accounts.group()
    hidden_service = await make_service(resources, [elsewhere])
    upload_only = await make_service(resources, [world.group], upload_only=True)
    disabled = await make_service(resources, [world.group], enabled=False)
    hidden_obj = await make_obj(resources, [elsewhere])
    viewer = await accounts.user(groups=(world.group,))
    ok = {"analysis_parameters": VALID}
    before = await count_analyses(resources)
    outbox_before = len(await outbox_payloads(resources, "analysis.requested"))

    raw = {"data": b"{not json", "headers": {"Content-Type": "application/json"}}
    await _refused(api, world.path(), world.user, None, 400, "Error parsing JSON: ", **raw)
    await _refused(
        api, world.path(service_id="abc"), world.user, ok, 400, "Invalid analysis_service_id: abc"
    )
    await _refused(
        api,
        world.path(service_id=hidden_service.id),
        world.user,
        ok,
        403,
        f"Could not access Analysis Service ID: {hidden_service.id}.",
    )
    await _refused(
        api,
        world.path(service_id=999999),
        world.user,
        ok,
        403,
        "Could not access Analysis Service ID: 999999.",
    )
    await _refused(
        api,
        world.path(service_id=upload_only.id),
        world.user,
        ok,
        403,
        f"Analysis Service ID: {upload_only.id} is of type upload_only. "
        "Please use the analysis_upload endpoint.",
    )
    await _refused(
        api,
        world.path(service_id=disabled.id),
        world.user,
        ok,
        403,
        f"Analysis Service ID: {disabled.id} is disabled",
    )
    unknown = {"analysis_parameters": {**VALID, "nope": 1}}
    await _refused(api, world.path(), world.user, unknown, 400, "Invalid analysis_parameters: {")
    bad_groups = {**ok, "group_ids": [elsewhere.id]}
    await _refused(
        api,
        world.path(),
        world.user,
        bad_groups,
        400,
        f"Cannot find one or more groups with IDs: [{elsewhere.id}].",
    )
    await _refused(
        api,
        world.path(obj_id=hidden_obj),
        world.user,
        ok,
        404,
        f"Error posting analysis: Obj {hidden_obj} not found",
    )
    await _refused(
        api,
        world.path(obj_id="NoSuchObj"),
        world.user,
        ok,
        404,
        "Error posting analysis: Obj NoSuchObj not found",
    )
    await _refused(api, world.path(), viewer, ok, 401, "This endpoint requires the ACL: Run")

    assert await count_analyses(resources) == before
    assert len(await outbox_payloads(resources, "analysis.requested")) == outbox_before


@pytest.mark.parametrize(
    ("parameters", "named"),
    [
        ({**VALID, "source": "nope"}, "'source' must be one of ['nugent-sn2p', 'salt3']"),
        ({"source": "salt3", "fix_z": "True"}, "missing required parameter 'z'"),
        ({**VALID, "z": None}, "missing required parameter 'z'"),
        ({**VALID, "z": "abc"}, "'z' must be a number"),
        ({**VALID, "z": [1]}, "'z' must be a number"),
        ({**VALID, "n_walkers": 1.5}, "'n_walkers' must be an integer"),
        ({**VALID, "n_walkers": True}, "'n_walkers' must be an integer"),
        ({**VALID, "label": 5}, "'label' must be a string"),
        ({**VALID, "verbose": "maybe"}, "'verbose' must be a boolean"),
        ({**VALID, "template": "plain text"}, "'template' must be a file"),
        ({**VALID, "correct_extinction": "sometimes"}, "'correct_extinction' must be a boolean"),
        ([1, 2], "must be a JSON object"),
    ],
)
async def test_parameter_values_types_and_required_ones_are_checked(
    api: ApiClient, resources: Resources, world: World, parameters: Any, named: str
) -> None:
    before = await count_analyses(resources)
    reply = await api.post(world.path(), world.user, {"analysis_parameters": parameters})
    assert reply.status == 400, reply.body
    assert reply.message.startswith("Invalid analysis_parameters:"), reply.message
    assert named in reply.message
    assert await count_analyses(resources) == before


@pytest.mark.parametrize(
    "extra",
    [
        {"z": "0.25", "n_walkers": "32", "verbose": "true", "label": "run 1"},
        {"z": 1, "n_walkers": 8.0, "verbose": False, "fix_z": "True"},
        {"correct_extinction": "False"},
    ],
)
async def test_well_typed_parameters_are_accepted_as_sent(
    api: ApiClient, resources: Resources, world: World, extra: dict[str, Any]
) -> None:
    parameters = {**VALID, **extra}
    reply = await api.post(world.path(), world.user, {"analysis_parameters": parameters})
    assert reply.status == 200, reply.body
    row = await load_analysis(resources, reply.data["id"])
    assert row is not None and row.analysis_parameters == parameters


async def test_unknown_groups_get_skyportals_exact_message(
    api: ApiClient, resources: Resources, world: World
) -> None:
    elsewhere = await world.accounts.group()
    given = [elsewhere.id, world.group.id, 987654321]
    body = {"analysis_parameters": VALID, "group_ids": given}
    reply = await api.post(world.path(), world.user, body)
    assert reply.status == 400
    assert reply.message == f"Cannot find one or more groups with IDs: {given}."


async def test_a_deleted_analysis_id_is_never_given_to_a_new_one(
    api: ApiClient, resources: Resources, world: World
) -> None:
    """An old link or a client's saved id must not silently point at someone else's result."""
    body = {"analysis_parameters": VALID}
    first = await api.post(world.path(), world.user, body)
    assert first.status == 200, first.body
    deleted = await api.delete(f"/api/obj/analysis/{first.data['id']}", world.user)
    assert deleted.status == 200, deleted.body
    second = await api.post(world.path(), world.user, body)
    assert second.status == 200, second.body
    assert second.data["id"] > first.data["id"]
    gone = await api.get(f"/api/obj/analysis/{first.data['id']}", world.user)
    assert gone.status == 403


async def test_skyportals_first_example_starts_without_a_body(
    api: ApiClient, resources: Resources, world: World
) -> None:
    """SkyPortal's documented ``requests.post(url, headers=header)``: no body at all."""
    service = await make_service(
        resources,
        [world.group],
        optional_analysis_parameters=json.dumps({"rrl_type": ["ab", "c", "d", "e"]}),
    )
    path = world.path(service_id=service.id)
    headers = {"Authorization": f"token {world.user.token}"}
    async with api.test_client.post(path, headers=headers) as response:
        assert response.status == 200, await response.text()
        analysis_id = (await response.json())["data"]["id"]
    row = await load_analysis(resources, analysis_id)
    assert row is not None and row.status == "queued"
    assert row.analysis_parameters == {}


@pytest.mark.parametrize(
    "parameters",
    [None, {}, {"source": "salt3"}, {"fix_z": "False"}],
)
async def test_choice_parameters_are_optional_and_omitted_ones_are_not_sent(
    api: ApiClient, resources: Resources, accounts: Accounts, parameters: Any
) -> None:
    world = await World(resources, accounts).build(
        optional_analysis_parameters=json.dumps(
            {"source": ["nugent-sn2p", "salt3"], "fix_z": ["True", "False"]}
        )
    )
    body = {} if parameters is None else {"analysis_parameters": parameters}
    reply = await api.post(world.path(), world.user, body)
    assert reply.status == 200, reply.body
    row = await load_analysis(resources, reply.data["id"])
    assert row is not None and row.analysis_parameters == (parameters or {})


@pytest.mark.parametrize(
    ("declared", "given", "sent"),
    [
        (["True", "False"], True, "True"),
        (["True", "False"], "true", "True"),
        (["True", "False"], "TRUE", "True"),
        (["True", "False"], False, "False"),
        (["True", "False"], "false", "False"),
        ([True, False], "True", True),
        ([True, False], "false", False),
        (["true", "false"], "False", "false"),
    ],
)
async def test_boolean_choices_match_whatever_their_spelling(
    api: ApiClient,
    resources: Resources,
    accounts: Accounts,
    declared: list[Any],
    given: Any,
    sent: Any,
) -> None:
    world = await World(resources, accounts).build(
        optional_analysis_parameters=json.dumps({"fix_z": declared})
    )
    reply = await api.post(world.path(), world.user, {"analysis_parameters": {"fix_z": given}})
    assert reply.status == 200, reply.body
    row = await load_analysis(resources, reply.data["id"])
    assert row is not None and row.analysis_parameters == {"fix_z": sent}


async def test_a_value_outside_the_choices_is_refused(
    api: ApiClient, resources: Resources, accounts: Accounts
) -> None:
    world = await World(resources, accounts).build(
        optional_analysis_parameters=json.dumps({"fix_z": ["True", "False"]})
    )
    before = await count_analyses(resources)
    reply = await api.post(world.path(), world.user, {"analysis_parameters": {"fix_z": "maybe"}})
    assert reply.status == 400
    assert reply.message == (
        "Invalid analysis_parameters: 'fix_z' must be one of ['True', 'False'], got 'maybe'."
    )
    assert await count_analyses(resources) == before


async def test_file_parameters_are_stored_by_name_and_sent_in_full(
    api: ApiClient, resources: Resources, world: World
) -> None:
    template = data_url(b"wavelength,flux\n4000,1.0\n", "template.csv", "text/csv")
    parameters = {**VALID, "template": template}
    reply = await api.post(world.path(), world.user, {"analysis_parameters": parameters})
    assert reply.status == 200, reply.body
    row = await load_analysis(resources, reply.data["id"])
    assert row is not None
    assert row.analysis_parameters == {**VALID, "template": "template.csv"}
    ref = row.artifacts["request_parameters"]
    assert json.loads(await resources.artifacts.read(ref)) == parameters
    assert await artifact_names(resources, row.unique_id) == ["request_parameters.json"]
    shown = await api.get(f"/api/obj/analysis/{row.id}", world.user)
    assert shown.status == 200 and "base64" not in json.dumps(shown.body)
    assert "path" not in shown.data["artifacts"]["request_parameters"]


async def test_without_file_parameters_no_request_artifact_is_written(
    api: ApiClient, resources: Resources, world: World
) -> None:
    reply = await api.post(world.path(), world.user, {"analysis_parameters": VALID})
    row = await load_analysis(resources, reply.data["id"])
    assert row is not None and row.artifacts == {}
    assert await artifact_names(resources, row.unique_id) == []


async def test_secret_parameters_are_refused_even_when_declared(
    api: ApiClient, resources: Resources, world: World
) -> None:
    declared = {"openai_api_key": {"type": "string"}}
    service = await make_service(
        resources, [world.group], is_summary=True, optional_analysis_parameters=declared
    )
    path = world.path(service_id=service.id)
    reply = await api.post(path, world.user, {"analysis_parameters": {"openai_api_key": "sk-1"}})
    assert reply.status == 400 and "'openai_api_key' must not be sent" in reply.message
    assert "sk-1" not in reply.message

    started = await api.post(path, world.user, {})
    assert started.status == 200, started.body
    row = await load_analysis(resources, started.data["id"])
    assert row is not None and row.analysis_parameters == {}


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ("photometry", "Invalid input_filters: must be an object"),
        ({"spectra": {}}, "Invalid input_filters: unknown key(s) ['spectra']"),
        ({"photometry": ["ztfg"]}, "Invalid input_filters: photometry must be an object"),
        ({"photometry": {"filters": "ztfg"}}, "photometry.filters must be a list of strings"),
        ({"photometry": {"filters": [1]}}, "photometry.filters must be a list of strings"),
        ({"photometry": {"instruments": ["ztf"]}}, "photometry.instruments must be a list of"),
        ({"photometry": {"instruments": [-1]}}, "photometry.instruments must be a list of"),
        ({"photometry": {"instruments": [True]}}, "photometry.instruments must be a list of"),
        ({"photometry": {"instruments": 3}}, "photometry.instruments must be a list."),
        ({"photometry": {"bands": []}}, "unknown photometry key(s) ['bands']"),
    ],
)
async def test_bad_input_filters_are_refused(
    api: ApiClient, resources: Resources, world: World, filters: Any, message: str
) -> None:
    before = await count_analyses(resources)
    body = {"analysis_parameters": VALID, "input_filters": filters}
    reply = await api.post(world.path(), world.user, body)
    assert reply.status == 400 and message in reply.message, reply.body
    assert await count_analyses(resources) == before


async def test_input_filters_keep_integer_and_numeric_string_instruments(
    api: ApiClient, resources: Resources, world: World
) -> None:
    filters = {"photometry": {"instruments": [" 12", 4, 12], "instruments_by_name": ["x"]}}
    reply = await api.post(
        world.path(), world.user, {"analysis_parameters": VALID, "input_filters": filters}
    )
    assert reply.status == 200, reply.body
    row = await load_analysis(resources, reply.data["id"])
    assert row is not None and row.input_filters == {"photometry": {"instruments": [12, 4]}}


@pytest.mark.parametrize("name", ["show_parameters", "show_plots", "show_corner"])
async def test_show_flags_must_be_booleans(api: ApiClient, world: World, name: str) -> None:
    reply = await api.post(world.path(), world.user, {"analysis_parameters": VALID, name: "yes"})
    assert (reply.status, reply.message) == (400, f"Invalid {name}: must be true or false")


async def test_only_obj_resources_have_analyses(api: ApiClient, world: World) -> None:
    for path in (
        f"/api/candidate/{world.obj_id}/analysis/{world.service.id}",
        f"/api/source/{world.obj_id}/analysis/{world.service.id}",
    ):
        reply = await api.post(path, world.user, {"analysis_parameters": VALID})
        assert reply.status in (404, 405), (path, reply.status)


async def test_the_cap_counts_completed_and_in_flight_analyses_only(
    resources: Resources, world: World
) -> None:
    resources.settings.max_analyses_per_obj_per_user = 3
    async with api_client(resources) as api:  # built with the cap above
        common: dict[str, Any] = {
            "obj_id": world.obj_id,
            "service_id": world.service.id,
            "author_id": world.user.id,
        }
        for status in ("completed", "pending", "failure", "timed_out", "cancelled"):
            await insert_analysis(resources, status=status, **common)
        body = {"analysis_parameters": VALID}
        first = await api.post(world.path(), world.user, body)
        assert first.status == 200, first.body
        refused = await api.post(world.path(), world.user, body)
        assert refused.status == 403
        assert refused.message == (
            "You have reached the maximum number of analyses for this object. "
            "Please delete some analyses before attempting to start more analyses."
        )
        # The cap is per user and per object.
        colleague = await world.accounts.user(acls=RUN, groups=(world.group,))
        assert (await api.post(world.path(), colleague, body)).status == 200
        other_obj = await make_obj(resources, [world.group])
        assert (await api.post(world.path(obj_id=other_obj), world.user, body)).status == 200


@pytest.mark.parametrize("already_completed", [1, 3])
async def test_concurrent_starts_never_exceed_the_cap(
    resources: Resources, world: World, already_completed: int
) -> None:
    cap = 3
    resources.settings.max_analyses_per_obj_per_user = cap
    async with api_client(resources) as api:  # built with the cap above
        common: dict[str, Any] = {
            "obj_id": world.obj_id,
            "service_id": world.service.id,
            "author_id": world.user.id,
        }
        for _ in range(already_completed):
            await insert_analysis(resources, status="completed", **common)
        outbox_before = len(await outbox_payloads(resources, "analysis.requested"))

        body = {"analysis_parameters": VALID}
        replies = await asyncio.gather(
            *(api.post(world.path(), world.user, body) for _ in range(10))
        )

        statuses = sorted(r.status for r in replies)
        allowed = cap - already_completed
        assert statuses == [200] * allowed + [403] * (10 - allowed), [r.body for r in replies]
        queued = await count_analyses(resources, obj_id=world.obj_id, status="queued")
        assert queued == allowed
        outbox_after = len(await outbox_payloads(resources, "analysis.requested"))
        assert outbox_after - outbox_before == allowed


async def test_starting_on_a_summary_service_puts_no_key_in_the_parameters(
    api: ApiClient, resources: Resources, world: World
) -> None:
    summary = await make_service(resources, [world.group], is_summary=True)
    reply = await api.post(world.path(service_id=summary.id), world.user, None)
    assert reply.status == 200, reply.body
    row = await load_analysis(resources, reply.data["id"])
    assert row is not None and row.analysis_parameters == {}
    assert "key" not in json.dumps(row.analysis_parameters).lower()


async def test_a_refused_start_leaves_no_request_parameters_behind(
    resources: Resources, world: World
) -> None:
    resources.settings.max_analyses_per_obj_per_user = 1
    async with api_client(resources) as api:  # built with the cap above
        await insert_analysis(
            resources, obj_id=world.obj_id, service_id=world.service.id, author_id=world.user.id
        )
        before = await stored_artifacts(resources)
        template = data_url(b"flux\n1.0\n", "template.csv", "text/csv")
        body = {"analysis_parameters": {**VALID, "template": template}}
        reply = await api.post(world.path(), world.user, body)
        assert reply.status == 403
        assert await stored_artifacts(resources) == before
