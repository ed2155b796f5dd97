"""Starts use the gateway's cached copies of the caller and the service, and never past a
change: whatever changes them (another gateway, the CLI, SQL), the next start is decided on
what the database holds now."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text

from shared.runtime.resources import Resources
from tests.support.analyses import count_analyses, make_obj, make_service
from tests.support.api import Accounts, ApiClient, TestUser, api_client
from tests.support.statements import statements_on

pytestmark = pytest.mark.usefixtures("backend")

RUN = ("Run Analyses",)
START: dict[str, Any] = {"analysis_parameters": {}}


class World:
    """A runner in a group that shares a source and a service, and a second gateway on the
    same database (another process, as far as the first gateway's caches know)."""

    async def build(self, resources: Resources, accounts: Accounts, other: ApiClient) -> World:
        self.resources, self.other_gateway = resources, other
        self.group = await accounts.group()
        self.user = await accounts.user(acls=RUN, groups=(self.group,))
        self.obj_id = await make_obj(resources, [self.group])
        self.service = await make_service(resources, [self.group])
        self.path = f"/api/obj/{self.obj_id}/analysis/{self.service.id}"
        return self

    async def sql(self, statement: str, **parameters: Any) -> None:
        async with self.resources.engine.begin() as connection:
            await connection.execute(text(statement), parameters)


@pytest.fixture
async def other_gateway(resources: Resources) -> AsyncIterator[ApiClient]:
    async with api_client(resources) as client:
        yield client


@pytest.fixture
async def world(resources: Resources, accounts: Accounts, other_gateway: ApiClient) -> World:
    return await World().build(resources, accounts, other_gateway)


async def _started(api: ApiClient, world: World, user: TestUser | None = None) -> int:
    return int((await api.ok("POST", world.path, user or world.user, json=START))["id"])


async def _refused_and_nothing_created(
    api: ApiClient, world: World, status: int, message: str
) -> None:
    before = await count_analyses(world.resources)
    reply = await api.post(world.path, world.user, json=START)
    assert (reply.status, reply.message) == (status, message), reply.body
    assert await count_analyses(world.resources) == before


async def test_a_repeated_start_reads_neither_the_token_nor_the_service(
    api: ApiClient, world: World
) -> None:
    await _started(api, world)
    with statements_on(world.resources.engine) as seen:
        await _started(api, world)
    assert not [s for s in seen if "FROM tokens" in s or "FROM analysis_services" in s], seen
    assert any("access_versions" in s for s in seen), "the write checks the copies"


async def test_a_token_deleted_elsewhere_is_refused_at_once(api: ApiClient, world: World) -> None:
    await _started(api, world)
    await world.sql("DELETE FROM tokens WHERE user_id = :user", user=world.user.id)
    await _refused_and_nothing_created(api, world, 401, "Invalid token")


async def test_an_acl_taken_away_elsewhere_is_refused_at_once(api: ApiClient, world: World) -> None:
    await _started(api, world)
    await world.sql("UPDATE users SET acls = '[]' WHERE id = :user", user=world.user.id)
    await _refused_and_nothing_created(
        api, world, 401, "This endpoint requires the ACL: Run Analyses"
    )


async def test_leaving_the_group_is_seen_at_once(api: ApiClient, world: World) -> None:
    await _started(api, world)
    await world.sql("DELETE FROM group_users WHERE user_id = :user", user=world.user.id)
    await _refused_and_nothing_created(
        api, world, 403, f"Could not access Analysis Service ID: {world.service.id}."
    )


async def test_a_service_disabled_by_another_gateway_is_refused_at_once(
    api: ApiClient, accounts: Accounts, world: World
) -> None:
    await _started(api, world)
    manager = await accounts.user(acls=("Manage Analysis Services",), groups=(world.group,))
    patch = {"enabled": False}
    await world.other_gateway.ok(
        "PATCH", f"/api/analysis_service/{world.service.id}", manager, json=patch
    )
    await _refused_and_nothing_created(
        api,
        world,
        403,
        f"Analysis Service ID: {world.service.id} is disabled; it cannot be used until a "
        "service manager enables it again.",
    )


async def test_a_service_no_longer_shared_is_refused_at_once(api: ApiClient, world: World) -> None:
    await _started(api, world)
    await world.sql(
        "DELETE FROM analysis_service_groups WHERE analysis_service_id = :service",
        service=world.service.id,
    )
    await _refused_and_nothing_created(
        api, world, 403, f"Could not access Analysis Service ID: {world.service.id}."
    )


async def test_a_stale_copy_is_replaced_and_the_next_start_is_cached_again(
    api: ApiClient, accounts: Accounts, world: World
) -> None:
    """A change elsewhere that still allows the start: it is created (read afresh), and the
    start after it again reads nothing but the counters."""
    await _started(api, world)
    await accounts.user(groups=(world.group,))  # a new member: the counter moves
    first = await _started(api, world)
    with statements_on(world.resources.engine) as seen:
        second = await _started(api, world)
    assert second > first
    assert not [s for s in seen if "FROM tokens" in s], seen


async def _counters(world: World) -> dict[str, int]:
    async with world.resources.engine.connect() as connection:
        rows = await connection.execute(text("SELECT name, version FROM access_versions"))
        return {name: version for name, version in rows}


async def test_deleting_a_group_moves_the_principals_counter_through_the_cascade(
    world: World,
) -> None:
    before = await _counters(world)
    await world.sql("DELETE FROM groups WHERE id = :group", group=world.group.id)
    after = await _counters(world)
    assert after["principals"] > before["principals"]
    assert after["services"] > before["services"]  # its sharing rows went too


async def test_changes_that_touch_no_right_leave_the_counters_alone(world: World) -> None:
    before = await _counters(world)
    await world.sql(
        'UPDATE users SET preferences = \'{"theme": "dark"}\' WHERE id = :user',
        user=world.user.id,
    )
    await world.sql("UPDATE objs SET redshift = 0.1 WHERE id = :obj", obj=world.obj_id)
    assert await _counters(world) == before
