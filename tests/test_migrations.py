"""Alembic migrations: up, down and up again on fresh databases, and no drift from the models."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
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
from sqlalchemy import insert, inspect, select, text
from sqlalchemy.engine import Connection

from shared.db.migrate import alembic_config, downgrade, upgrade, upgrade_async
from shared.db.models import (
    AnalysisArtifact,
    AnalysisService,
    ArtifactBlob,
    Base,
    Obj,
    ObjAnalysis,
    User,
    table_of,
)
from shared.db.session import create_engine
from shared.db.types import utcnow
from shared.domain.analysis_data import load_analysis_data
from shared.domain.artifacts import ArtifactMissing
from shared.runtime.resources import open_resources
from shared.runtime.settings import load_settings
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


def test_no_index_is_the_leading_part_of_another(fresh_url: str) -> None:
    """A plain index whose columns begin another index's serves no look-up the longer one
    does not, and costs an entry for every row written (dispatch_attempts had one until
    0009). Unique ones are kept: they say something the longer index does not."""
    upgrade(fresh_url)

    def column_lists(connection: Connection, table: str) -> dict[str, tuple[list[str], bool]]:
        inspector = inspect(connection)
        keys = {
            str(index["name"]): ([str(c) for c in index["column_names"]], bool(index["unique"]))
            for index in inspector.get_indexes(table)
        }
        for constraint in inspector.get_unique_constraints(table):
            keys[str(constraint["name"])] = (list(constraint["column_names"]), True)
        return keys

    def redundant(connection: Connection) -> list[tuple[str, str, str]]:
        found = []
        for table in inspect(connection).get_table_names():
            keys = column_lists(connection, table)
            for name, (columns, unique) in keys.items():
                found += [
                    (table, name, other)
                    for other, (longer, _) in keys.items()
                    if not unique
                    and len(longer) > len(columns)
                    and longer[: len(columns)] == columns
                ]
        return found

    assert _on_connection(fresh_url, redundant) == []


# What a running analysis's transitions change (claimed, inputs stored, accepted, retried).
CHANGED_WHILE_RUNNING = {
    "status",
    "status_message",
    "last_activity",
    "modified",
    "dispatch_attempts_count",
    "next_attempt_at",
    "input_hash",
    "artifacts",
}


def test_no_index_of_the_analyses_holds_a_column_that_changes_while_one_runs(
    fresh_url: str,
) -> None:
    """Then PostgreSQL writes those updates as HOT updates, beside the row, instead of an
    entry in every index of the table per update (and the cap's count has no old versions
    to walk)."""
    upgrade(fresh_url)

    def indexed(connection: Connection) -> dict[str, set[str]]:
        found = {}
        for index in inspect(connection).get_indexes("obj_analyses"):
            where = " ".join(
                str(v) for k, v in index.get("dialect_options", {}).items() if k.endswith("_where")
            )
            named = {str(c) for c in index["column_names"]}
            named |= {c for c in CHANGED_WHILE_RUNNING if c in where}
            found[str(index["name"])] = named
        return found

    columns = _on_connection(fresh_url, indexed)
    assert "ix_obj_analyses_running" in columns
    assert {
        name: c & CHANGED_WHILE_RUNNING for name, c in columns.items() if c & CHANGED_WHILE_RUNNING
    } == {}


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


# --- 0002: monotonic ids -----------------------------------------------------------------------

INTEGER_ID_TABLES = {
    name
    for name, table in Base.metadata.tables.items()
    if [c.name for c in table.primary_key.columns] == ["id"] and table.c.id.type.python_type is int
}


def _table_sql(url: str) -> dict[str, str]:
    def read(connection: Connection) -> dict[str, str]:
        rows = connection.execute(text("SELECT name, sql FROM sqlite_master WHERE type='table'"))
        return {name: sql for name, sql in rows}

    return _on_connection(url, read)


def _run_sql(url: str, *statements: str) -> list[Any]:
    """Runs the statements in one transaction (foreign keys on); the last one's rows."""

    def run(connection: Connection) -> list[Any]:
        result: list[Any] = []
        for statement in statements:
            rows = connection.execute(text(statement))
            result = list(rows) if rows.returns_rows else []
        connection.commit()
        return result

    return _on_connection(url, run)


