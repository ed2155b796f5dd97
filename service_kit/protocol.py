"""The service side of SkyPortal's analysis-service protocol, for services written in Python.

How an analysis service uses it (``sn_fitter/app.py`` is the complete example):

- its ``POST`` handler reads the request with ``await read_request(request)``: the JSON object
  with the keys every request has (``inputs``, ``callback_url``, ``callback_method``) checked.
  A problem raises :class:`RequestError`; the handler answers it with ``refused(message)`` (a
  400), or else starts the work and answers ``accepted(service_name)`` at once;
- ``health`` is its ``GET /`` handler;
- when the work is done, ``await post_callback(session, url, body, delays, timeout)`` delivers
  the webhook body, retrying what is worth retrying.

The callback URL's last path segment is a one-time token, a secret: log only
``redact_callback_url(url)``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from aiohttp import web

REQUIRED_KEYS = ("inputs", "callback_url", "callback_method")
# Platform answers worth another try besides connection errors, timeouts and 5xx. Any other 4xx
# is final (403: the token was used or the analysis cancelled; 400: it expired).
RETRYABLE_STATUSES = frozenset({408, 425, 429})
CALLBACK_RETRY_DELAYS_SECONDS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
CALLBACK_TIMEOUT_SECONDS = 60.0
RETRY_JITTER = 0.2  # each pause is its delay times a random factor in [0.8, 1.2]
MAX_DETAIL_CHARS = 300

log = logging.getLogger("skyhook.service_protocol")


class RequestError(ValueError):
    """The request cannot be served; the message is for the caller (a 400)."""


async def read_request(request: web.Request, *, url_message: str | None = None) -> dict[str, Any]:
    """The request body, checked as every analysis service checks it.

    ``url_message``, when given, is the one refusal for a callback_url that is not an absolute
    http(s) URL (by default the message says which of the two it is not).
    """
    try:
        payload = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):  # too deep: Recursion…
        raise RequestError("Invalid JSON") from None
    if not isinstance(payload, dict):
        raise RequestError("Invalid JSON: the body must be an object")
    for key in REQUIRED_KEYS:
        if key not in payload:
            raise RequestError(f"missing required key {key}")
    method = payload["callback_method"]
    if not isinstance(method, str) or method.upper() != "POST":
        raise RequestError(f"callback_method must be POST, got {method!r}")
    url = payload["callback_url"]
    if not isinstance(url, str) or urlsplit(url).scheme not in {"http", "https"}:
        raise RequestError(url_message or "callback_url must be an http(s) URL")
    if not urlsplit(url).netloc:
        raise RequestError(url_message or "callback_url must be an absolute URL")
    return payload


def refused(message: str) -> web.Response:
    """The 400 answer to a request the service will not run."""
    return web.json_response({"status": "error", "message": message}, status=400)


def accepted(service_name: str) -> web.Response:
    """The answer to a request the service has started on (the result comes by callback)."""
    return web.json_response({"status": "pending", "message": f"{service_name}: analysis started"})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "active"})


def redact_callback_url(url: str) -> str:
    """The callback URL with its one-time token (the last path segment) hidden."""
    parts = urlsplit(url)
    head, _, _ = parts.path.rstrip("/").rpartition("/")
    return urlunsplit((parts.scheme, parts.netloc, f"{head}/***", "", ""))


def _without_secret(text: str, url: str) -> str:
    token = urlsplit(url).path.rstrip("/").rpartition("/")[2]
    text = text.replace(url, redact_callback_url(url))
    return text.replace(token, "***") if token else text


async def _post_once(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    timeout_seconds: float,
    follow_redirects: bool,
) -> tuple[int | None, str]:
    """(HTTP status, or None when no answer came; what happened, without the token)."""
    try:
        async with session.post(
            url,
            data=body,
            headers={"Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=timeout_seconds),
            allow_redirects=follow_redirects,
        ) as response:
            text = (await response.text(errors="replace"))[:MAX_DETAIL_CHARS]
            return response.status, f"HTTP {response.status}: {text}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return None, _without_secret(f"{type(exc).__name__}: {exc}", url)


async def post_callback(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    delays: Sequence[float],
    timeout_seconds: float,
    *,
    logger: logging.Logger = log,
    follow_redirects: bool = False,
) -> bool:
    """POST the webhook ``body`` to ``url`` until the platform accepts it (any 2xx): True.

    Connection errors, timeouts, 5xx and 408/425/429 are tried again after each of ``delays``
    (with jitter); any other answer is final. A final failure is logged at ERROR level on
    ``logger`` and returns False (the platform's sweeper then times the analysis out).
    """
    shown = redact_callback_url(url)
    outcome = "not attempted"
    for attempt in range(len(delays) + 1):
        status, outcome = await _post_once(session, url, body, timeout_seconds, follow_redirects)
        if status is not None and status < 300:
            logger.info("results delivered to %s (HTTP %d)", shown, status)
            return True
        if status is not None and status < 500 and status not in RETRYABLE_STATUSES:
            logger.error("callback %s refused the results (%s); not retrying", shown, outcome)
            return False
        if attempt < len(delays):
            pause = delays[attempt] * random.uniform(1 - RETRY_JITTER, 1 + RETRY_JITTER)
            logger.warning(
                "callback %s attempt %d failed (%s); retrying in %.1f s",
                shown,
                attempt + 1,
                outcome,
                pause,
            )
            await asyncio.sleep(pause)
    logger.error(
        "callback %s failed after %d attempts; results lost: %s", shown, len(delays) + 1, outcome
    )
    return False
