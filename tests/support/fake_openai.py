"""A real local OpenAI-compatible HTTP server for tests (aiohttp on 127.0.0.1).

``POST /v1/chat/completions`` and ``POST /v1/embeddings`` answer with OpenAI's JSON shapes and
token usage. The chat "model" writes a deterministic summary from the facts in the prompt (the
source id, classifications and comment texts), so a summary mentions what its comments say.
Embeddings are hashed bags of words (L2-normalized), so texts sharing words are near.

Errors as OpenAI sends them: 401 for a key not in ``valid_keys`` (with the masked key in the
message, as OpenAI does), 404 for an unknown model, 400 when a reasoning model gets
``max_tokens``/``temperature``, and scripted ones (``fail_next``: 429, 500, …).
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support.ports import free_port

CHAT_MODELS = frozenset({"gpt-4o-mini", "fake-chat", "o4-mini"})
EMBEDDING_MODELS = frozenset({"text-embedding-3-small", "fake-embed"})
DEFAULT_DIMENSIONS = 256
_WORD = re.compile(r"[a-z0-9]+")
_COMMENT_LINE = re.compile(r"^\s+- \[[^\]]*\](?: \(bot\))? (?P<text>.*)$")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def bag_of_words_vector(text: str, dimensions: int = DEFAULT_DIMENSIONS) -> list[float]:
    vector = [0.0] * dimensions
    for word in words(text):
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        index = int.from_bytes(digest[:4], "little") % dimensions
        vector[index] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm else vector


def masked(key: str) -> str:
    return key[:3] + "*" * max(len(key) - 7, 3) + key[-4:]


def openai_error(
    status: int, message: str, kind: str, code: str | None, param: str | None = None
) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return web.json_response(body, status=status)


def fake_summary(prompt: str, max_words: int) -> str:
    """What the fake model answers: the facts of the prompt, restated."""
    source = re.search(r"^Source ID: (.+)$", prompt, re.MULTILINE)
    classes = re.findall(r"^\s+- ([^\[(\n][^(\n]*?)(?: \(probability [0-9.]+\))?$", prompt, re.M)
    comments = [m.group("text") for line in prompt.splitlines() if (m := _COMMENT_LINE.match(line))]
    parts = [f"{source.group(1) if source else 'This source'} is an astronomical source."]
    if classes:
        parts.append(f"It is classified as {', '.join(c.strip() for c in classes)}.")
    if comments:
        parts.append("Observers report: " + "; ".join(comments) + ".")
    text = " ".join(parts)
    return " ".join(text.split()[:max_words])


@dataclass
class Scripted:
    status: int
    path: str | None  # None: any endpoint


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeOpenAI:
    valid_keys: set[str] = field(default_factory=lambda: {"sk-site-valid-key-0001"})
    dimensions: int = DEFAULT_DIMENSIONS
    requests: list[Recorded] = field(default_factory=list)
    scripted: list[Scripted] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    _runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def fail_next(self, status: int, times: int = 1, path: str | None = None) -> None:
        self.scripted.extend(Scripted(status, path) for _ in range(times))

    def requests_to(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == path]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeOpenAI:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- request checks ---------------------------------------------------------------------

    def _scripted_error(self, path: str) -> web.Response | None:
        for item in self.scripted:
            if item.path in (None, path):
                self.scripted.remove(item)
                return _scripted_response(item.status)
        return None

    def _auth_error(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        key = header.removeprefix("Bearer ").strip()
        if key in self.valid_keys:
            return None
        return openai_error(
            401,
            f"Incorrect API key provided: {masked(key)}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            "invalid_api_key",
        )

    async def _record(self, request: web.Request) -> dict[str, Any]:
        body = await request.json()
        self.requests.append(Recorded(request.path, dict(request.headers), body))
        return body

    # --- endpoints --------------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        refused = self._auth_error(request) or self._scripted_error(request.path)
        if refused is not None:
            return refused
        model = body.get("model")
        if model not in CHAT_MODELS:
            return _unknown_model(model)
        if model.startswith("o") and ("max_tokens" in body or "temperature" in body):
            param = "max_tokens" if "max_tokens" in body else "temperature"
            return openai_error(
                400,
                f"Unsupported parameter: '{param}' is not supported with this model.",
                "invalid_request_error",
                "unsupported_parameter",
                param,
            )
        prompt = "\n".join(str(m.get("content", "")) for m in body.get("messages", []))
        limit = body.get("max_completion_tokens") or body.get("max_tokens") or 1000
        text = fake_summary(body["messages"][-1]["content"], int(limit))
        prompt_tokens, completion_tokens = len(words(prompt)), len(words(text))
        return web.json_response(
            {
                "id": f"chatcmpl-fake{len(self.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "refusal": None},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
                "system_fingerprint": "fp_fake",
            }
        )

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        refused = self._auth_error(request) or self._scripted_error(request.path)
        if refused is not None:
            return refused
        model = body.get("model")
        if model not in EMBEDDING_MODELS:
            return _unknown_model(model)
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        dimensions = int(body.get("dimensions") or self.dimensions)
        as_base64 = body.get("encoding_format") == "base64"
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": _encode(bag_of_words_vector(text, dimensions), as_base64),
            }
            for i, text in enumerate(texts)
        ]
        tokens = sum(len(words(t)) for t in texts)
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )


def _encode(vector: Iterable[float], as_base64: bool) -> Any:
    values = list(vector)
    if not as_base64:
        return values
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


def _unknown_model(model: Any) -> web.Response:
    return openai_error(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        "invalid_request_error",
        "model_not_found",
    )


def _scripted_response(status: int) -> web.Response:
    if status == 429:
        response = openai_error(
            429,
            "Rate limit reached for requests. Please try again in 20ms.",
            "requests",
            "rate_limit_exceeded",
        )
        response.headers["retry-after-ms"] = "20"
        return response
    if status >= 500:
        return openai_error(
            status,
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            None,
        )
    return openai_error(status, f"Scripted error {status}", "invalid_request_error", None)