def test_every_integer_id_table_gets_autoincrement_on_sqlite(fresh_sqlite_url: str) -> None:
    upgrade(fresh_sqlite_url)
    assert {"users", "obj_analyses", "dispatch_attempts", "outbox"} <= INTEGER_ID_TABLES
    schema = _table_sql(fresh_sqlite_url)
    assert {t for t in INTEGER_ID_TABLES if "AUTOINCREMENT" not in schema[t]} == set()
    assert "AUTOINCREMENT" not in schema["group_users"]


def _seed_0001(url: str) -> None:
    """Rows as an existing database has them: a group with members and an analysis whose
    newest rows were deleted (their ids would be handed out again)."""
    now = "'2026-01-01 00:00:00.000000'"
    _run_sql(
        url,
        f"INSERT INTO groups (id, name, created_at, modified) VALUES (1, 'g1', {now}, {now}),"
        f" (2, 'g2', {now}, {now}), (3, 'g3', {now}, {now})",
        "INSERT INTO users (id, username, is_admin, acls, preferences, created_at, modified)"
        f" VALUES (7, 'ann', 0, '[]', '{{}}', {now}, {now}), (8, 'bob', 0, '[]', '{{}}', {now},"
        f" {now})",
        "INSERT INTO group_users (group_id, user_id, admin) VALUES (1, 7, 0), (2, 7, 1), (2, 8, 0)",
        "DELETE FROM groups WHERE id = 3",
    )


def test_the_migration_keeps_rows_and_never_reuses_an_id_on_an_existing_sqlite_database(
    fresh_sqlite_url: str,
) -> None:
    url = fresh_sqlite_url
    upgrade(url, "0001")
    _seed_0001(url)
    assert "AUTOINCREMENT" not in _table_sql(url)["groups"]

    upgrade(url, "0002")
    assert "AUTOINCREMENT" in _table_sql(url)["groups"]
    assert _run_sql(url, "SELECT id, name FROM groups ORDER BY id") == [(1, "g1"), (2, "g2")]
    assert _run_sql(url, "SELECT id, username FROM users ORDER BY id") == [(7, "ann"), (8, "bob")]
    # The rows that reference the rebuilt tables are all there (nothing cascaded).
    assert _run_sql(url, "SELECT group_id, user_id FROM group_users ORDER BY 1, 2") == [
        (1, 7),
        (2, 7),
        (2, 8),
    ]
    assert _run_sql(url, "PRAGMA foreign_key_check") == []
    assert [i for i in _run_sql(url, "PRAGMA index_list(groups)") if i[1] == "ix_groups_created_at"]

    now = "'2026-01-02 00:00:00.000000'"
    new_id = _run_sql(
        url,
        "DELETE FROM groups WHERE id = 2",
        f"INSERT INTO groups (name, created_at, modified) VALUES ('g4', {now}, {now})",
        "SELECT id FROM groups WHERE name = 'g4'",
    )
    assert new_id == [(3,)]  # above every id the table held since the migration
    # Foreign keys are enforced again after the migration: deleting group 2 cascaded.
    assert _run_sql(url, "SELECT group_id, user_id FROM group_users ORDER BY 1, 2") == [(1, 7)]

    downgrade(url, "0001")
    assert "AUTOINCREMENT" not in _table_sql(url)["groups"]
    assert _run_sql(url, "SELECT id FROM groups ORDER BY id") == [(1,), (3,)]
    assert _run_sql(url, "SELECT group_id, user_id FROM group_users") == [(1, 7)]
    upgrade(url)
    assert current_revision(url) == head_revision(url)
    assert model_drift(url) == []


