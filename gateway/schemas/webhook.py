"""A service's callback with an analysis' results."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from shared.domain.analysis_data import WebhookBody

__all__ = ["WebhookAccepted", "WebhookBody"]


class WebhookAccepted(BaseModel):
    status: Literal["success"]
