"""An aiohttp access logger that never writes webhook tokens (they sit in the path).

Use it wherever a server mounts the webhook route with access logging on:
``web.AppRunner(app, access_log_class=RedactingAccessLogger)``.
"""

from __future__ import annotations

import re

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

_WEBHOOK_TOKEN = re.compile(r"^(/api/webhook/[^/?]*/)[^/?]*")


def redact_path(path: str) -> str:
    return _WEBHOOK_TOKEN.sub(r"\1<token>", path)


class RedactingAccessLogger(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s HTTP/%d.%d" %d %s %.3fs',
            request.remote,
            request.method,
            redact_path(request.path_qs),
            request.version.major,
            request.version.minor,
            response.status,
            response.body_length,
            time,
        )