def test_the_in_process_upgrade_also_keeps_referencing_rows(fresh_sqlite_url: str) -> None:
    """``skyhook run`` migrates inside one engine transaction (upgrade_async)."""
    url = fresh_sqlite_url
    upgrade(url, "0001")
    _seed_0001(url)
    asyncio.run(upgrade_async(url))
    assert "AUTOINCREMENT" in _table_sql(url)["users"]
    assert len(_run_sql(url, "SELECT * FROM group_users")) == 3
    assert _run_sql(url, "PRAGMA foreign_keys") == [(1,)]


# --- 0005: artifacts move into the database ----------------------------------------------------


def _file_ref(unique_id: str, name: str, data: bytes, media_type: str) -> dict[str, Any]:
    return {
        "name": name,
        "path": f"{unique_id}/{name}",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "media_type": media_type,
    }


def _seed_0004_analyses(url: str, manifests: dict[str, dict[str, Any]]) -> dict[str, int]:
    """A user, a source, a service and one completed analysis per manifest (by unique_id)."""

    def seed(connection: Connection) -> dict[str, int]:
        user_id = connection.execute(
            insert(table_of(User)).values(username="migrated").returning(table_of(User).c.id)
        ).scalar_one()
        connection.execute(insert(table_of(Obj)).values(id="ZTF20migrate", ra=1.0, dec=2.0))
        service_id = connection.execute(
            insert(table_of(AnalysisService))
            .values(
                name="old-fitter",
                display_name="Old fitter",
                url="http://127.0.0.1:9/fit",
                authentication_type="none",
                analysis_type="lightcurve_fitting",
            )
            .returning(table_of(AnalysisService).c.id)
        ).scalar_one()
        ids = {}
        for unique_id, manifest in manifests.items():
            ids[unique_id] = connection.execute(
                insert(table_of(ObjAnalysis))
                .values(
                    unique_id=unique_id,
                    obj_id="ZTF20migrate",
                    author_id=user_id,
                    analysis_service_id=service_id,
                    token_hash=hashlib.sha256(unique_id.encode()).hexdigest(),
                    status="completed",
                    invalid_after=utcnow(),
                    artifacts=manifest,
                    data_summary={"model_name": "salt3"},
                )
                .returning(table_of(ObjAnalysis).c.id)
            ).scalar_one()
        connection.commit()
        return ids

    return dict(_on_connection(url, seed))


def test_0010_stamps_finished_at_on_the_analyses_already_finished(fresh_url: str) -> None:
    upgrade(fresh_url, "0009")
    statuses = ("completed", "queued", "failure", "pending", "cancelled", "dispatching")
    ids = _seed_0004_analyses(fresh_url, {str(uuid.uuid4()): {} for _ in statuses})

    def set_statuses(connection: Connection) -> None:
        for analysis_id, status in zip(ids.values(), statuses, strict=True):
            connection.execute(
                text("UPDATE obj_analyses SET status = :status WHERE id = :id"),
                {"status": status, "id": analysis_id},
            )
        connection.commit()

    _on_connection(fresh_url, set_statuses)
    upgrade(fresh_url)

    def stamped(connection: Connection) -> dict[str, bool]:
        rows = connection.execute(text("SELECT status, finished_at FROM obj_analyses"))
        return {status: finished_at is not None for status, finished_at in rows}

    assert _on_connection(fresh_url, stamped) == {
        "completed": True,
        "failure": True,
        "cancelled": True,
        "queued": False,
        "pending": False,
        "dispatching": False,
    }


