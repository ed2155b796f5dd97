"""``POST /api/webhook/{resource_type}_analysis/{token}``: a service reports its results.

Order of checks: resource type, token, the row's state and expiry (nothing read yet), the body
(size → 413, then JSON, schema and every blob decoded in a thread → 400), then the single
conditional UPDATE, which stores the artifacts in its own transaction: a request that loses
writes nothing. The token is never logged: log lines name the analysis id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from sqlalchemy import ColumnElement

from http_edge.app_keys import RESOURCES
from http_edge.web import ApiError, bad_request, forbidden, success, unexpected_error
from shared.db.models import ObjAnalysis
from shared.db.types import utcnow
from shared.domain import analysis_lifecycle as lifecycle
from shared.domain.analysis_data import (
    PayloadError,
    decode_analysis_payload,
    parse_webhook_body,
    prepare_payload,
)
from shared.domain.analysis_lifecycle import Callee, Completion, Outcome
from shared.domain.enums import AnalysisStatus
from shared.observability.metrics import WEBHOOK_BODY_BYTES, bind_analysis
from shared.runtime.group_commit import GroupCommit
from shared.runtime.resources import Resources
from shared.security.secrets import hash_token
from webhook_receiver.finalize import TOKEN_EXPIRED, expire, find_callee, find_callees, refusal
from webhook_receiver.redaction import redacted_message

log = logging.getLogger("skyhook.webhook")

# Callbacks that arrive together are looked up together and written together (one
# statement per batch each).
CALLEES = web.AppKey("callees", GroupCommit[str, Callee | None])
COMPLETIONS = web.AppKey("completions", GroupCommit[Completion, bool])


def setup_webhook(app: web.Application, resources: Resources) -> None:
    """Give an application that mounts the webhook route its batchers."""

    async def look_up(token_hashes: list[str]) -> list[Callee | None]:
        return await find_callees(resources.engine, token_hashes)

    async def complete(batch: list[Completion]) -> list[bool]:
        return await lifecycle.complete_many(resources, batch)

    app[CALLEES] = GroupCommit(look_up)
    app[COMPLETIONS] = GroupCommit(complete)
    app.cleanup_ctx.append(_drain_batchers)


async def _drain_batchers(app: web.Application) -> AsyncIterator[None]:
    """On shutdown the last batches are done before the database closes."""
    yield
    await app[CALLEES].drain()
    await app[COMPLETIONS].drain()


async def read_limited(request: web.Request, limit: int) -> bytes:
    """The body, or 413 as soon as it is known to exceed ``limit`` bytes."""
    too_large = ApiError(413, f"Request body too large: the limit is {limit} bytes")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.content.iter_chunked(256 * 1024):
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


async def post_webhook(request: web.Request) -> web.StreamResponse:
    if request.match_info.get("resource_type", "").lower() != "obj":
        raise forbidden("Invalid analysis resource type")
    token = request.match_info.get("token", "")
    resources = request.app[RESOURCES]
    try:
        return await receive(request, resources, token)
    except ApiError:
        raise
    except Exception as exc:
        return unexpected_error(request, exc)  # logs the route template, never the token


async def _lookup(resources: Resources, condition: ColumnElement[bool]) -> Callee | None:
    """A single read on an autocommit connection: one round trip, no transaction around it."""
    async with resources.engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        return await find_callee(connection, condition)


async def _active_analysis(request: web.Request, resources: Resources, token: str) -> Callee:
    analysis = None
    if token:
        analysis = await request.app[CALLEES].submit(hash_token(token))
    if analysis is None:
        raise forbidden("Invalid token")
    problem = refusal(analysis)
    if problem is not None:
        raise problem
    now = utcnow()
    if now > analysis.invalid_after:
        await _expire(resources, analysis)
    return analysis


async def _expire(resources: Resources, analysis: Callee) -> None:
    """Mark the row timed_out (if still active) and refuse: always raises."""
    async with resources.sessions.begin() as session:
        await expire(session, analysis, utcnow())
    resources.outbox.nudge()
    log.info("analysis %s: webhook after invalid_after, marked timed_out", analysis.id)
    await _refuse_by_current_state(resources, analysis)
    raise bad_request(TOKEN_EXPIRED)


async def _refuse_by_current_state(resources: Resources, analysis: Callee) -> None:
    current = await _lookup(resources, ObjAnalysis.id == analysis.id)
    if current is None:
        raise forbidden("Invalid token")
    problem = refusal(current)
    if problem is not None:
        raise problem
    if utcnow() > current.invalid_after:
        raise bad_request(TOKEN_EXPIRED)


async def receive(request: web.Request, resources: Resources, token: str) -> web.Response:
    analysis = await _active_analysis(request, resources, token)
    with bind_analysis(analysis.id):
        return await _receive_for(request, resources, analysis, token)


async def _receive_for(
    request: web.Request, resources: Resources, analysis: Callee, token: str
) -> web.Response:
    raw = await read_limited(request, resources.settings.webhook_max_body_bytes)
    WEBHOOK_BODY_BYTES.observe(len(raw))
    try:
        body = await asyncio.to_thread(parse_webhook_body, raw)
        decoded = await decode_analysis_payload(body.analysis)
    except PayloadError as exc:
        log.info("analysis %s: malformed webhook body refused", analysis.id)
        raise bad_request(str(exc)) from None
    message = redacted_message(resources, analysis, token, body.message or "")
    stored = await prepare_payload(analysis.unique_id, decoded)
    status = AnalysisStatus.COMPLETED if body.status == "success" else AnalysisStatus.FAILURE
    outcome = Outcome(
        status=status,
        message=message,
        artifacts=stored.artifacts,
        data_summary={**stored.data_summary, "message": message},
        annotations=stored.annotations,
        files=stored.files,
    )
    if not await request.app[COMPLETIONS].submit(Completion(analysis, outcome)):
        log.info(
            "analysis %s: lost to a concurrent change (another webhook POST, cancel or expiry); "
            "nothing of this request was stored",
            analysis.id,
        )
        if utcnow() > analysis.invalid_after:
            await _expire(resources, analysis)
        await _refuse_by_current_state(resources, analysis)
        raise forbidden("Analysis was updated concurrently")
    resources.outbox.nudge()
    log.info("analysis %s: webhook accepted, status %s", analysis.id, status)
    return success({"status": "success"})
