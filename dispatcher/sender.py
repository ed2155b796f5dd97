"""One HTTP attempt: URL policy, authentication, signing, timeout, and what the answer means.

Any 2xx is acceptance. Connection errors, timeouts, 408, 429 and 5xx are worth retrying, and
so are a host name that does not resolve or resolves only to addresses the URL policy refuses
(DNS answers change); every other answer is final. Redirects are not followed (a redirect
could lead anywhere, around the URL policy). Secrets never enter an error message: every
message is passed through ``shared.security.redaction.redact`` with the secrets of the request (an
echoing service cannot make skyhook store its credentials).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import aiohttp
from aiohttp import ClientSession, ClientTimeout, DigestAuthMiddleware

from dispatcher.backoff import parse_retry_after
from dispatcher.request import with_body_secret
from shared.domain.analysis_lifecycle import truncate
from shared.domain.enums import AuthenticationType
from shared.security.redaction import redact
from shared.security.signing import signature_headers
from shared.security.urlpolicy import URLPolicy, URLPolicyError

USER_AGENT = "skyhook-dispatcher/0.1"
RESPONSE_PREFIX_BYTES = 8192
RETRYABLE_STATUSES = frozenset({408, 429})


class Verdict(StrEnum):
    ACCEPTED = "accepted"
    RETRY = "retry"
    FAILED = "failed"


@dataclass(frozen=True)
class SendResult:
    verdict: Verdict
    message: str  # for status_message (response text, or what went wrong)
    error: str | None = None  # for the attempt row; None when accepted
    http_status: int | None = None
    latency_ms: float | None = None
    retry_after: float | None = None


@dataclass(frozen=True)
class Outbound:
    """Everything needed to send one attempt (secrets included: never log this)."""

    url: str
    body: bytes
    message_id: str
    authentication_type: str
    authinfo: Mapping[str, Any]
    signing_secret: str | None
    secrets: frozenset[str] = frozenset()  # everything above that must never be stored


class UnsupportedAuthentication(ValueError):
    pass


def _authenticate(outbound: Outbound) -> tuple[bytes, dict[str, str], dict[str, Any]]:
    """(body, extra headers, request keyword arguments) for the service's auth type."""
    kind, info = outbound.authentication_type, outbound.authinfo
    if kind == AuthenticationType.NONE:
        return outbound.body, {}, {}
    if kind == AuthenticationType.HEADER_TOKEN:
        return outbound.body, {str(k): str(v) for k, v in info["header_token"].items()}, {}
    if kind == AuthenticationType.API_KEY:
        body = with_body_secret(outbound.body, info["api_key_name"], info["api_key"])
        return body, {}, {}
    if kind == AuthenticationType.HTTP_BASIC:
        return outbound.body, {"Authorization": basic_authorization(info)}, {}
    if kind == AuthenticationType.HTTP_DIGEST:
        digest = DigestAuthMiddleware(info["username"], info["password"], preemptive=False)
        return outbound.body, {}, {"middlewares": (digest,)}
    if kind == AuthenticationType.OAUTH1:
        raise UnsupportedAuthentication(
            "OAuth1 authentication is not supported by skyhook; register the service with "
            "header_token, api_key, HTTPBasicAuth or HTTPDigestAuth"
        )
    raise UnsupportedAuthentication(f"Unknown authentication_type: {kind}")


def basic_authorization(info: Mapping[str, Any]) -> str:
    """RFC 7617 credentials (UTF-8), as ``requests.auth.HTTPBasicAuth`` sends them."""
    pair = f"{info['username']}:{info['password']}".encode()
    return f"Basic {base64.b64encode(pair).decode()}"