def test_0005_imports_the_artifact_files_into_the_database(
    fresh_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    upgrade(fresh_url, "0004")
    folder = tmp_path / "old-artifacts"
    png = b"\x89PNG\r\n\x1a\n" + os.urandom(3000)
    results = b'{"summary":"a type Ia supernova"}'
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    for unique_id in (first, second):  # the same plot twice: one blob after the import
        (folder / unique_id).mkdir(parents=True)
        (folder / unique_id / "ab12-plot_0.png").write_bytes(png)
    (folder / first / "ab12-results.json").write_bytes(results)
    edited = _file_ref(first, "ab12-extra.json", b'{"a":1}', "application/json")
    (folder / first / "ab12-extra.json").write_bytes(b'{"a":2}')  # changed after it was stored
    plot = {**_file_ref(first, "ab12-plot_0.png", png, "image/png"), "format": "png"}
    manifests: dict[str, dict[str, Any]] = {
        first: {
            "plots": [plot],
            "results": {**_file_ref(first, "ab12-results.json", results, "application/json")},
            "extra": edited,
            "posterior_samples": _file_ref(first, "gone.json", b"[]", "application/json"),
            "corner": {"refused": "Cannot draw a corner plot", "status": 422},
        },
        second: {"plots": [{**plot, "path": f"{second}/ab12-plot_0.png"}]},
    }
    ids = _seed_0004_analyses(fresh_url, manifests)

    monkeypatch.setenv("SKYHOOK_ARTIFACT_DIR", str(folder))
    caplog.set_level(logging.INFO, logger="skyhook.migrations")
    upgrade(fresh_url)
    assert current_revision(fresh_url) == head_revision(fresh_url)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("posterior_samples (" in w and "not found" in w for w in warnings), warnings
    assert any("extra changed on disk" in w for w in warnings), warnings

    async def read_back() -> None:
        settings = load_settings(
            None, database_url=fresh_url, amqp_url="memory://", secret_key="test-secret-key"
        )
        async with open_resources(settings) as resources:
            async with resources.sessions() as session:
                rows = {row.unique_id: row for row in await session.scalars(select(ObjAnalysis))}
                links = (
                    await session.execute(
                        select(AnalysisArtifact.analysis_id, AnalysisArtifact.name)
                    )
                ).all()
                blobs = list(await session.scalars(select(ArtifactBlob.sha256)))
            store = resources.artifacts
            manifest = rows[first].artifacts
            assert await store.read(manifest["plots"][0]) == png
            assert await store.read(rows[second].artifacts["plots"][0]) == png
            assert await store.read(manifest["results"]) == results
            # The file as it was on disk; its ref now says so.
            assert await store.read(manifest["extra"]) == b'{"a":2}'
            assert manifest["extra"]["sha256"] == hashlib.sha256(b'{"a":2}').hexdigest()
            with pytest.raises(ArtifactMissing):
                await store.read(manifest["posterior_samples"])
            assert sorted(links) == sorted(
                [
                    (ids[first], "ab12-plot_0.png"),
                    (ids[first], "ab12-results.json"),
                    (ids[first], "ab12-extra.json"),
                    (ids[second], "ab12-plot_0.png"),
                ]
            )
            assert len(blobs) == 3  # plot (shared), results, extra
            # What readers rebuild (includeAnalysisData) skips only the missing file.
            data = await load_analysis_data(store, rows[first])
            assert data["plots"] == [{"format": "png", "data": base64.b64encode(png).decode()}]
            assert data["results"] == {"format": "json", "data": json.loads(results)}
            assert "posterior_samples" not in data and data["a"] == 2

    asyncio.run(read_back())

    downgrade(fresh_url, "0004")
    assert {"artifact_blobs", "analysis_artifacts"}.isdisjoint(tables(fresh_url))


def test_0005_stops_when_the_artifact_folder_is_not_there(
    fresh_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files to import and no folder at all (a volume not mounted): nothing changes, so the
    import can still happen; an existing (here empty) folder lets the upgrade go on."""
    upgrade(fresh_url, "0004")
    unique_id = str(uuid.uuid4())
    ref = _file_ref(unique_id, "results.json", b"{}", "application/json")
    _seed_0004_analyses(fresh_url, {unique_id: {"results": ref}})
    monkeypatch.setenv("SKYHOOK_ARTIFACT_DIR", str(tmp_path / "not-mounted"))
    with pytest.raises(RuntimeError, match=r"artifact folder .* does not exist"):
        upgrade(fresh_url)
    assert current_revision(fresh_url) == "0004"
    assert {"artifact_blobs", "analysis_artifacts"}.isdisjoint(tables(fresh_url))

    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("SKYHOOK_ARTIFACT_DIR", str(tmp_path / "empty"))
    upgrade(fresh_url)
    assert current_revision(fresh_url) == head_revision(fresh_url)
