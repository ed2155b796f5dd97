"""What a newcomer meets first: the README's test command, and database connection budgets."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from sqlalchemy.pool import QueuePool

from shared.runtime.resources import open_resources
from shared.runtime.settings import Settings, SettingsError, load_settings
from tests.test_deploy import COMPOSE_SECRETS, STANDALONE, _compose_config

REPO = Path(__file__).resolve().parent.parent
POSTGRES_DEFAULT_MAX_CONNECTIONS = 100
# "Well inside" the server's limit: room for migrations, psql, monitoring and a rolling update.
BUDGET_SHARE = 0.8


# --- the test command ---------------------------------------------------------------------------


def _readme_test_command() -> str:
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- test-command -->\n```sh\n(.+?)\n```", text)
    assert block is not None, "README.md has no test command between the markers"
    return block.group(1)


def test_ci_runs_the_readme_test_command_which_is_the_test_script() -> None:
    # .ci/run's own extraction, run as CI runs it.
    extracted = subprocess.run(
        ["bash", "-c", "awk '/<!-- test-command -->/{getline; getline; print; exit}' README.md"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert extracted == _readme_test_command() == "./scripts/test"
    script = REPO / "scripts" / "test"
    assert script.stat().st_mode & 0o111, "scripts/test must be executable"
    assert subprocess.run(["bash", "-n", script], capture_output=True).returncode == 0
    assert 'bash -c "$test_command"' in (REPO / ".ci" / "run").read_text()


def _apt_packages(script: str) -> list[str]:
    array = re.search(r"^APT_PACKAGES=\((.*?)^\)", script, re.S | re.M)
    assert array is not None, "scripts/test lists its Debian packages in one APT_PACKAGES array"
    return [
        line.split("#")[0].strip()
        for line in array.group(1).splitlines()
        if line.split("#")[0].strip()
    ]


def test_the_test_script_sees_to_what_the_tests_need() -> None:
    script = (REPO / "scripts" / "test").read_text()
    # What the suite talks to or runs: the database, the broker and rabbitmqctl, and
    # docker-compose (tests/test_deploy.py).
    assert {"postgresql", "rabbitmq-server", "docker-compose"} <= set(_apt_packages(script))
    assert "rabbitmq_management" in script  # the operations tests read its API
    assert "sn_fitter.install_models" in script
    assert script.rstrip().endswith('exec .venv/bin/pytest -q "$@"')


def test_pytest_collects_tests_from_the_repository_root() -> None:
    # Exit code 5 (nothing collected) must not be what the README's command ends with.
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert collected.returncode == 0, collected.stdout[-2000:]
    counted = re.search(r"(\d+) tests? collected", collected.stdout)
    assert counted is not None
    assert int(counted.group(1)) > 500


# --- database connections -----------------------------------------------------------------------


def _per_process(env: dict[str, Any]) -> int:
    defaults = Settings()
    pool = int(env.get("SKYHOOK_DB_POOL_SIZE", defaults.db_pool_size))
    overflow = int(env.get("SKYHOOK_DB_MAX_OVERFLOW", defaults.db_max_overflow))
    return pool + overflow


def test_the_compose_deployment_fits_inside_postgres_default_connections(tmp_path: Path) -> None:
    result = _compose_config(tmp_path, COMPOSE_SECRETS)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    holders = {
        name: service
        for name, service in services.items()
        if name not in {"postgres", "rabbitmq", "migrate", *STANDALONE}
    }
    assert set(holders) == {"gateway", "dispatcher", "webhook-receiver", "summary-service"}
    total = sum(
        int(service.get("deploy", {}).get("replicas", 1)) * _per_process(service["environment"])
        for service in holders.values()
    )
    total += _per_process(services["migrate"]["environment"])  # while it runs
    assert total <= BUDGET_SHARE * POSTGRES_DEFAULT_MAX_CONNECTIONS, total


def test_the_helm_chart_fits_at_its_largest_size() -> None:
    values = yaml.safe_load((REPO / "deploy" / "helm" / "skyhook" / "values.yaml").read_text())
    per_pod = values["database"]["poolSize"] + values["database"]["maxOverflow"]
    services = values["services"]
    pods = (
        services["gateway"]["replicas"]
        + services["webhookReceiver"]["replicas"]
        + services["summaryService"]["replicas"]
        + values["autoscaling"]["dispatcher"]["maxReplicas"]
    )
    assert pods * per_pod <= BUDGET_SHARE * POSTGRES_DEFAULT_MAX_CONNECTIONS, pods * per_pod


async def test_the_pool_settings_bound_a_process_connections(
    pg_database_url: str, tmp_path: Path
) -> None:
    settings = load_settings(
        None,
        database_url=pg_database_url,
        artifact_dir=tmp_path,
        db_pool_size=2,
        db_max_overflow=1,
    )
    async with open_resources(settings) as resources:
        pool = cast(QueuePool, resources.engine.pool)  # PostgreSQL: a queue pool
        connections = [await resources.engine.connect() for _ in range(3)]
        try:
            assert (pool.size(), pool.checkedout(), pool.overflow()) == (2, 3, 1)
        finally:
            for connection in connections:
                await connection.close()


@pytest.mark.parametrize("variable", ["SKYHOOK_DB_POOL_SIZE", "SKYHOOK_DB_MAX_OVERFLOW"])
def test_a_bad_pool_setting_is_named(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, "-1")
    with pytest.raises(SettingsError) as caught:
        load_settings(None)
    assert f"{variable}: Input should be greater than or equal to" in str(caught.value)
