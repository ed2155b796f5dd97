"""A client for OpenAI-compatible APIs (OpenAI, vLLM, Ollama, llama.cpp, …) built on the
official ``openai`` package: chat completions for summaries, embeddings for summary search.

Every failure becomes an :class:`LLMError` with a ``kind`` a caller can turn into advice, and a
``detail`` from the API with any API key removed. The key itself is never logged.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Any

import openai
from openai import AsyncOpenAI

# Reasoning models refuse ``max_tokens`` and ``temperature`` on chat completions (SkyPortal's
# default o4-mini failed this way); they take ``max_completion_tokens``.
_REASONING_MODEL = re.compile(r"^(?:[\w.-]+/)?(?:o\d|gpt-5)", re.IGNORECASE)
_KEY_LIKE = re.compile(r"\b(sk-[A-Za-z0-9_*.\-]{3,})")
MAX_DETAIL = 500


class LLMErrorKind(StrEnum):
    AUTHENTICATION = "authentication"  # 401: the key is missing, wrong or revoked
    PERMISSION = "permission"  # 403
    NOT_FOUND = "not_found"  # 404: usually an unknown model
    RATE_LIMIT = "rate_limit"  # 429: too many requests or no quota left
    BAD_REQUEST = "bad_request"  # other 4xx
    SERVER = "server"  # 5xx
    CONNECTION = "connection"  # unreachable or timed out
    BAD_RESPONSE = "bad_response"  # an answer without the expected content


class LLMError(Exception):
    def __init__(self, kind: LLMErrorKind, detail: str, api_status: int | None = None) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail
        self.api_status = api_status  # the LLM API's HTTP answer, when it gave one


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    api_key: str
    timeout_seconds: float = 60.0
    max_retries: int = 2


@dataclass(frozen=True)
class ChatRequest:
    model: str
    system_prompt: str
    prompt: str
    temperature: float
    max_tokens: int


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    def to_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True)
class ChatResult:
    text: str
    model: str
    usage: Usage
    latency_ms: float


def is_reasoning_model(model: str) -> bool:
    return _REASONING_MODEL.match(model) is not None


def sampling_arguments(model: str, temperature: float, max_tokens: int) -> dict[str, Any]:
    if is_reasoning_model(model):
        return {"max_completion_tokens": max_tokens}
    return {"max_tokens": max_tokens, "temperature": temperature}


def redact(text: str, secret: str | None) -> str:
    """``text`` without the key, nor anything shaped like an OpenAI key (even masked ones)."""
    if secret:
        text = text.replace(secret, "***")
    return _KEY_LIKE.sub("sk-***", text)


def _api_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return inner["message"]
        if isinstance(body.get("message"), str):
            return body["message"]
    text = exc.response.text if exc.response is not None else ""
    return text.strip() or f"HTTP {exc.status_code}"


def _kind_of(api_status: int) -> LLMErrorKind:
    if api_status == 401:
        return LLMErrorKind.AUTHENTICATION
    if api_status == 403:
        return LLMErrorKind.PERMISSION
    if api_status == 404:
        return LLMErrorKind.NOT_FOUND
    if api_status == 429:
        return LLMErrorKind.RATE_LIMIT
    if api_status >= 500:
        return LLMErrorKind.SERVER
    return LLMErrorKind.BAD_REQUEST


def translate_error(exc: openai.OpenAIError, endpoint: Endpoint) -> LLMError:
    if isinstance(exc, openai.APIStatusError):
        detail = redact(_api_message(exc), endpoint.api_key)[:MAX_DETAIL]
        return LLMError(_kind_of(exc.status_code), detail, exc.status_code)
    if isinstance(exc, openai.APITimeoutError):
        detail = f"no answer from {endpoint.base_url} within {endpoint.timeout_seconds:g} s"
        return LLMError(LLMErrorKind.CONNECTION, detail)
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc
        detail = f"cannot connect to {endpoint.base_url}: {type(cause).__name__}"
        return LLMError(LLMErrorKind.CONNECTION, redact(detail, endpoint.api_key))
    detail = redact(f"{type(exc).__name__}: {exc}", endpoint.api_key)[:MAX_DETAIL]
    return LLMError(LLMErrorKind.BAD_RESPONSE, detail)


def _usage(raw: Any) -> Usage:
    prompt = int(getattr(raw, "prompt_tokens", 0) or 0)
    completion = int(getattr(raw, "completion_tokens", 0) or 0)
    total = int(getattr(raw, "total_tokens", 0) or 0) or prompt + completion
    return Usage(prompt, completion, total)


class LLMClient:
    """One ``AsyncOpenAI`` client for an endpoint; use ``async with`` or call ``close``."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._client = AsyncOpenAI(
            api_key=endpoint.api_key,
            base_url=endpoint.base_url,
            timeout=endpoint.timeout_seconds,
            max_retries=endpoint.max_retries,
        )

    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._client.close()

    async def chat(self, request: ChatRequest) -> ChatResult:
        started = time.monotonic()
        try:
            response = await self._client.chat.completions.create(
                model=request.model,
                messages=[
                    {"role": "system", "content": request.system_prompt},
                    {"role": "user", "content": request.prompt},
                ],
                **sampling_arguments(request.model, request.temperature, request.max_tokens),
            )
        except openai.OpenAIError as exc:
            raise translate_error(exc, self.endpoint) from None
        latency_ms = round((time.monotonic() - started) * 1000.0, 1)
        choices = response.choices or []
        text = (choices[0].message.content or "").strip() if choices else ""
        if not text:
            raise LLMError(LLMErrorKind.BAD_RESPONSE, "the API answered without any text")
        return ChatResult(text, response.model or request.model, _usage(response.usage), latency_ms)

    async def embed(self, texts: Sequence[str], model: str) -> list[list[float]]:
        """One vector per text, in order."""
        if not texts:
            return []
        try:
            response = await self._client.embeddings.create(
                input=list(texts), model=model, encoding_format="float"
            )
        except openai.OpenAIError as exc:
            raise translate_error(exc, self.endpoint) from None
        items = sorted(response.data, key=lambda item: item.index)
        vectors = [[float(x) for x in item.embedding] for item in items]
        if len(vectors) != len(texts) or any(
            not v or not all(math.isfinite(x) for x in v) for v in vectors
        ):
            raise LLMError(
                LLMErrorKind.BAD_RESPONSE,
                f"the API returned {len(vectors)} usable vectors for {len(texts)} texts",
            )
        return vectors
