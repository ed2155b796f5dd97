"""The webhook route table: the webhook receiver serves it, and the composition root mounts it
on the gateway too (skyhook/composition.py)."""

from __future__ import annotations

from http_edge.access import Access
from http_edge.web import Route
from webhook_receiver.handler import post_webhook

WEBHOOK_ROUTES = [
    # Public: the token in the path is the credential (one valid POST per analysis).
    Route(
        "POST",
        "/api/webhook/{resource_type}_analysis/{token:[^/]*}",
        post_webhook,
        Access.PUBLIC,
        "A service posts an analysis' results (one valid POST per token)",
        "webhook",
        responses={
            403: "invalid token, or the analysis was already updated",
            413: "body larger than SKYHOOK_WEBHOOK_MAX_BODY_BYTES",
        },
    ),
]
