"""Liveness, readiness and metrics, and this OpenAPI document."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from gateway.schemas.common import Open, binary


class Alive(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    """``ready``, or (with 503) ``unavailable`` and what is not."""

    status: Literal["ready", "unavailable"]
    problems: list[str] | None = None


class OpenApiDocument(Open):
    openapi: str


METRICS = binary("Prometheus metrics in the text exposition format", "text/plain")
