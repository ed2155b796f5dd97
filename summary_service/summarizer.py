"""The LLM summarizer: an analysis service in SkyPortal's protocol (``skyhook summarizer``).

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
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from service_kit.operations import STANDALONE_OPERATIONS_ROUTES
from service_kit.protocol import (
    CALLBACK_RETRY_DELAYS_SECONDS,
    CALLBACK_TIMEOUT_SECONDS,
    RequestError,
    accepted,
    health,
    post_callback,
    read_request,
    redact_callback_url,
    refused,
)
from shared.llm.client import ChatRequest, ChatResult, Endpoint, LLMClient, LLMError, LLMErrorKind
from shared.runtime.settings import LLMSettings
from summary_service.options import (
    OptionsError,
    SummaryOptions,
    request_api_key,
    request_options,
    request_parameters,
)
from summary_service.prompt import InputsError, NothingToSummarize, SourceFacts, build_prompt
from summary_service.prompt import read_facts as read_source_facts

log = logging.getLogger("skyhook.summarizer")
callback_log = logging.getLogger("skyhook.summarizer.callback")

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


@dataclass(frozen=True)
class SummarizerConfig:
    settings: LLMSettings
    callback_retry_delays_seconds: tuple[float, ...] = CALLBACK_RETRY_DELAYS_SECONDS
    callback_timeout_seconds: float = CALLBACK_TIMEOUT_SECONDS
    concurrency: int = 8
    max_body_bytes: int = 16 * 1024 * 1024


@dataclass(frozen=True)
class SummaryJob:
    callback_url: str = field(repr=False)
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


def failure_body(message: str) -> dict[str, Any]:
    return {"status": "failure", "message": message, "analysis": {}}


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
    """Runtime state: the callback HTTP client and the summaries in progress."""

    def __init__(self, config: SummarizerConfig, http: aiohttp.ClientSession) -> None:
        self.config = config
        self.http = http
        self.tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(config.concurrency)

    def start(self, job: SummaryJob) -> None:
        task = asyncio.create_task(self._run(job))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, job: SummaryJob) -> None:
        async with self._slots:
            try:
                body = await self.summarize(job)
            except Exception:
                log.exception("summary of %s failed unexpectedly", job.facts.source_id)
                body = failure_body("The summarizer failed unexpectedly; see its log.")
        log.info("summary of %s: %s", job.facts.source_id, body["status"])
        await post_callback(
            self.http,
            job.callback_url,
            json.dumps(body, allow_nan=False).encode(),
            self.config.callback_retry_delays_seconds,
            self.config.callback_timeout_seconds,
            logger=callback_log,
        )

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


SUMMARIZER = web.AppKey("summarizer", Summarizer)


def build_job(settings: LLMSettings, payload: dict[str, Any]) -> SummaryJob:
    """A job from a request; raises InputsError/OptionsError with a message for a 400."""
    parameters = request_parameters(payload)
    return SummaryJob(
        callback_url=payload["callback_url"],
        facts=read_source_facts(payload),
        options=request_options(settings, parameters),
        api_key=request_api_key(settings, parameters),
    )


async def summarize(request: web.Request) -> web.Response:
    summarizer = request.app[SUMMARIZER]
    try:
        payload = await read_request(request, url_message=BAD_CALLBACK_URL)
        job = await asyncio.to_thread(build_job, summarizer.config.settings, payload)
    except (RequestError, InputsError, OptionsError) as exc:
        return refused(str(exc))
    log.info(
        "summary of %s requested (callback %s)",
        job.facts.source_id,
        redact_callback_url(job.callback_url),
    )
    summarizer.start(job)
    return accepted(SERVICE_NAME)


def create_summarizer_app(config: SummarizerConfig) -> web.Application:
    app = web.Application(client_max_size=config.max_body_bytes)
    app.add_routes(
        [web.get("/", health), *STANDALONE_OPERATIONS_ROUTES, web.post("/summarize", summarize)]
    )

    async def runtime(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(trust_env=False) as http:
            app[SUMMARIZER] = Summarizer(config, http)
            yield
            tasks = list(app[SUMMARIZER].tasks)
            if tasks:
                log.warning("stopping: %d summaries in progress are abandoned", len(tasks))
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    app.cleanup_ctx.append(runtime)
    return app
