"""The gateway's route table: every handler module contributes its ROUTES."""

from __future__ import annotations

from gateway.handlers import accounts, analysis_services, sources
from gateway.openapi import openapi_handler
from shared.web import Route


def gateway_routes() -> list[Route]:
    routes: list[Route] = [*accounts.ROUTES, *analysis_services.ROUTES, *sources.ROUTES]
    return [*routes, openapi_handler(routes)]
