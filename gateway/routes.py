"""The gateway's route table: every handler module contributes its ROUTES."""

from __future__ import annotations

from gateway import live, web_session, webapp_api
from gateway.handlers import (
    accounts,
    analyses,
    analysis_services,
    analysis_uploads,
    default_analyses,
    periodogram,
    phot_stats,
    products,
    sources,
    summaries,
)
from gateway.openapi import openapi_handler
from http_edge.operations import OBSERVABILITY_ROUTES
from http_edge.web import Route
from webapp import pages
from webhook_receiver.routes import WEBHOOK_ROUTES


def gateway_routes() -> list[Route]:
    routes: list[Route] = [
        *accounts.ROUTES,
        *analysis_services.ROUTES,
        *default_analyses.ROUTES,
        *sources.ROUTES,
        *analyses.ROUTES,
        *analysis_uploads.ROUTES,
        *products.ROUTES,
        *summaries.ROUTES,
        *periodogram.ROUTES,
        *phot_stats.ROUTES,
        *WEBHOOK_ROUTES,
        *OBSERVABILITY_ROUTES,
        *web_session.ROUTES,
        *live.ROUTES,
        *webapp_api.ROUTES,
        *pages.ROUTES,
    ]
    return [*routes, openapi_handler(routes)]
