"""The webhook receiver as its own aiohttp application (``skyhook webhook-receiver``)."""

from __future__ import annotations

from aiohttp import web

from shared.observability import metrics_middleware
from shared.operations import OBSERVABILITY_ROUTES
from shared.resources import RESOURCES, Resources
from shared.web import add_routes, error_middleware
from webhook_receiver.handler import setup_webhook
from webhook_receiver.routes import WEBHOOK_ROUTES


def create_webhook_app(resources: Resources) -> web.Application:
    app = web.Application(
        middlewares=[metrics_middleware("webhook-receiver"), error_middleware],
        client_max_size=resources.settings.webhook_max_body_bytes,
    )
    app[RESOURCES] = resources
    add_routes(app, [*WEBHOOK_ROUTES, *OBSERVABILITY_ROUTES])
    setup_webhook(app, resources)
    return app
