"""Posting a webhook body to the platform's callback URL, retrying transient failures."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

import aiohttp

log = logging.getLogger("skyhook.summarizer.callback")

# Besides connection errors, timeouts and 5xx, these are worth another try. Other 4xx are final
# (403: the token was used or the analysis cancelled; 400: it expired).
RETRYABLE_STATUSES = frozenset({408, 425, 429})


def redact_callback(url: str) -> str:
    """The callback URL with its one-time token (the last path segment) hidden."""
    parts = urlsplit(url)
    head, _, _ = parts.path.rstrip("/").rpartition("/")
    return urlunsplit((parts.scheme, parts.netloc, f"{head}/***", "", ""))


async def _post_once(
    http: aiohttp.ClientSession, url: str, body: bytes, timeout_seconds: float
) -> tuple[int | None, str]:
    """(HTTP status or None, what happened), the URL's token never included."""
    try:
        async with http.post(
            url,
            data=body,
            headers={"Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=timeout_seconds),
            allow_redirects=False,
        ) as response:
            text = (await response.text(errors="replace"))[:300]
            return response.status, f"HTTP {response.status}: {text}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return None, type(exc).__name__


async def deliver(
    http: aiohttp.ClientSession,
    url: str,
    body: bytes,
    delays: Sequence[float],
    timeout_seconds: float,
) -> bool:
    """POST ``body`` until accepted; retry after each of ``delays`` (with jitter). True once
    delivered; a final failure is logged at ERROR level (the platform's sweeper then times the
    analysis out)."""
    shown = redact_callback(url)
    outcome = "not attempted"
    for attempt in range(len(delays) + 1):
        status, outcome = await _post_once(http, url, body, timeout_seconds)
        if status is not None and status < 300:
            log.info("results delivered to %s (HTTP %d)", shown, status)
            return True
        if status is not None and status < 500 and status not in RETRYABLE_STATUSES:
            log.error("callback %s refused the results (%s); not retrying", shown, outcome)
            return False
        if attempt < len(delays):
            pause = delays[attempt] * random.uniform(0.8, 1.2)
            log.warning(
                "callback %s attempt %d failed (%s); retrying in %.1f s",
                shown,
                attempt + 1,
                outcome,
                pause,
            )
            await asyncio.sleep(pause)
    log.error(
        "callback %s failed after %d attempts; results lost: %s", shown, len(delays) + 1, outcome
    )
    return False
