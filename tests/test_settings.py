"""Settings from SKYHOOK_* variables and config files, and the messages for bad values."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from shared.runtime.settings import DEV_SECRET_KEY, SettingsError, load_settings

SKYHOOK = Path(sys.executable).with_name("skyhook")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("SKYHOOK_"):
            monkeypatch.delenv(key)


def settings_error(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError) as caught:
        load_settings(None)
    return str(caught.value)


def test_defaults_without_any_configuration() -> None:
    settings = load_settings(None)
    assert settings.database_url == "sqlite+aiosqlite:///./var/skyhook.db"
    assert settings.amqp_url == "memory://" and settings.uses_memory_bus
    assert settings.secret_key.get_secret_value() == DEV_SECRET_KEY
    assert settings.port == 5000 and settings.allowed_url_hosts == []
    assert settings.allow_private_urls is False and settings.allow_loopback_urls is False


def test_environment_variables_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "SKYHOOK_DATABASE_URL": "postgresql://skyhook@db:5432/skyhook",
        "SKYHOOK_AMQP_URL": "amqp://guest:guest@mq:5672/",
        "SKYHOOK_PUBLIC_URL": "https://skyhook.example.org/",
        "SKYHOOK_ARTIFACT_DIR": "/data/artifacts",
        "SKYHOOK_SECRET_KEY": "a-very-secret-key",
        "SKYHOOK_PREVIOUS_SECRET_KEYS": "old-1, old-2",
        "SKYHOOK_PORT": "8080",
        "SKYHOOK_ALLOW_PRIVATE_URLS": "true",
        "SKYHOOK_ALLOW_LOOPBACK_URLS": "0",
        "SKYHOOK_ALLOWED_URL_HOSTS": '["fitter.svc", "llm.svc"]',
        "SKYHOOK_DISPATCH_TIMEOUT_SECONDS": "12.5",
        "SKYHOOK_DISPATCH_RETRY_DELAYS_SECONDS": "1,2.5,10",
        "SKYHOOK_LOG_LEVEL": "debug",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings(None)
    assert settings.database_url == "postgresql+asyncpg://skyhook@db:5432/skyhook"
    assert not settings.uses_sqlite and not settings.uses_memory_bus
    assert settings.public_url == "https://skyhook.example.org"
    assert settings.artifact_dir == Path("/data/artifacts")
    assert settings.secret_key.get_secret_value() == "a-very-secret-key"
    assert [k.get_secret_value() for k in settings.previous_secret_keys] == ["old-1", "old-2"]
    assert settings.port == 8080
    assert (settings.allow_private_urls, settings.allow_loopback_urls) == (True, False)
    assert settings.allowed_url_hosts == ["fitter.svc", "llm.svc"]
    assert settings.dispatch_timeout_seconds == 12.5
    assert settings.dispatch_retry_delays_seconds == [1.0, 2.5, 10.0]
    assert settings.log_level == "DEBUG"
    # Secrets do not show in reprs (and so not in logged settings).
    assert "a-very-secret-key" not in repr(settings) and "old-1" not in repr(settings)


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_config_file_with_environment_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    values = {
        "database_url": "sqlite:///from-file.db",
        "port": 6000,
        "allowed_url_hosts": ["a.svc", "b.svc"],
        "allow_private_urls": True,
        "log_level": "warning",
    }
    path = tmp_path / f"skyhook{suffix}"
    if suffix == ".toml":
        path.write_text(
            'database_url = "sqlite:///from-file.db"\nport = 6000\n'
            'allowed_url_hosts = ["a.svc", "b.svc"]\nallow_private_urls = true\n'
            'log_level = "warning"\n'
        )
    else:
        path.write_text(json.dumps(values))
    settings = load_settings(path)
    assert settings.database_url == "sqlite+aiosqlite:///from-file.db"
    assert (settings.port, settings.allowed_url_hosts) == (6000, ["a.svc", "b.svc"])
    assert settings.allow_private_urls is True and settings.log_level == "WARNING"

    monkeypatch.setenv("SKYHOOK_PORT", "7000")
    monkeypatch.setenv("SKYHOOK_ALLOWED_URL_HOSTS", "c.svc")
    settings = load_settings(path)
    assert (settings.port, settings.allowed_url_hosts) == (7000, ["c.svc"])
    assert settings.database_url == "sqlite+aiosqlite:///from-file.db"

    # The file can be named by SKYHOOK_CONFIG_FILE; explicit overrides beat everything.
    monkeypatch.setenv("SKYHOOK_CONFIG_FILE", str(path))
    assert load_settings(None).allow_private_urls is True
    assert load_settings(None, port=7100).port == 7100


BAD_VALUES = [
    ("SKYHOOK_DATABASE_URL", "mysql://db/x", "must be a postgresql+asyncpg:// or sqlite"),
    ("SKYHOOK_AMQP_URL", "http://mq", "must be an amqp:// or amqps:// URL"),
    ("SKYHOOK_PUBLIC_URL", "skyhook.example.org", "must be an absolute http(s) URL"),
    ("SKYHOOK_PORT", "eighty", "Input should be a valid integer"),
    ("SKYHOOK_PORT", "70000", "Input should be less than or equal to 65535"),
    ("SKYHOOK_PORT", "0", "Input should be greater than or equal to 1"),
    ("SKYHOOK_ALLOW_PRIVATE_URLS", "maybe", "Input should be a valid boolean"),
    ("SKYHOOK_ALLOWED_URL_HOSTS", '["a.svc"', "must be a JSON list or comma-separated values"),
    ("SKYHOOK_PREVIOUS_SECRET_KEYS", "[1, ", "must be a JSON list or comma-separated values"),
    ("SKYHOOK_SECRET_KEY", "", "secret keys must not be empty"),
    ("SKYHOOK_DISPATCH_TIMEOUT_SECONDS", "-1", "Input should be greater than 0"),
    ("SKYHOOK_DISPATCH_RETRY_DELAYS_SECONDS", "1,-5", "item 2: Input should be greater than"),
    ("SKYHOOK_DISPATCH_RETRY_DELAYS_SECONDS", "1,soon", "item 2: Input should be a valid number"),
    ("SKYHOOK_MAX_ANALYSES_PER_OBJ_PER_USER", "0", "Input should be greater than or equal to 1"),
    ("SKYHOOK_WEBHOOK_MAX_BODY_BYTES", "10", "Input should be greater than or equal to 1024"),
    ("SKYHOOK_SWEEP_INTERVAL_SECONDS", "nan", "Input should be greater than 0"),
    ("SKYHOOK_LOG_LEVEL", "loud", "must be one of DEBUG, INFO, WARNING, ERROR"),
    ("SKYHOOK_PAGE_SIZE_MAX", "10", "must be at least SKYHOOK_PAGE_SIZE_DEFAULT (100)"),
]


@pytest.mark.parametrize(("variable", "value", "message"), BAD_VALUES)
def test_bad_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    text = settings_error(monkeypatch, **{variable: value})
    assert text.startswith("invalid settings:\n")
    assert f"  {variable}: {message}" in text, text


def test_every_bad_value_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = {"SKYHOOK_PORT": "x", "SKYHOOK_AMQP_URL": "kafka://", "SKYHOOK_LOG_LEVEL": "chatty"}
    text = settings_error(monkeypatch, **bad)
    lines = text.splitlines()[1:]
    assert sorted(line.split(":")[0].strip() for line in lines) == [
        "SKYHOOK_AMQP_URL",
        "SKYHOOK_LOG_LEVEL",
        "SKYHOOK_PORT",
    ]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.toml", "port = [", "is not valid"),
        ("bad.json", "{port: 1}", "is not valid"),
        ("list.json", "[1, 2]", "must hold a table/object of settings"),
        ("typo.toml", 'databse_url = "sqlite:///x.db"', "SKYHOOK_DATABSE_URL: unknown setting"),
        ("type.json", '{"port": "high"}', "SKYHOOK_PORT: Input should be a valid integer"),
    ],
)
def test_bad_config_files(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(SettingsError, match=re.escape(message)) as caught:
        load_settings(path)
    if "is not valid" in message or "table/object" in message:
        assert str(path) in str(caught.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"cannot read config file .*nowhere\.toml"):
        load_settings(tmp_path / "nowhere.toml")


def _run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SKYHOOK_")}
    return subprocess.run(
        [str(SKYHOOK), *args],
        env={**clean, **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_exits_2_with_the_message(tmp_path: Path) -> None:
    result = _run_cli(tmp_path, "db", "upgrade", SKYHOOK_DATABASE_URL="mysql://db/skyhook")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("skyhook: invalid settings:\n")
    assert "SKYHOOK_DATABASE_URL: must be a postgresql+asyncpg:// or sqlite" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not (tmp_path / "var").exists()

    result = _run_cli(tmp_path, "--config", "missing.toml", "token", "create", "--username", "x")
    assert result.returncode == 2
    assert "skyhook: cannot read config file missing.toml" in result.stderr
    assert "Traceback" not in result.stderr
