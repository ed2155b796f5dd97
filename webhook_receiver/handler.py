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
from dataclasses import dataclass

from aiohttp import web
from sqlalchemy import ColumnElement
from sqlalchemy.ext.asyncio import AsyncEngine

from http_edge.web import ApiError, bad_request, forbidden, success, unexpected_error
from shared.db.models import ObjAnalysis
from shared.db.session import Sessions
from shared.db.types import utcnow
from shared.domain import analysis_lifecycle as lifecycle
from shared.domain.analysis_data import (
    INLINE_BODY_BYTES,
    PayloadError,
    StoredPayload,
    WebhookBody,
    decodes_inline,
    parse_webhook_body,
    received_sync,
    stored_files_sync,
)
from shared.domain.analysis_lifecycle import Callee, Completion, Outcome
from shared.domain.enums import AnalysisStatus
from shared.observability.metrics import WEBHOOK_BODY_BYTES, bind_analysis
from shared.runtime.group_commit import PIPELINE_WINDOW_SECONDS, GroupCommit
from shared.runtime.resources import Resources
from shared.security.secrets import hash_token
from webhook_receiver.finalize import TOKEN_EXPIRED, expire, find_callee, find_callees, refusal
from webhook_receiver.redaction import Redactor

log = logging.getLogger("skyhook.webhook")


@dataclass(frozen=True)
class Receiver:
    """What receiving callbacks uses. Callbacks that arrive together are looked up together and
    written together (``callees``, ``completions``: one statement per batch each)."""

    engine: AsyncEngine
    sessions: Sessions
    redactor: Redactor
    max_body_bytes: int
    callees: GroupCommit[str, Callee | None]
    completions: GroupCommit[Completion, bool]


RECEIVER = web.AppKey("webhook_receiver", Receiver)


def setup_webhook(app: web.Application, resources: Resources) -> None:
    """Give an application that mounts the webhook route what the route uses."""
    engine, sessions = resources.engine, resources.sessions

    async def look_up(token_hashes: list[str]) -> list[Callee | None]:
        return await find_callees(engine, token_hashes)

    async def complete(batch: list[Completion]) -> list[bool]:
        return await lifecycle.complete_many(engine, sessions, batch, outbox=resources.outbox)

    app[RECEIVER] = Receiver(
        engine=engine,
        sessions=sessions,
        redactor=Redactor(resources.secret_box, resources.settings.llm_api_key),
        max_body_bytes=resources.settings.webhook_max_body_bytes,
        callees=GroupCommit(look_up, stretch_to_seconds=PIPELINE_WINDOW_SECONDS),
        completions=GroupCommit(complete, stretch_to_seconds=PIPELINE_WINDOW_SECONDS),
    )
    app.cleanup_ctx.append(_drain_batchers)


async def _drain_batchers(app: web.Application) -> AsyncIterator[None]:
    """On shutdown the last batches are done before the database closes."""
    yield
    await app[RECEIVER].callees.drain()
    await app[RECEIVER].completions.drain()


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
    try:
        return await receive(request, request.app[RECEIVER], token)
    except ApiError:
        raise
    except Exception as exc:
        return unexpected_error(request, exc)  # logs the route template, never the token


async def _lookup(engine: AsyncEngine, condition: ColumnElement[bool]) -> Callee | None:
    """A single read on an autocommit connection: one round trip, no transaction around it."""
    async with engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        return await find_callee(connection, condition)


async def _active_analysis(receiver: Receiver, token: str) -> Callee:
    analysis = None
    if token:
        analysis = await receiver.callees.submit(hash_token(token))
    if analysis is None:
        raise forbidden("Invalid token")
    problem = refusal(analysis)
    if problem is not None:
        raise problem
    now = utcnow()
    if now > analysis.invalid_after:
        await _expire(receiver, analysis)
    return analysis


async def _expire(receiver: Receiver, analysis: Callee) -> None:
    """Mark the row timed_out (if still active) and refuse: always raises."""
    async with receiver.sessions.begin() as session:
        await expire(session, analysis, utcnow())
    log.info("analysis %s: webhook after invalid_after, marked timed_out", analysis.id)
    await _refuse_by_current_state(receiver.engine, analysis)
    raise bad_request(TOKEN_EXPIRED)


async def _refuse_by_current_state(engine: AsyncEngine, analysis: Callee) -> None:
    current = await _lookup(engine, ObjAnalysis.id == analysis.id)
    if current is None:
        raise forbidden("Invalid token")
    problem = refusal(current)
    if problem is not None:
        raise problem
    if utcnow() > current.invalid_after:
        raise bad_request(TOKEN_EXPIRED)


async def receive(request: web.Request, receiver: Receiver, token: str) -> web.Response:
    analysis = await _active_analysis(receiver, token)
    with bind_analysis(analysis.id):
        return await _receive_for(request, receiver, analysis, token)


async def _decoded(raw: bytes, analysis_unique_id: str) -> tuple[WebhookBody, StoredPayload]:
    """The callback body and the files it brings: a big body in one worker-thread hop; a small
    one parsed on the event loop, and decoded there too unless its parts need decompression or
    file parsing."""
    if len(raw) > INLINE_BODY_BYTES:
        return await asyncio.to_thread(received_sync, raw, analysis_unique_id)
    body = parse_webhook_body(raw)
    if decodes_inline(body.analysis):
        return body, stored_files_sync(analysis_unique_id, body.analysis)
    return body, await asyncio.to_thread(stored_files_sync, analysis_unique_id, body.analysis)


async def _receive_for(
    request: web.Request, receiver: Receiver, analysis: Callee, token: str
) -> web.Response:
    raw = await read_limited(request, receiver.max_body_bytes)
    WEBHOOK_BODY_BYTES.observe(len(raw))
    try:
        body, stored = await _decoded(raw, analysis.unique_id)
    except PayloadError as exc:
        log.info("analysis %s: malformed webhook body refused", analysis.id)
        raise bad_request(str(exc)) from None
    message = receiver.redactor.redacted_message(analysis, token, body.message or "")
    status = AnalysisStatus.COMPLETED if body.status == "success" else AnalysisStatus.FAILURE
    outcome = Outcome(
        status=status,
        message=message,
        artifacts=stored.artifacts,
        data_summary={**stored.data_summary, "message": message},
        annotations=stored.annotations,
        files=stored.files,
    )
    if not await receiver.completions.submit(Completion(analysis, outcome)):
        log.info(
            "analysis %s: lost to a concurrent change (another webhook POST, cancel or expiry); "
            "nothing of this request was stored",
            analysis.id,
        )
        if utcnow() > analysis.invalid_after:
            await _expire(receiver, analysis)
        await _refuse_by_current_state(receiver.engine, analysis)
        raise forbidden("Analysis was updated concurrently")
    log.info("analysis %s: webhook accepted, status %s", analysis.id, status)
    return success({"status": "success"})
