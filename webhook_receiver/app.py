"""The webhook receiver as its own aiohttp application (``skyhook webhook-receiver``)."""

from __future__ import annotations

from aiohttp import web

from http_edge.app_keys import provide
from http_edge.observability import metrics_middleware
from http_edge.operations import OBSERVABILITY_ROUTES
from http_edge.web import add_routes, error_middleware
from shared.runtime.resources import Resources
from webhook_receiver.handler import setup_webhook
from webhook_receiver.routes import WEBHOOK_ROUTES


def create_webhook_app(resources: Resources) -> web.Application:
    app = web.Application(
        middlewares=[metrics_middleware("webhook-receiver"), error_middleware],
        client_max_size=resources.settings.webhook_max_body_bytes,
    )
    provide(app, resources)
    add_routes(app, [*WEBHOOK_ROUTES, *OBSERVABILITY_ROUTES])
    setup_webhook(app, resources)
    return app
