"""The webhook route table, mounted by the webhook receiver and by the gateway alike."""

from __future__ import annotations

from http_edge.web import Route
from webhook_receiver.handler import post_webhook

WEBHOOK_BODY = {"status": "str", "message": "str", "analysis": "obj"}

WEBHOOK_ROUTES = [
    Route(
        "POST",
        "/api/webhook/{resource_type}_analysis/{token:[^/]*}",
        post_webhook,
        "A service posts an analysis' results (one valid POST per token)",
        "webhook",
        auth=False,
        body=WEBHOOK_BODY,
        responses={
            403: "invalid token, or the analysis was already updated",
            413: "body larger than SKYHOOK_WEBHOOK_MAX_BODY_BYTES",
        },
    ),
]
