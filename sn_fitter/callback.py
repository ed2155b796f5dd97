"""Deliver a webhook body to the callback URL, retrying transient failures with backoff."""

from __future__ import annotations

import asyncio
import logging
import random
from urllib.parse import urlsplit, urlunsplit

import aiohttp

log = logging.getLogger("sn_fitter.callback")

# Statuses worth retrying; any other 4xx (403 invalid/used token, 400 expired) is final.
RETRYABLE_STATUSES = {408, 425, 429}


def redact(url: str) -> str:
    """The callback URL without its secret (the last path segment is the one-time token)."""
    parts = urlsplit(url)
    head, _, _ = parts.path.rstrip("/").rpartition("/")
    return urlunsplit((parts.scheme, parts.netloc, f"{head}/***", "", ""))


async def deliver(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    delays: tuple[float, ...],
    timeout_seconds: float,
) -> bool:
    """POST ``body``; retry connection errors, timeouts, 5xx and 408/425/429 after ``delays``.

    Returns True once delivered. The final failure is logged at ERROR level.
    """
    shown = redact(url)
    reason = "not attempted"
    for attempt in range(len(delays) + 1):
        try:
            async with session.post(
                url,
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=timeout_seconds),
            ) as response:
                if response.status < 300:
                    log.info("results delivered to %s (HTTP %d)", shown, response.status)
                    return True
                detail = (await response.text())[:300]
                reason = f"HTTP {response.status}: {detail}"
                if response.status < 500 and response.status not in RETRYABLE_STATUSES:
                    log.error("callback %s refused the results (%s); not retrying", shown, reason)
                    return False
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = f"{type(exc).__name__}: {exc}".replace(url, shown)
        if attempt < len(delays):
            pause = delays[attempt] * random.uniform(0.9, 1.1)
            log.warning(
                "callback %s attempt %d failed (%s); retrying in %.1f s",
                shown,
                attempt + 1,
                reason,
                pause,
            )
            await asyncio.sleep(pause)
    log.error(
        "callback %s failed after %d attempts; results lost: %s", shown, len(delays) + 1, reason
    )
    return False
