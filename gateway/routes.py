"""The gateway's route table: every handler module contributes its ROUTES."""

from __future__ import annotations

from gateway.handlers import accounts
from gateway.openapi import openapi_handler
from shared.web import Route


def gateway_routes() -> list[Route]:
    routes: list[Route] = [*accounts.ROUTES]
    return [*routes, openapi_handler(routes)]
