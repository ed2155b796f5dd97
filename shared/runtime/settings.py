"""Settings for every skyhook service, read from ``SKYHOOK_*`` environment variables.

An optional config file (TOML or JSON; ``SKYHOOK_CONFIG_FILE``) supplies defaults that the
environment overrides. Every value is validated at start; a bad value stops the process with
one message per offending setting.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, overload

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError

DEV_SECRET_KEY = "skyhook-dev-secret-key-change-me"
DEFAULT_LLM_SYSTEM_PROMPT = (
    "You are an expert in time-domain astronomy who writes accurate, concise summaries of "
    "astronomical sources for professional astronomers."
)
DEFAULT_LLM_PROMPT = (
    "In one paragraph of Markdown (at most 250 words), written in the third person, summarize "
    "what the comments below say about this astronomical source. Mention the classifications "
    "and the redshift when they are given. The readers are professional astrophysicists: do "
    "not explain standard concepts."
)


class SettingsError(Exception):
    """Raised with a human-readable message listing every invalid setting."""


class CommonSettings(BaseSettings):
    """What every skyhook process reads: where it listens, how it logs, how it stops.

    The per-service models below extend it. Environment variables meant for other services are
    ignored (one env file may serve every service); a config file's keys that belong to other
    services are dropped by ``load_settings`` before validation, while keys no skyhook service
    knows are still refused as unknown settings.
    """

    model_config = SettingsConfigDict(env_prefix="SKYHOOK_", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(5000, ge=1, le=65535)
    # On SIGTERM or SIGINT: how long in-flight work (sends, fits, requests) may take to finish
    # before it is cut short and handed back.
    shutdown_grace_seconds: float = Field(30.0, ge=0)
    log_level: str = "INFO"
    # The event loop of the long-running commands: uvloop when it is installed ("auto"), or
    # the standard library's loop ("asyncio").
    event_loop: Literal["auto", "asyncio"] = "auto"

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return level


class LLMSettings(CommonSettings):
    """The LLM API the summarizer writes summaries with (also read by the platform)."""

    # LLM summaries through an OpenAI-compatible API (summarizer).
    llm_base_url: str = "https://api.openai.com/v1"
    llm_api_key: SecretStr | None = None
    llm_model: str = "gpt-4o-mini"
    llm_temperature: float = Field(0.3, ge=0, le=2)
    llm_max_tokens: int = Field(350, ge=1)
    llm_timeout_seconds: float = Field(60.0, gt=0)
    llm_max_retries: int = Field(2, ge=0)
    llm_system_prompt: str = DEFAULT_LLM_SYSTEM_PROMPT
    llm_prompt: str = DEFAULT_LLM_PROMPT

    @field_validator("llm_base_url")
    @classmethod
    def _llm_url(cls, value: str) -> str:
        return _api_url(value)

    @field_validator("llm_api_key")
    @classmethod
    def _llm_key_empty_is_unset(cls, value: Any) -> Any:
        return _empty_is_unset(value)


class SNFitterSettings(CommonSettings):
    """``skyhook sn-fitter``: HTTP only. No database, bus or secret key; its fitting options
    are ``SKYHOOK_SN_FITTER_*`` (``sn_fitter.app.FitterSettings``)."""


class SummarizerSettings(LLMSettings):
    """``skyhook summarizer``: HTTP and the LLM API only. No database, bus or secret key."""


class Settings(LLMSettings):
    """The platform: gateway, dispatcher, webhook receiver, summary service, and all of them
    in one process (``skyhook run``). They share the database, the bus and the secret key."""

    database_url: str = "sqlite+aiosqlite:///./var/skyhook.db"
    amqp_url: str = "memory://"
    # RabbitMQ names start with this (exchange ``<prefix>.events``, queues ``<prefix>.…``), so
    # several deployments or test runs can share one broker.
    bus_prefix: str = Field("skyhook", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
    public_url: str = "http://127.0.0.1:5000"
    # Only where migration 0005 finds the files of the former artifact storage to import.
    artifact_dir: Path = Path("./var/artifacts")
    secret_key: SecretStr = SecretStr(DEV_SECRET_KEY)
    # Older keys still accepted for decryption, so SKYHOOK_SECRET_KEY can be rotated.
    previous_secret_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)

    # Connections each process may hold open to PostgreSQL: a steady pool plus a temporary
    # overflow under load. Every process of a deployment adds its pool size + overflow to the
    # server's total; keep the sum below PostgreSQL's max_connections (100 by default).
    db_pool_size: int = Field(5, ge=1)
    db_max_overflow: int = Field(5, ge=0)
    # Or: the connections this service may hold in total across its worker processes. When
    # set, each worker gets budget // workers (at least 1), split into pool and overflow, and
    # SKYHOOK_DB_POOL_SIZE / SKYHOOK_DB_MAX_OVERFLOW are not used.
    db_connection_budget: int | None = Field(None, ge=1)
    # Worker processes of `skyhook gateway` and `skyhook webhook-receiver` (one port, shared
    # with SO_REUSEPORT); the other commands always run one process.
    workers: int = Field(1, ge=1)

    # Outbound network policy for analysis-service URLs.
    allow_private_urls: bool = False
    allow_loopback_urls: bool = False
    allowed_url_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Analyses.
    max_analyses_per_obj_per_user: int = Field(50, ge=1)
    dispatch_timeout_seconds: float = Field(30.0, gt=0)
    dispatch_retry_delays_seconds: Annotated[list[Annotated[float, Field(ge=0)]], NoDecode] = Field(
        default_factory=lambda: [1.0, 5.0, 30.0, 120.0, 600.0]
    )
    webhook_max_body_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    sweep_interval_seconds: float = Field(5.0, gt=0)
    # Dispatcher: messages taken from the broker at once, HTTP calls in flight at once, how
    # often due retries are re-announced, how long past the dispatch timeout a row may stay
    # `dispatching` before it is requeued, and after how long a `queued` row whose message
    # seems lost is announced again.
    # A send holds its slot from the claim until its end is recorded (a few round trips and
    # group-commit windows besides the request), so it takes a few hundred slots to keep a
    # fast service busy; each holds its request body in memory.
    dispatch_prefetch: int = Field(256, ge=1)
    dispatch_concurrency: int = Field(256, ge=1)
    dispatch_poll_interval_seconds: float = Field(0.5, gt=0)
    dispatch_reap_margin_seconds: float = Field(60.0, ge=0)
    dispatch_requeue_after_seconds: float = Field(300.0, gt=0)
    # Default analyses on new photometry start once a source has had no new photometry for
    # this long; due ones are looked for this often.
    default_analysis_quiet_seconds: float = Field(60.0, ge=0)
    default_analysis_poll_interval_seconds: float = Field(1.0, gt=0)

    # The embeddings of summaries for summary search (unset SKYHOOK_EMBEDDINGS_MODEL = summary
    # search disabled).
    embeddings_model: str | None = None
    embeddings_base_url: str | None = None  # default: SKYHOOK_LLM_BASE_URL
    embeddings_api_key: SecretStr | None = None  # default: SKYHOOK_LLM_API_KEY
    embeddings_refresh_interval_seconds: float = Field(30.0, gt=0)

    page_size_default: int = Field(100, ge=1)
    page_size_max: int = Field(1000, ge=1)

    @field_validator(
        "previous_secret_keys", "allowed_url_hosts", "dispatch_retry_delays_seconds", mode="before"
    )
    @classmethod
    def _list_from_text(cls, value: Any) -> Any:
        """Environment lists may be JSON (``["a","b"]``) or comma-separated (``a,b``)."""
        if not isinstance(value, str):
            return value
        if value.lstrip().startswith("["):
            try:
                return json.loads(value)
            except ValueError:
                raise ValueError("must be a JSON list or comma-separated values") from None
        return [item.strip() for item in value.split(",") if item.strip()]

    @field_validator("secret_key", "previous_secret_keys")
    @classmethod
    def _non_empty_keys(cls, value: Any) -> Any:
        keys = value if isinstance(value, list) else [value]
        if any(not key.get_secret_value() for key in keys):
            raise ValueError("secret keys must not be empty")
        return value

    @field_validator("page_size_max")
    @classmethod
    def _max_not_below_default(cls, value: int, info: ValidationInfo) -> int:
        default = info.data.get("page_size_default")
        if default is not None and value < default:
            raise ValueError(f"must be at least SKYHOOK_PAGE_SIZE_DEFAULT ({default})")
        return value

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

    @field_validator("embeddings_base_url")
    @classmethod
    def _embeddings_url(cls, value: str | None) -> str | None:
        return None if value is None else _api_url(value)

    @field_validator("embeddings_api_key", "embeddings_model")
    @classmethod
    def _embeddings_empty_is_unset(cls, value: Any) -> Any:
        return _empty_is_unset(value)

    @property
    def uses_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def uses_memory_bus(self) -> bool:
        return self.amqp_url.startswith("memory://")

    @property
    def uses_dev_secret_key(self) -> bool:
        return self.secret_key.get_secret_value() == DEV_SECRET_KEY

    def pool_limits(self) -> tuple[int, int]:
        """(pool size, max overflow) of this process's PostgreSQL pool: from the connection
        budget shared by the service's workers when one is set, else the fixed settings."""
        if self.db_connection_budget is None:
            return self.db_pool_size, self.db_max_overflow
        per_worker = max(1, self.db_connection_budget // self.workers)
        return per_worker - per_worker // 2, per_worker // 2


S = TypeVar("S", bound=CommonSettings)

# The settings model of each service command; every model is a CommonSettings.
SERVICE_SETTINGS: dict[str, type[CommonSettings]] = {
    "gateway": Settings,
    "dispatcher": Settings,
    "webhook-receiver": Settings,
    "summary-service": Settings,
    "sn-fitter": SNFitterSettings,
    "summarizer": SummarizerSettings,
}
_EVERY_SETTING = frozenset(
    name for model in SERVICE_SETTINGS.values() for name in model.model_fields
)
OWN_SECRET_KEY_MESSAGE = (
    "set SKYHOOK_SECRET_KEY to a long random string of your own (e.g. from openssl rand -hex "
    "32): the built-in development key is only for `skyhook run`"
)


def require_own_secret_key(settings: Settings) -> None:
    """Services deployed one by one refuse the development key everyone knows."""
    if settings.uses_dev_secret_key:
        raise SettingsError(OWN_SECRET_KEY_MESSAGE)


def _api_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must be an http(s) URL, e.g. https://api.openai.com/v1")
    return value.rstrip("/")


def _empty_is_unset(value: Any) -> Any:
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    return None if isinstance(text, str) and not text.strip() else value


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


@overload
def load_settings(
    config_file: str | Path | None = None, *, model: type[S], **overrides: Any
) -> S: ...


@overload
def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings: ...


def load_settings(
    config_file: str | Path | None = None,
    *,
    model: type[CommonSettings] = Settings,
    **overrides: Any,
) -> CommonSettings:
    """Build validated settings: config file < environment < explicit overrides.

    ``model`` is the service's settings model (the full platform ``Settings`` by default). A
    config file may hold every service's settings: keys another service's model knows are
    dropped for this one; keys no model knows are reported as unknown settings.
    """
    import os

    file_values: dict[str, Any] = {}
    path = config_file or os.environ.get("SKYHOOK_CONFIG_FILE")
    if path:
        file_values = _read_config_file(Path(path))
    env_keys = {
        key.removeprefix("SKYHOOK_").lower() for key in os.environ if key.startswith("SKYHOOK_")
    }
    own = model.model_fields
    init = {
        k: v
        for k, v in file_values.items()
        if k not in env_keys and (k in own or k not in _EVERY_SETTING)
    }
    init.update(overrides)
    try:
        return model(**init)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None
    except SourceError as exc:  # a value pydantic-settings could not even decode
        raise SettingsError(f"invalid settings:\n  {exc}") from None


def _describe(exc: ValidationError) -> str:
    lines = ["invalid settings:"]
    for error in exc.errors():
        field, *inner = error["loc"] or ("settings",)
        variable = f"SKYHOOK_{str(field).upper()}"
        # Positions inside a list are 0-based in pydantic; people count items from 1.
        where = "".join(f"item {p + 1}: " if isinstance(p, int) else f"{p}: " for p in inner)
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown setting"
        lines.append(f"  {variable}: {where}{message}")
    return "\n".join(lines)
