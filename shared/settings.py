"""Settings for every skyhook service, read from ``SKYHOOK_*`` environment variables.

An optional config file (TOML or JSON; ``SKYHOOK_CONFIG_FILE``) supplies defaults that the
environment overrides. Every value is validated at start; a bad value stops the process with
one message per offending setting.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET_KEY = "skyhook-dev-secret-key-change-me"


class SettingsError(Exception):
    """Raised with a human-readable message listing every invalid setting."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SKYHOOK_", extra="forbid")

    database_url: str = "sqlite+aiosqlite:///./var/skyhook.db"
    amqp_url: str = "memory://"
    public_url: str = "http://127.0.0.1:5000"
    artifact_dir: Path = Path("./var/artifacts")
    secret_key: SecretStr = SecretStr(DEV_SECRET_KEY)
    # Older keys still accepted for decryption, so SKYHOOK_SECRET_KEY can be rotated.
    previous_secret_keys: list[SecretStr] = Field(default_factory=list)

    host: str = "127.0.0.1"
    port: int = Field(5000, ge=1, le=65535)

    # Outbound network policy for analysis-service URLs.
    allow_private_urls: bool = False
    allow_loopback_urls: bool = False
    allowed_url_hosts: list[str] = Field(default_factory=list)

    # Analyses.
    max_analyses_per_obj_per_user: int = Field(50, ge=1)
    dispatch_timeout_seconds: float = Field(30.0, gt=0)
    dispatch_retry_delays_seconds: list[float] = Field(
        default_factory=lambda: [1.0, 5.0, 30.0, 120.0, 600.0]
    )
    webhook_max_body_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    sweep_interval_seconds: float = Field(5.0, gt=0)
    # Dispatcher: messages taken from the broker at once, HTTP calls in flight at once, how
    # often due retries are re-announced, how long past the dispatch timeout a row may stay
    # `dispatching` before it is requeued, and after how long a `queued` row whose message
    # seems lost is announced again.
    dispatch_prefetch: int = Field(64, ge=1)
    dispatch_concurrency: int = Field(64, ge=1)
    dispatch_poll_interval_seconds: float = Field(0.5, gt=0)
    dispatch_reap_margin_seconds: float = Field(60.0, ge=0)
    dispatch_requeue_after_seconds: float = Field(300.0, gt=0)

    page_size_default: int = Field(100, ge=1)
    page_size_max: int = Field(1000, ge=1)
    log_level: str = "INFO"

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("postgresql", "sqlite")):
            raise ValueError("must be a postgresql+asyncpg:// or sqlite+aiosqlite:/// URL")
        if value.startswith("postgresql://"):
            value = "postgresql+asyncpg://" + value.removeprefix("postgresql://")
        if value.startswith("sqlite:///"):
            value = "sqlite+aiosqlite:///" + value.removeprefix("sqlite:///")
        return value

    @field_validator("amqp_url")
    @classmethod
    def _known_bus(cls, value: str) -> str:
        if not value.startswith(("amqp://", "amqps://", "memory://")):
            raise ValueError(
                "must be an amqp:// or amqps:// URL, or memory:// for the in-process bus"
            )
        return value

    @field_validator("public_url")
    @classmethod
    def _absolute_http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an absolute http(s) URL, e.g. https://skyhook.example.org")
        return value.rstrip("/")

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return level

    @property
    def uses_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def uses_memory_bus(self) -> bool:
        return self.amqp_url.startswith("memory://")


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise SettingsError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise SettingsError(f"config file {path} is not valid: {exc}") from exc
    if not isinstance(data, dict):
        raise SettingsError(f"config file {path} must hold a table/object of settings")
    return data


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build validated settings: config file < environment < explicit overrides."""
    import os

    file_values: dict[str, Any] = {}
    path = config_file or os.environ.get("SKYHOOK_CONFIG_FILE")
    if path:
        file_values = _read_config_file(Path(path))
    env_keys = {
        key.removeprefix("SKYHOOK_").lower() for key in os.environ if key.startswith("SKYHOOK_")
    }
    init = {k: v for k, v in file_values.items() if k not in env_keys}
    init.update(overrides)
    try:
        return Settings(**init)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    lines = ["invalid settings:"]
    for error in exc.errors():
        name = ".".join(str(part) for part in error["loc"]) or "settings"
        variable = f"SKYHOOK_{name.upper()}"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown setting"
        lines.append(f"  {variable}: {message}")
    return "\n".join(lines)
