"""The LLM summarizer: an analysis service in SkyPortal's protocol (``skyhook summarizer`` or
``python -m llm_summarizer``).

``POST /summarize`` checks the request, answers 200 ``{"status": "pending"}`` at once, then
asks an OpenAI-compatible chat API for a summary of the source's comments, classifications and
redshift, and POSTs the webhook body to ``callback_url`` (retrying transient failures).
``GET /`` is the health check.

Results are JSON: ``{summary, model, usage: {prompt_tokens, completion_tokens, total_tokens},
latency_ms}``; no embedding is stored in them (the summary service computes embeddings). Every
failure (no key, key refused, API error) is reported through the webhook as ``failure`` with
a message saying what to do. The request body holds the key: it is never logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from aiohttp import web

from llm_summarizer.options import (
    OptionsError,
    SummaryOptions,
    request_api_key,
    request_options,
    request_parameters,
)
from llm_summarizer.prompt import InputsError, NothingToSummarize, SourceFacts, build_prompt
from llm_summarizer.prompt import read_facts as read_source_facts
from service_kit.operations import STANDALONE_OPERATIONS_ROUTES
from service_kit.protocol import (
    CALLBACK_RETRY_DELAYS_SECONDS,
    CALLBACK_TIMEOUT_SECONDS,
    STOP_GRACE_SECONDS,
    JobRunner,
    failure_body,
    health,
)
from shared.llm.client import ChatRequest, ChatResult, Endpoint, LLMClient, LLMError, LLMErrorKind
from shared.runtime.settings import LLMSettings, SummarizerSettings, load_settings

log = logging.getLogger("skyhook.summarizer")

SERVICE_NAME = "summarizer"
DEFAULT_PORT = 7003
BAD_CALLBACK_URL = "callback_url must be an absolute http(s) URL"
SET_KEY_ADVICE = (
    "Set a valid key with PUT /api/internal/profile/llm_key or ask the operator to set "
    "SKYHOOK_LLM_API_KEY."
)
NO_KEY_MESSAGE = (
    "No LLM API key is available for this summary. Set your own key with "
    "PUT /api/internal/profile/llm_key, or ask the operator to set SKYHOOK_LLM_API_KEY "
    "for the summarizer."
)
STOPPED_MESSAGE = "The summarizer was stopped before this summary was written; ask for it again."


@dataclass(frozen=True)
class SummarizerConfig:
    settings: LLMSettings
    callback_retry_delays_seconds: tuple[float, ...] = CALLBACK_RETRY_DELAYS_SECONDS
    callback_timeout_seconds: float = CALLBACK_TIMEOUT_SECONDS
    concurrency: int = 8
    max_body_bytes: int = 16 * 1024 * 1024
    # On shutdown, summaries under way get this long to finish and call back.
    stop_grace_seconds: float = STOP_GRACE_SECONDS


@dataclass(frozen=True)
class SummaryJob:
    facts: SourceFacts
    options: SummaryOptions
    api_key: str | None = field(repr=False)


def failure_message(error: LLMError, model: str) -> str:
    detail = error.detail
    if error.kind == LLMErrorKind.AUTHENTICATION:
        return f"The LLM API rejected the API key (401). {SET_KEY_ADVICE}"
    if error.kind == LLMErrorKind.PERMISSION:
        return f"The LLM API refused this key access (403): {detail}. {SET_KEY_ADVICE}"
    if error.kind == LLMErrorKind.NOT_FOUND:
        return (
            f"The LLM API does not know the model '{model}' (404): {detail}. Choose another "
            "model with the 'model' analysis parameter or SKYHOOK_LLM_MODEL."
        )
    if error.kind == LLMErrorKind.RATE_LIMIT:
        return (
            f"The LLM API is rate limiting this key or its quota is used up (429): {detail}. "
            "Try again later, or check the key's plan and billing."
        )
    if error.kind == LLMErrorKind.BAD_REQUEST:
        return f"The LLM API refused the request (HTTP {error.api_status}): {detail}"
    if error.kind == LLMErrorKind.SERVER:
        return f"The LLM API failed (HTTP {error.api_status}): {detail}. Try again later."
    if error.kind == LLMErrorKind.CONNECTION:
        return f"Could not reach the LLM API: {detail}. Try again later."
    return f"The LLM API gave an unusable answer: {detail}"


def success_body(result: ChatResult) -> dict[str, Any]:
    usage = result.usage
    results = {
        "summary": result.text,
        "model": result.model,
        "usage": usage.to_dict(),
        "latency_ms": result.latency_ms,
    }
    return {
        "status": "success",
        "message": (
            f"Summary written by {result.model} "
            f"({usage.total_tokens} tokens, {result.latency_ms:.0f} ms)"
        ),
        "analysis": {"results": {"format": "json", "data": results}},
    }


class Summarizer:
    """Writes summaries, at most ``config.concurrency`` at a time."""

    def __init__(self, config: SummarizerConfig) -> None:
        self.config = config
        self._slots = asyncio.Semaphore(config.concurrency)

    async def run(self, job: SummaryJob) -> bytes:
        """The webhook body for a job, as the callback sends it."""
        async with self._slots:
            body = await self.summarize(job)
        log.info("summary of %s: %s", job.facts.source_id, body["status"])
        return json.dumps(body, allow_nan=False).encode()

    async def summarize(self, job: SummaryJob) -> dict[str, Any]:
        """The webhook body for a job: its summary, or a failure saying what to do."""
        try:
            prompt = build_prompt(job.options.prompt, job.facts)
        except NothingToSummarize as exc:
            return failure_body(str(exc))
        if job.api_key is None:
            return failure_body(NO_KEY_MESSAGE)
        settings = self.config.settings
        endpoint = Endpoint(
            settings.llm_base_url,
            job.api_key,
            settings.llm_timeout_seconds,
            settings.llm_max_retries,
        )
        request = ChatRequest(
            model=job.options.model,
            system_prompt=job.options.system_prompt,
            prompt=prompt,
            temperature=job.options.temperature,
            max_tokens=job.options.max_tokens,
        )
        try:
            async with LLMClient(endpoint) as client:
                result = await client.chat(request)
        except LLMError as exc:
            log.warning("summary of %s: LLM API error %s", job.facts.source_id, exc.kind)
            return failure_body(failure_message(exc, job.options.model))
        return success_body(result)


def build_job(settings: LLMSettings, payload: dict[str, Any]) -> SummaryJob:
    """A job from a request; raises InputsError/OptionsError with a message for a 400."""
    parameters = request_parameters(payload)
    return SummaryJob(
        facts=read_source_facts(payload),
        options=request_options(settings, parameters),
        api_key=request_api_key(settings, parameters),
    )


def describe(job: SummaryJob) -> str:
    return f"summary of {job.facts.source_id}"


def create_summarizer_app(config: SummarizerConfig) -> web.Application:
    app = web.Application(client_max_size=config.max_body_bytes)
    app.add_routes([web.get("/", health), *STANDALONE_OPERATIONS_ROUTES])
    runner = JobRunner(
        SERVICE_NAME,
        partial(build_job, config.settings),
        Summarizer(config).run,
        refusals=(InputsError, OptionsError),
        callback_url_message=BAD_CALLBACK_URL,
        describe=describe,
        error_message=lambda exc: "The summarizer failed unexpectedly; see its log.",
        stopped_message=STOPPED_MESSAGE,
        callback_retry_delays_seconds=config.callback_retry_delays_seconds,
        callback_timeout_seconds=config.callback_timeout_seconds,
        stop_grace_seconds=config.stop_grace_seconds,
        logger=log,
    )
    runner.attach(app, "/summarize")
    return app


def main() -> None:
    """``python -m llm_summarizer``: serve on SKYHOOK_HOST:SKYHOOK_PORT (default
    127.0.0.1:7003) with the ``SKYHOOK_LLM_*`` settings."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = load_settings(None, model=SummarizerSettings)
    port = settings.port if "port" in settings.model_fields_set else DEFAULT_PORT
    config = SummarizerConfig(settings, stop_grace_seconds=settings.shutdown_grace_seconds)
    web.run_app(create_summarizer_app(config), host=settings.host, port=port, access_log=None)
