"""The gateway application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from gateway.analysis_access import SERVICES, START_BATCHER, services_batcher
from gateway.auth import auth_middleware, setup_auth
from gateway.live import setup_live
from gateway.routes import gateway_routes
from gateway.web_session import ONE_TIME_LINKS, OneTimeLinks
from http_edge.web import add_routes, error_middleware
from shared.domain.analysis_lifecycle import start_batcher
from shared.observability.metrics import metrics_middleware
from shared.runtime.resources import RESOURCES, Resources
from webhook_receiver.handler import setup_webhook


def create_gateway_app(resources: Resources) -> web.Application:
    app = web.Application(
        middlewares=[metrics_middleware("gateway"), error_middleware, auth_middleware],
        client_max_size=resources.settings.webhook_max_body_bytes,
    )
    app[RESOURCES] = resources
    setup_auth(app, resources.engine)
    add_routes(app, gateway_routes())
    setup_live(app)
    app[ONE_TIME_LINKS] = OneTimeLinks()
    app[START_BATCHER] = start_batcher(resources)
    app[SERVICES] = services_batcher(resources.engine)
    app.cleanup_ctx.append(_drain_start_batcher)
    setup_webhook(app, resources)  # the gateway mounts the webhook route too
    return app


async def _drain_start_batcher(app: web.Application) -> AsyncIterator[None]:
    """Concurrent start requests are read and created together; on shutdown the last batches
    finish."""
    yield
    await app[SERVICES].drain()
    await app[START_BATCHER].drain()
