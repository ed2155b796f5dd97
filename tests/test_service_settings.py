"""Each service reads only the settings it needs.

The SN fitter and the summarizer have no database URL, bus or secret key in their settings
models and start with only their own environment; a shared environment or config file with
every service's settings does not stop them. The platform services run alone refuse the
development secret key before they open anything; ``skyhook run`` keeps using it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from shared.runtime.settings import (
    DEV_SECRET_KEY,
    OWN_SECRET_KEY_MESSAGE,
    SERVICE_SETTINGS,
    CommonSettings,
    Settings,
    SettingsError,
    SNFitterSettings,
    SummarizerSettings,
    load_settings,
)
from skyhook.processes import event_loop_factory
from tests.support.embedded import EmbeddedRun, skyhook_env
from tests.support.polling import eventually
from tests.support.ports import free_port

PLATFORM = ("gateway", "dispatcher", "webhook-receiver", "summary-service")
# Settings only the platform may hold.
PLATFORM_ONLY = {
    "database_url",
    "amqp_url",
    "bus_prefix",
    "secret_key",
    "previous_secret_keys",
    "db_pool_size",
    "db_max_overflow",
    "db_connection_budget",
    "artifact_dir",
    "public_url",
}
# Everything a compose env file sets for every service (PLATFORM_ONLY among it).
SHARED_ENV = {
    "SKYHOOK_DATABASE_URL": "postgresql+asyncpg://skyhook:pw@postgres:5432/skyhook",
    "SKYHOOK_AMQP_URL": "amqp://skyhook:pw@rabbitmq:5672/",
    "SKYHOOK_SECRET_KEY": "a-deployment-secret",
    "SKYHOOK_PUBLIC_URL": "http://webhook-receiver:5001",
    "SKYHOOK_DISPATCH_TIMEOUT_SECONDS": "12",
    "SKYHOOK_SN_FITTER_WORKERS": "1",
    "SKYHOOK_WORKERS": "4",
    "SKYHOOK_HOST": "0.0.0.0",
}


def _only_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name in [k for k in os.environ if k.startswith("SKYHOOK_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("model", [SNFitterSettings, SummarizerSettings])
def test_standalone_models_have_no_database_bus_or_secret_key(
    model: type[CommonSettings],
) -> None:
    assert not PLATFORM_ONLY & set(model.model_fields)
    assert not any("secret" in name or "database" in name for name in model.model_fields)
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        model(database_url="postgresql://db/skyhook")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        model(secret_key="x")  # type: ignore[call-arg]


def test_each_command_has_its_model() -> None:
    assert {name: SERVICE_SETTINGS[name] for name in PLATFORM} == dict.fromkeys(PLATFORM, Settings)
    assert SERVICE_SETTINGS["sn-fitter"] is SNFitterSettings
    assert SERVICE_SETTINGS["summarizer"] is SummarizerSettings
    assert PLATFORM_ONLY <= set(Settings.model_fields)
    # The full model still serves `skyhook run` and every platform service.
    assert set(SummarizerSettings.model_fields) <= set(Settings.model_fields)


def test_standalone_models_load_from_their_own_env_only(monkeypatch: pytest.MonkeyPatch) -> None:
    _only_env(monkeypatch, {"SKYHOOK_PORT": "7003", "SKYHOOK_LLM_MODEL": "small"})
    summarizer = load_settings(None, model=SummarizerSettings)
    assert (summarizer.port, summarizer.llm_model) == (7003, "small")
    _only_env(monkeypatch, {"SKYHOOK_PORT": "6802"})
    assert load_settings(None, model=SNFitterSettings).port == 6802


def test_standalone_models_ignore_other_services_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _only_env(monkeypatch, SHARED_ENV)
    fitter = load_settings(None, model=SNFitterSettings)
    assert fitter.host == "0.0.0.0"
    assert "secret" not in fitter.model_dump_json() and "postgres" not in repr(fitter)
    # A config file for the whole deployment: other services' keys are dropped...
    config = tmp_path / "skyhook.json"
    config.write_text(json.dumps({"database_url": "sqlite:///x.db", "llm_model": "from-file"}))
    _only_env(monkeypatch, {})
    summarizer = load_settings(config, model=SummarizerSettings)
    assert summarizer.llm_model == "from-file"
    # ...but a key no service knows is still an error, as for the platform.
    config.write_text(json.dumps({"llm_modle": "typo"}))
    with pytest.raises(SettingsError, match="SKYHOOK_LLM_MODLE: unknown setting"):
        load_settings(config, model=SummarizerSettings)


def test_connection_budget_is_divided_among_workers() -> None:
    assert Settings().pool_limits() == (5, 5)  # unset: SKYHOOK_DB_POOL_SIZE/MAX_OVERFLOW
    assert Settings(db_pool_size=3, db_max_overflow=1).pool_limits() == (3, 1)
    assert Settings(db_connection_budget=20, workers=2).pool_limits() == (5, 5)
    assert Settings(db_connection_budget=9, workers=2).pool_limits() == (2, 2)
    assert Settings(db_connection_budget=3, workers=1).pool_limits() == (2, 1)
    assert Settings(db_connection_budget=2, workers=8).pool_limits() == (1, 0)  # at least 1
    with pytest.raises(ValueError):
        Settings(db_connection_budget=0)


def test_event_loop_setting() -> None:
    uvloop = pytest.importorskip("uvloop")
    assert event_loop_factory("auto") is uvloop.new_event_loop
    assert event_loop_factory("asyncio") is None
    with pytest.raises(ValueError):
        Settings(event_loop="trio")


# --- the commands --------------------------------------------------------------------------


def _service(tmp_path: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "skyhook", *argv],
        cwd=tmp_path,
        env=skyhook_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("service", PLATFORM)
@pytest.mark.parametrize("key", [None, DEV_SECRET_KEY])
def test_platform_services_refuse_the_development_key(
    tmp_path: Path, service: str, key: str | None
) -> None:
    port = free_port()
    env = {"SKYHOOK_PORT": str(port)} | ({"SKYHOOK_SECRET_KEY": key} if key else {})
    # A database and broker that do not exist: the refusal comes before either is opened.
    env |= {
        "SKYHOOK_DATABASE_URL": "postgresql+asyncpg://nobody@127.0.0.1:1/none",
        "SKYHOOK_AMQP_URL": "amqp://nobody:x@127.0.0.1:1/",
    }
    result = _service(tmp_path, service, **env)
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"skyhook: {OWN_SECRET_KEY_MESSAGE}\n"
    assert "SKYHOOK_SECRET_KEY" in result.stderr
    assert result.stdout == "" and not (tmp_path / "var").exists()


def test_the_gateway_workers_refuse_the_development_key_too(tmp_path: Path) -> None:
    result = _service(tmp_path, "gateway", "--workers", "2", "--port", str(free_port()))
    assert result.returncode == 2
    assert result.stderr == f"skyhook: {OWN_SECRET_KEY_MESSAGE}\n"


async def test_the_summarizer_starts_with_only_its_own_env(tmp_path: Path) -> None:
    summarizer = EmbeddedRun(
        tmp_path, command=("summarizer",), settings={"SKYHOOK_LLM_MODEL": "small"}
    ).start()
    try:
        await summarizer.wait_ready()
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{summarizer.url}/healthz") as response:
                assert response.status == 200
        summarizer.signal(signal.SIGTERM)
        assert await summarizer.wait_exit() == 0, summarizer.log()[-4000:]
    finally:
        summarizer.kill()
    assert "Traceback" not in summarizer.log()
    assert not (tmp_path / "var").exists()  # no database was touched


async def test_the_sn_fitter_starts_with_only_its_own_env_among_every_services(
    tmp_path: Path,
) -> None:
    """The shared env file of a deployment (database, bus, secret key...) does not stop it."""
    env = {**SHARED_ENV, "SKYHOOK_HOST": "127.0.0.1", "SKYHOOK_SN_FITTER_WARM_UP": "false"}
    fitter = EmbeddedRun(tmp_path, command=("sn-fitter",), settings=env).start()
    try:
        await fitter.wait_ready()
        fitter.signal(signal.SIGTERM)
        assert await fitter.wait_exit() == 0, fitter.log()[-4000:]
    finally:
        fitter.kill()
    assert "Traceback" not in fitter.log()


async def test_skyhook_run_keeps_the_development_key(tmp_path: Path) -> None:
    run = EmbeddedRun(tmp_path).start()
    try:
        await run.wait_ready()

        async def answers() -> bool:
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{run.url}/healthz") as response:
                    return response.status == 200

        await eventually(answers, "skyhook run to answer", within=120, every=0.1)
        run.signal(signal.SIGTERM)
        assert await run.wait_exit() == 0, run.log()[-4000:]
    finally:
        run.kill()