async def _read_prefix(response: aiohttp.ClientResponse) -> tuple[str, bool]:
    """The first ``RESPONSE_PREFIX_BYTES`` of the answer, and whether there was more."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(4096):
        chunks.append(chunk)
        size += len(chunk)
        if size > RESPONSE_PREFIX_BYTES:
            break
    prefix = b"".join(chunks)
    cut = len(prefix) > RESPONSE_PREFIX_BYTES
    return prefix[:RESPONSE_PREFIX_BYTES].decode("utf-8", "replace"), cut


class Sender:
    def __init__(self, http: ClientSession, url_policy: URLPolicy, timeout: float) -> None:
        self._http = http
        self._url_policy = url_policy
        self._timeout = timeout

    async def send(self, outbound: Outbound) -> SendResult:
        result = await self._send(outbound)
        if result.http_status is not None:
            return result  # made of the service's answer, redacted as it was read
        return dataclasses.replace(
            result,
            message=redact(result.message, outbound.secrets),
            error=None if result.error is None else redact(result.error, outbound.secrets),
        )

    async def _send(self, outbound: Outbound) -> SendResult:
        try:
            # Syntax and literal addresses; host names are checked by the connector's
            # resolver (dispatcher.resolver), on the addresses it connects to.
            self._url_policy.check_url(outbound.url)
        except URLPolicyError as exc:
            message = f"Service URL refused by the URL policy: {exc}"
            return SendResult(Verdict.FAILED, message, message)
        try:
            body, auth_headers, options = _authenticate(outbound)
        except (UnsupportedAuthentication, KeyError, TypeError, AttributeError) as exc:
            message = (
                str(exc)
                if isinstance(exc, UnsupportedAuthentication)
                else f"Stored credentials do not fit authentication_type "
                f"{outbound.authentication_type!r}"
            )
            return SendResult(Verdict.FAILED, message, message)
        headers = {**auth_headers, "Content-Type": "application/json", "User-Agent": USER_AGENT}
        if outbound.signing_secret:
            headers.update(signature_headers(outbound.signing_secret, outbound.message_id, body))
        return await self._post(outbound, body, headers, options)

    async def _post(
        self, outbound: Outbound, body: bytes, headers: dict[str, str], options: dict[str, Any]
    ) -> SendResult:
        url = outbound.url
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._timeout):
                async with self._http.post(
                    url,
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                    timeout=ClientTimeout(total=self._timeout),
                    **options,
                ) as response:
                    text, cut = await _read_prefix(response)
                    status, retry_after = response.status, response.headers.get("Retry-After")
        except URLPolicyError as exc:  # from the resolver; DNS answers may change: retried
            error = f"Service URL refused by the URL policy: {exc}"
            return SendResult(Verdict.RETRY, error, error, latency_ms=_since(started))
        except aiohttp.ClientConnectorDNSError as exc:
            error = f"Request to {url} failed: host {exc.host!r} cannot be resolved"
            return SendResult(Verdict.RETRY, error, error, latency_ms=_since(started))
        except TimeoutError:
            error = f"Request to {url} timed out after {self._timeout:g} s"
            return SendResult(Verdict.RETRY, error, error, latency_ms=_since(started))
        except aiohttp.ClientError as exc:
            error = f"Request to {url} failed: {exc.__class__.__name__}: {exc}"
            return SendResult(Verdict.RETRY, error, error, latency_ms=_since(started))
        # Redacted before classify shortens it, so that only the read limit can cut a secret.
        text = redact(text, outbound.secrets, cut_short=cut)
        return classify(status, text, retry_after, _since(started))


def error_answer_text(text: str) -> str:
    """What a refusing service said: the ``message`` of a JSON error answer
    (``{"status": "error", "message": "…"}``, as SkyPortal's services send), else the text."""
    try:
        answer = json.loads(text)
    except ValueError:
        return text
    if isinstance(answer, dict) and isinstance(answer.get("message"), str):
        if answer.get("status", "error") == "error" and answer["message"].strip():
            return answer["message"]
    return text


def classify(status: int, text: str, retry_after: str | None, latency_ms: float) -> SendResult:
    if 200 <= status < 300:
        return SendResult(Verdict.ACCEPTED, truncate(text), None, status, latency_ms)
    text = error_answer_text(text)
    message = truncate(text) if text.strip() else f"HTTP {status}"
    error = f"HTTP {status}: {truncate(text)}" if text.strip() else f"HTTP {status}"
    if status in RETRYABLE_STATUSES or status >= 500:
        return SendResult(
            Verdict.RETRY, error, error, status, latency_ms, parse_retry_after(retry_after)
        )
    return SendResult(Verdict.FAILED, message, error, status, latency_ms)


def _since(started: float) -> float:
    return round((time.monotonic() - started) * 1000.0, 3)
