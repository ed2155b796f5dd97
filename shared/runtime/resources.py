"""Long-lived resources every service shares, opened and closed in one place."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.bus import Bus, create_bus
from shared.bus.outbox import OutboxRelay
from shared.db.session import create_engine, create_session_factory
from shared.domain.analysis_lifecycle import AnalysisCreator
from shared.domain.artifacts import ArtifactStore
from shared.runtime.settings import Settings
from shared.security.secrets import CallbackTokens, SecretBox
from shared.security.urlpolicy import URLPolicy


@dataclass
class Resources:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    secret_box: SecretBox
    callback_tokens: CallbackTokens
    url_policy: URLPolicy
    artifacts: ArtifactStore
    bus: Bus
    outbox: OutboxRelay


def analysis_creator(resources: Resources) -> AnalysisCreator:
    return AnalysisCreator(
        resources.sessions,
        resources.callback_tokens,
        resources.outbox,
        cap=resources.settings.max_analyses_per_obj_per_user,
    )


def url_policy_from(settings: Settings) -> URLPolicy:
    return URLPolicy(
        allow_private=settings.allow_private_urls,
        allow_loopback=settings.allow_loopback_urls,
        allowed_hosts=frozenset(h.lower() for h in settings.allowed_url_hosts),
    )


def bus_from(settings: Settings) -> Bus:
    options = {} if settings.uses_memory_bus else {"prefix": settings.bus_prefix}
    return create_bus(settings.amqp_url, **options)


@asynccontextmanager
async def open_resources(settings: Settings) -> AsyncIterator[Resources]:
    pool: dict[str, int] = {}
    if not settings.uses_sqlite:  # sized from SKYHOOK_DB_CONNECTION_BUDGET when it is set
        pool_size, max_overflow = settings.pool_limits()
        pool = {"pool_size": pool_size, "max_overflow": max_overflow}
    engine = create_engine(settings.database_url, **pool)
    secret = settings.secret_key.get_secret_value()
    sessions = create_session_factory(engine)
    bus = bus_from(settings)
    outbox = OutboxRelay(sessions, bus)
    outbox.collect(sessions)  # what a session enqueues is handed over as it commits
    try:
        await bus.start()
        yield Resources(
            settings=settings,
            engine=engine,
            sessions=sessions,
            secret_box=SecretBox(
                secret, [k.get_secret_value() for k in settings.previous_secret_keys]
            ),
            callback_tokens=CallbackTokens(secret),
            url_policy=url_policy_from(settings),
            artifacts=ArtifactStore(engine),
            bus=bus,
            outbox=outbox,
        )
    finally:
        try:
            await bus.close()  # consumers stop first; their unfinished messages are requeued
        finally:
            await engine.dispose()
