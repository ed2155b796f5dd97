"""The gateway's route table: every handler module contributes its ROUTES."""

from __future__ import annotations

from gateway.handlers import accounts, analyses, analysis_services, analysis_uploads, sources
from gateway.openapi import openapi_handler
from shared.web import Route


def gateway_routes() -> list[Route]:
    routes: list[Route] = [
        *accounts.ROUTES,
        *analysis_services.ROUTES,
        *sources.ROUTES,
        *analyses.ROUTES,
        *analysis_uploads.ROUTES,
    ]
    return [*routes, openapi_handler(routes)]
