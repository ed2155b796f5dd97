"""Alembic migrations: up, down and up again on fresh databases, and no drift from the models."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from shared.db.migrate import alembic_config, downgrade, upgrade
from shared.db.models import Base
from shared.db.session import create_engine
from tests.conftest import _dsn, _pg_admin

MODEL_TABLES = set(Base.metadata.tables)


@pytest.fixture
def fresh_pg_url() -> Iterator[str]:
    name = f"skyhook_migrations_{uuid.uuid4().hex[:10]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield _dsn(name).replace("postgresql://", "postgresql+asyncpg://")
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def fresh_sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"


@pytest.fixture(params=["postgresql", "sqlite"])
def fresh_url(request: pytest.FixtureRequest) -> str:
    fixture = "fresh_pg_url" if request.param == "postgresql" else "fresh_sqlite_url"
    return str(request.getfixturevalue(fixture))


def _on_connection(url: str, work: Any) -> Any:
    async def run() -> Any:
        engine = create_engine(url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(work)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def tables(url: str) -> set[str]:
    return set(_on_connection(url, lambda c: inspect(c).get_table_names()))


def current_revision(url: str) -> str | None:
    def read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    return _on_connection(url, read)


def model_drift(url: str) -> list[Any]:
    def compare(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    return _on_connection(url, compare)


def head_revision(url: str) -> str:
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    assert head is not None
    return head


def test_upgrade_downgrade_upgrade_on_a_fresh_database(fresh_url: str) -> None:
    assert tables(fresh_url) == set()
    upgrade(fresh_url)
    assert tables(fresh_url) == MODEL_TABLES | {"alembic_version"}
    assert current_revision(fresh_url) == head_revision(fresh_url)

    downgrade(fresh_url, "base")
    assert tables(fresh_url) - {"alembic_version"} == set()
    assert current_revision(fresh_url) is None

    upgrade(fresh_url)
    assert tables(fresh_url) == MODEL_TABLES | {"alembic_version"}
    assert current_revision(fresh_url) == head_revision(fresh_url)
    # Upgrading an up-to-date database is a no-op.
    upgrade(fresh_url)
    assert current_revision(fresh_url) == head_revision(fresh_url)


def test_models_and_migrations_do_not_drift(fresh_url: str) -> None:
    upgrade(fresh_url)
    assert model_drift(fresh_url) == []


def test_drift_check_notices_a_difference(fresh_sqlite_url: str) -> None:
    """Guards the drift test itself: an extra column must show up as a difference."""
    upgrade(fresh_sqlite_url)

    def add_column(connection: Connection) -> None:
        connection.execute(text("ALTER TABLE groups ADD COLUMN stray INTEGER"))
        connection.commit()

    _on_connection(fresh_sqlite_url, add_column)
    drift = model_drift(fresh_sqlite_url)
    assert [(d[0], d[2], d[3].name) for d in drift] == [("remove_column", "groups", "stray")]


def test_skyhook_db_upgrade_command_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYHOOK_")}
    result = subprocess.run(
        [str(Path(sys.executable).with_name("skyhook")), "db", "upgrade"],
        env={**env, "SKYHOOK_DATABASE_URL": url},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "database at revision head" in result.stderr
    async_url = url.replace("sqlite:///", "sqlite+aiosqlite:///")
    assert tables(async_url) == MODEL_TABLES | {"alembic_version"}
    assert current_revision(async_url) == head_revision(async_url)
