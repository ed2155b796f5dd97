"""One claimed attempt, start to finish: prepare, send, record, move the row on."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import aiohttp
from sqlalchemy.ext.asyncio import AsyncSession

from dispatcher.backoff import retry_delay
from dispatcher.inputs import InputsError
from dispatcher.request import (
    DispatchContext,
    InputsMemo,
    Site,
    StoredPayload,
    assemble_claimed_inputs,
    body_to_send,
    claim_contexts,
    stored_payload,
)
from dispatcher.sender import Outbound, Sender, SendResult, Verdict
from shared.db.session import statement_session
from shared.db.types import utcnow
from shared.domain import analysis_lifecycle as lifecycle
from shared.domain.artifacts import NewArtifact, write_artifacts_of
from shared.domain.enums import AnalysisStatus
from shared.domain.llm_keys import summary_secrets_for
from shared.domain.service_registry import decrypt_authinfo, decrypt_signing_secret
from shared.domain.summary_parameters import site_summary_parameters
from shared.observability.metrics import DISPATCH_ATTEMPTS, bind_analysis
from shared.runtime.group_commit import GroupCommit
from shared.runtime.resources import Resources
from shared.security.redaction import request_secrets

log = logging.getLogger("skyhook.dispatcher")


# Nobody waits on an attempt's record but its sending slot (the callback does not), so ends
# are gathered longer than the hot paths' 2 ms: at 300 analyses/s one statement records about
# six of them instead of one or two.
FINISH_WINDOW_SECONDS = 0.02


class PreparationError(ValueError):
    """The request cannot be built; retrying would not help."""


@dataclass(frozen=True)
class ClaimedAttempt:
    """An attempt claimed and ready: its request, or why it fails without being sent."""

    subject: lifecycle.Subject
    attempt_number: int
    started_at: datetime
    outbound: Outbound | None
    refused: SendResult | None = None

    @property
    def analysis_id(self) -> int:
        return self.subject.analysis_id


class AttemptRunner:
    def __init__(self, resources: Resources, http: aiohttp.ClientSession) -> None:
        settings = resources.settings
        self.engine, self.sessions = resources.engine, resources.sessions
        self.secret_box, self.callback_tokens = resources.secret_box, resources.callback_tokens
        self.artifacts, self.outbox = resources.artifacts, resources.outbox
        self.site = Site(settings.public_url, site_summary_parameters(settings))
        self.site_llm_key = settings.llm_api_key
        self.retry_delays = settings.dispatch_retry_delays_seconds
        self.sender = Sender(http, resources.url_policy, settings.dispatch_timeout_seconds)
        # Attempts that end together are recorded together (one statement per batch).
        self._finishes: GroupCommit[lifecycle.FinishedAttempt, bool] = GroupCommit(
            self._finish_many,
            max_items=settings.dispatch_prefetch,
            max_wait_seconds=FINISH_WINDOW_SECONDS,
        )

    async def claim_many(self, analysis_ids: list[int]) -> list[ClaimedAttempt | None]:
        """Many messages at once: claim the due rows (``queued → dispatching``) with their
        services and authors, build (first attempt: assemble and store) each request, and
        mark the attempts as sending. For each id in turn, its claimed attempt, or None when
        the row is not ours to send (not due, vanished, or an earlier duplicate of the same id
        in the batch took it).

        On PostgreSQL each of these statements commits on its own (no transaction, so no BEGIN
        and COMMIT round trips): a dispatcher that stops between the claim and the send leaves
        the row ``dispatching``, which the reaper requeues, as it does when one stops during
        the send."""
        started_at = utcnow()
        claimed: dict[int, ClaimedAttempt] = {}
        memo: InputsMemo = {}
        async with statement_session(self.engine) as session:
            contexts = await claim_contexts(session, analysis_ids, started_at)
            await assemble_claimed_inputs(session, [c for _, c in contexts.values()], memo)
            sending: list[lifecycle.Sending] = []
            new_inputs: dict[int, list[NewArtifact]] = {}
            replaced_inputs: dict[int, list[NewArtifact]] = {}
            for analysis_id, (attempt_number, context) in sorted(contexts.items()):
                attempt, payload = await self._prepared(
                    session, context, attempt_number, started_at, memo
                )
                claimed[analysis_id] = attempt
                if payload is None:
                    continue
                if payload.new_file is not None:
                    written = replaced_inputs if payload.replaces_stored else new_inputs
                    written[analysis_id] = [payload.new_file]
                sending.append(lifecycle.Sending(analysis_id, attempt_number, payload.provenance))
            await lifecycle.mark_sending_many(session, sending, utcnow(), started_at, new_inputs)
        if replaced_inputs:  # several statements: a transaction of their own
            async with self.sessions.begin() as session:
                await write_artifacts_of(session, replaced_inputs, replace=True)
        return [claimed.pop(analysis_id, None) for analysis_id in analysis_ids]

    async def _prepared(
        self,
        session: AsyncSession,
        context: DispatchContext,
        attempt_number: int,
        started_at: datetime,
        memo: InputsMemo,
    ) -> tuple[ClaimedAttempt, StoredPayload | None]:
        """The claimed attempt with its request and payload, or why it fails unsent."""
        service = context.service
        subject = lifecycle.Subject(
            context.analysis.id, context.analysis.obj_id, service.id, bool(service.is_summary)
        )
        try:
            outbound, payload = await self._prepare(session, context, memo)
        except PreparationError as exc:
            refused = SendResult(Verdict.FAILED, str(exc), str(exc))
            return ClaimedAttempt(subject, attempt_number, started_at, None, refused), None
        return ClaimedAttempt(subject, attempt_number, started_at, outbound), payload

    async def run(self, attempt: ClaimedAttempt) -> None:
        with bind_analysis(attempt.analysis_id):
            result = attempt.refused
            if result is None:
                assert attempt.outbound is not None
                # The sender redacts the request's secrets from what the service answered.
                result = await self.sender.send(attempt.outbound)
            await self._finish(attempt.subject, attempt.attempt_number, attempt.started_at, result)

    async def _prepare(
        self, session: AsyncSession, context: DispatchContext, memo: InputsMemo
    ) -> tuple[Outbound, StoredPayload]:
        """The request to send, and the payload it was built from."""
        service = context.service
        if not service.enabled:
            raise PreparationError(
                f"Analysis Service ID: {service.id} was disabled before the analysis was sent."
            )
        try:
            authinfo = decrypt_authinfo(self.secret_box, service)
            signing_secret = decrypt_signing_secret(self.secret_box, service)
        except ValueError:
            raise PreparationError(
                "Cannot decrypt the stored credentials of this analysis service "
                "(was SKYHOOK_SECRET_KEY changed without listing the old key?)"
            ) from None
        try:
            payload = await stored_payload(self.artifacts, self.site, session, context, memo)
        except InputsError as exc:
            raise PreparationError(f"Cannot assemble the inputs: {exc}") from None
        except ValueError as exc:
            raise PreparationError(f"Cannot encode the request: {exc}") from None
        # Added to the outbound body only: inputs.json was stored without them. The LLM key
        # (``analysis_parameters.openai_api_key``) is injected here and nowhere else.
        site_llm_key = self.site_llm_key
        secrets = {
            **payload.secret_parameters,
            **summary_secrets_for(
                self.secret_box,
                context.author,
                service,
                site_llm_key.get_secret_value() if site_llm_key else None,
            ),
        }
        token = self.callback_tokens.token_for(context.analysis.unique_id)
        outbound = Outbound(
            url=service.url,
            body=body_to_send(payload.body, self.site.callback_url(token), secrets),
            message_id=context.analysis.unique_id,
            authentication_type=service.authentication_type,
            authinfo=authinfo,
            signing_secret=signing_secret,
            secrets=request_secrets(
                authinfo,
                signing_secret=signing_secret,
                callback_token=token,
                others=[
                    *(str(value) for value in secrets.values()),
                    *([site_llm_key.get_secret_value()] if site_llm_key else []),
                ],
            ),
        )
        return outbound, payload

    async def _finish(
        self,
        subject: lifecycle.Subject,
        attempt_number: int,
        started_at: datetime,
        result: SendResult,
    ) -> None:
        analysis_id = subject.analysis_id
        now = utcnow()
        status, message, next_at, outcome = self._decide(attempt_number, result, now)
        record = lifecycle.AttemptRecord(
            attempt_number=attempt_number,
            started_at=started_at,
            outcome=outcome,
            latency_ms=result.latency_ms,
            http_status=result.http_status,
            error=result.error,
        )
        finished = lifecycle.FinishedAttempt(subject, record, status, message, next_at)
        moved = await self._finishes.submit(finished)
        DISPATCH_ATTEMPTS.labels(outcome).inc()
        log.info(
            "analysis %d attempt %d: %s (HTTP %s)%s",
            analysis_id,
            attempt_number,
            outcome,
            result.http_status,
            f" → {status}" if moved else "; row already moved on, left as it is",
        )

    async def _finish_many(self, attempts: list[lifecycle.FinishedAttempt]) -> list[bool]:
        return await lifecycle.finish_attempts(self.engine, attempts, utcnow(), outbox=self.outbox)

    def _decide(
        self, attempt_number: int, result: SendResult, now: datetime
    ) -> tuple[AnalysisStatus, str, datetime | None, str]:
        """(new status, status message, next attempt time, attempt outcome)."""
        if result.verdict == Verdict.ACCEPTED:
            return AnalysisStatus.PENDING, result.message, None, "accepted"
        if result.verdict == Verdict.FAILED:
            return AnalysisStatus.FAILURE, result.message, None, "failed"
        delay = retry_delay(attempt_number, self.retry_delays, result.retry_after)
        if delay is None:
            message = f"Service unreachable after {attempt_number} attempts: {result.error}"
            return AnalysisStatus.FAILURE, message, None, "failed"
        next_at = now + timedelta(seconds=delay)
        message = (
            f"Dispatch attempt {attempt_number} failed ({result.error}); "
            f"next attempt at {lifecycle.naive_utc_text(next_at)} UTC"
        )
        return AnalysisStatus.QUEUED, message, next_at, "retry"
