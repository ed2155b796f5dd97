"""The gateway application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

from gateway.analysis_access import (
    ANALYSIS_CREATOR,
    CACHED_SERVICES,
    CACHED_SERVICES_LIMIT,
    SERVICES,
    START_BATCHER,
    services_batcher,
)
from gateway.auth import auth_middleware, setup_auth
from gateway.live import setup_live
from gateway.openapi import OPENAPI_DOCUMENT, build_document
from gateway.routes import gateway_routes
from gateway.web_session import ONE_TIME_LINKS, OneTimeLinks
from http_edge.app_keys import provide
from http_edge.observability import metrics_middleware
from http_edge.web import Route, add_routes, error_middleware
from shared.domain.access_versions import VersionedCache
from shared.runtime.resources import Resources, analysis_creator


@dataclass(frozen=True)
class Mount:
    """Routes of another service the gateway serves beside its own table (the composition
    root decides which: the gateway never imports another service), and the setup their
    handlers need."""

    routes: Sequence[Route]
    setup: Callable[[web.Application, Resources], None]


def create_gateway_app(resources: Resources, mounts: Sequence[Mount] = ()) -> web.Application:
    app = web.Application(
        middlewares=[metrics_middleware("gateway"), error_middleware, auth_middleware],
        client_max_size=resources.settings.webhook_max_body_bytes,
    )
    provide(app, resources)
    routes = [*gateway_routes(), *(route for mount in mounts for route in mount.routes)]
    setup_auth(app, resources.engine, add_routes(app, routes))
    app[OPENAPI_DOCUMENT] = build_document(routes)
    setup_live(app)
    app[ONE_TIME_LINKS] = OneTimeLinks()
    app[ANALYSIS_CREATOR] = creator = analysis_creator(resources)
    app[START_BATCHER] = creator.batcher()
    app[SERVICES] = services_batcher(resources.engine)
    app[CACHED_SERVICES] = VersionedCache(CACHED_SERVICES_LIMIT)
    app.cleanup_ctx.append(_drain_start_batcher)
    for mount in mounts:
        mount.setup(app, resources)
    return app


async def _drain_start_batcher(app: web.Application) -> AsyncIterator[None]:
    """Concurrent start requests are read and created together; on shutdown the last batches
    finish."""
    yield
    await app[SERVICES].drain()
    await app[START_BATCHER].drain()
