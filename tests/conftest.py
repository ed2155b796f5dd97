"""Shared fixtures: real PostgreSQL and SQLite databases, migrated once per test session.

PostgreSQL comes from ``SKYHOOK_TEST_PG_URL`` (default: the local server); each test session
gets a fresh database that is dropped at the end. Tests that take ``backend`` run on both.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from shared.db.migrate import upgrade
from shared.runtime.resources import Resources, open_resources
from shared.runtime.settings import Settings, load_settings
from tests.support.api import Accounts, ApiClient, api_client

PG_ADMIN_URL = os.environ.get(
    "SKYHOOK_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
AMQP_URL = os.environ.get("SKYHOOK_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def _dsn(database: str) -> str:
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{database}"


async def _pg_admin(sql: str) -> None:
    connection = await asyncpg.connect(PG_ADMIN_URL.replace("+asyncpg", ""))
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    name = f"skyhook_test_{uuid.uuid4().hex[:10]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    url = _dsn(name).replace("postgresql://", "postgresql+asyncpg://")
    upgrade(url)
    yield url
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def sqlite_database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("sqlite") / "skyhook.db"
    url = f"sqlite+aiosqlite:///{path}"
    upgrade(url)
    return url


@pytest.fixture(params=["postgresql", "sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(request: pytest.FixtureRequest) -> str:
    """PostgreSQL unless the test also takes ``backend`` (then both)."""
    chosen = (
        request.getfixturevalue("backend") if "backend" in request.fixturenames else "postgresql"
    )
    return request.getfixturevalue(f"{'pg' if chosen == 'postgresql' else 'sqlite'}_database_url")


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return load_settings(
        None,
        database_url=database_url,
        amqp_url="memory://",
        artifact_dir=tmp_path / "artifacts",
        public_url="http://127.0.0.1:5000",
        secret_key="test-secret-key",
        allow_loopback_urls=True,
        allow_private_urls=True,
    )


@pytest.fixture
async def resources(settings: Settings) -> AsyncIterator[Resources]:
    async with open_resources(settings) as opened:
        yield opened


@pytest.fixture
async def api(resources: Resources) -> AsyncIterator[ApiClient]:
    async with api_client(resources) as client:
        yield client


@pytest.fixture
def accounts(resources: Resources) -> Accounts:
    return Accounts(resources)
