"""The LLM summarizer service (``POST /summarize``) against a real local OpenAI-compatible
server and a real callback receiver: prompt, results, parameters, keys, errors, callbacks."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from dispatcher.inputs import (
    CLASSIFICATIONS_COLUMNS,
    COMMENTS_COLUMNS,
    REDSHIFT_COLUMNS,
    records_to_csv,
    records_to_json,
)
from llm_summarizer.app import NO_KEY_MESSAGE, SummarizerConfig, create_summarizer_app
from llm_summarizer.prompt import build_prompt, read_facts
from shared.runtime.settings import Settings, load_settings
from skyhook.composition import run_service
from tests.support.fake_openai import FakeOpenAI
from tests.support.fake_service import FakeService, Reply
from tests.support.polling import eventually
from tests.support.ports import free_port

SITE_KEY = "sk-site-valid-key-0001"
USER_KEY = "sk-user-own-key-abcdef123456"
BAD_KEY = "sk-wrong-key-zyxwvu987654"
SYSTEM_PROMPT = "You are a careful astronomer."


def when(day: int, hour: int = 12) -> datetime:
    return datetime(2024, 5, day, hour, 30, tzinfo=UTC)


COMMENTS = [
    {"text": "Spectrum shows broad Si II 6355 absorption", "bot": False, "created_at": when(3)},
    {"text": "Rising fast in g band", "bot": True, "created_at": when(1)},
    {"text": "OpenAI-style automated note: host galaxy is an elliptical", "created_at": when(2)},
]
CLASSIFICATIONS = [
    {"classification": "Ia", "probability": 0.9, "created_at": when(2)},
    {"classification": "Ia-91bg", "probability": 0.25, "created_at": when(2)},
]


def payload(
    callback_url: str,
    *,
    parameters: dict[str, Any] | None = None,
    fmt: str = "csv",
    comments: list[dict[str, Any]] = COMMENTS,
    classifications: list[dict[str, Any]] = CLASSIFICATIONS,
    redshift: float | None = 0.0451,
) -> dict[str, Any]:
    """The request a skyhook (or SkyPortal) dispatcher sends, with real CSV/JSON writers."""
    write = records_to_json if fmt == "json" else records_to_csv
    redshift_rows = [{"redshift": redshift, "redshift_error": 0.0002, "redshift_origin": "host"}]
    inputs = {
        "analysis_parameters": parameters or {},
        "comments": write(COMMENTS_COLUMNS, comments),
        "classifications": write(CLASSIFICATIONS_COLUMNS, classifications),
        "redshift": write(REDSHIFT_COLUMNS, redshift_rows),
    }
    return {
        "callback_url": callback_url,
        "callback_method": "POST",
        "invalid_after": "2030-01-01 00:00:00.000000",
        "analysis_resource_type": "obj",
        "resource_id": "ZTF24abcdef",
        "inputs": inputs,
        "analysis_parameters": parameters or {},
    }


@pytest.fixture
async def llm() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(valid_keys={SITE_KEY, USER_KEY}) as fake:
        yield fake


@pytest.fixture
async def callbacks() -> AsyncIterator[FakeService]:
    service = await FakeService().start()
    service.default = Reply(200, '{"status": "success"}')
    yield service
    await service.stop()


def summarizer_settings(llm: FakeOpenAI, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "llm_base_url": llm.base_url,
        "llm_api_key": SITE_KEY,
        "llm_model": "fake-chat",
        "llm_temperature": 0.2,
        "llm_max_tokens": 300,
        "llm_max_retries": 0,
        "llm_system_prompt": SYSTEM_PROMPT,
        **overrides,
    }
    return load_settings(None, **values)


@asynccontextmanager
async def summarizer(settings: Settings, **config: Any) -> AsyncIterator[TestClient]:
    options = {"callback_retry_delays_seconds": (0.05, 0.05), "callback_timeout_seconds": 5.0}
    app = create_summarizer_app(SummarizerConfig(settings, **{**options, **config}))
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def summarize(
    settings: Settings, callbacks: FakeService, body: dict[str, Any], **config: Any
) -> dict[str, Any]:
    """POST a request, expect 200 pending, return the webhook body the summarizer sent."""
    async with summarizer(settings, **config) as client:
        response = await client.post("/summarize", json=body)
        assert response.status == 200
        assert await response.json() == {
            "status": "pending",
            "message": "summarizer: analysis started",
        }
        (received,) = await callbacks.wait_received(1)
    return received.json()


# --- the prompt -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_prompt_keeps_instructions_redshift_order_dates_and_probabilities(fmt: str) -> None:
    facts = read_facts(payload("http://cb", fmt=fmt))
    prompt = build_prompt("Summarize this source.", facts)

    lines = prompt.splitlines()
    assert lines[:4] == [
        "Summarize this source.",
        "'''",
        "Source ID: ZTF24abcdef",
        "Redshift: 0.0451 ± 0.0002",
    ]
    assert lines[4:7] == [
        "Classifications:",
        "  - Ia (probability 0.90)",
        "  - Ia-91bg (probability 0.25)",
    ]
    assert lines[7:] == [
        "Comments (newest first):",
        "  - [2024-05-03 12:30 UTC] Spectrum shows broad Si II 6355 absorption",
        "  - [2024-05-02 12:30 UTC] OpenAI-style automated note: host galaxy is an elliptical",
        "  - [2024-05-01 12:30 UTC] (bot) Rising fast in g band",
        "'''",
    ]


def test_prompt_reads_skyportal_naive_times_and_drops_only_exact_repeats() -> None:
    csv_text = (
        "text,bot,modified,origin,created_at\n"
        "Same text,False,,,2024-05-01 10:00:00.000000\n"
        "Same text,False,,,2024-05-01 10:00:00.000000\n"
        "Same text,False,,,2024-05-04 09:00:00.000000\n"
        '"Multi\nline",False,,,2024-05-02 10:00:00.000000\n'
    )
    facts = read_facts({"resource_id": "s1", "inputs": {"comments": csv_text}})
    assert [(c.text, c.created_at) for c in facts.comments] == [
        ("Same text", datetime(2024, 5, 4, 9, tzinfo=UTC)),
        ("Multi line", datetime(2024, 5, 2, 10, tzinfo=UTC)),
        ("Same text", datetime(2024, 5, 1, 10, tzinfo=UTC)),
    ]


# --- summaries --------------------------------------------------------------------------------


async def test_summary_results_record_model_usage_and_latency(
    llm: FakeOpenAI, callbacks: FakeService
) -> None:
    settings = summarizer_settings(llm)
    body = await summarize(settings, callbacks, payload(callbacks.url))

    assert body["status"] == "success"
    results = body["analysis"]["results"]
    assert results["format"] == "json"
    data = results["data"]
    assert set(data) == {"summary", "model", "usage", "latency_ms"}  # no embedding
    assert data["model"] == "fake-chat"
    assert data["summary"].startswith("ZTF24abcdef is an astronomical source.")
    # Nothing is filtered out of the answer (SkyPortal dropped sentences naming OpenAI).
    assert "OpenAI-style automated note" in data["summary"]
    usage = data["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert data["latency_ms"] >= 0
    assert f"{usage['total_tokens']} tokens" in body["message"]

    (sent,) = llm.requests_to("/v1/chat/completions")
    assert sent.headers["Authorization"] == f"Bearer {SITE_KEY}"
    assert sent.body["model"] == "fake-chat"
    assert sent.body["temperature"] == 0.2
    assert sent.body["max_tokens"] == 300
    system, user = sent.body["messages"]
    assert system == {"role": "system", "content": SYSTEM_PROMPT}
    assert user["content"].startswith(settings.llm_prompt)
    assert "Redshift: 0.0451" in user["content"]


async def test_parameters_override_site_settings(llm: FakeOpenAI, callbacks: FakeService) -> None:
    parameters = {
        # SkyPortal's nested object, then the flat parameters (which win).
        "summary_parameters": {"model": "gpt-4o-mini", "temperature": 0.9, "top_p": 1.0},
        "max_tokens": "120",
        "prompt": "Two sentences only.",
    }
    settings = summarizer_settings(llm)
    body = await summarize(settings, callbacks, payload(callbacks.url, parameters=parameters))

    assert body["status"] == "success"
    (sent,) = llm.requests_to("/v1/chat/completions")
    assert sent.body["model"] == "gpt-4o-mini"
    assert sent.body["temperature"] == 0.9
    assert sent.body["max_tokens"] == 120
    assert "top_p" not in sent.body
    assert sent.body["messages"][1]["content"].startswith("Two sentences only.\n'''")


async def test_reasoning_models_get_max_completion_tokens(
    llm: FakeOpenAI, callbacks: FakeService
) -> None:
    settings = summarizer_settings(llm, llm_model="o4-mini")
    body = await summarize(settings, callbacks, payload(callbacks.url))

    assert body["status"] == "success", body["message"]
    (sent,) = llm.requests_to("/v1/chat/completions")
    assert sent.body["max_completion_tokens"] == 300
    assert "max_tokens" not in sent.body and "temperature" not in sent.body


async def test_users_own_key_is_used_and_never_echoed(
    llm: FakeOpenAI, callbacks: FakeService, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = summarizer_settings(llm, llm_api_key=None)
    parameters = {"openai_api_key": USER_KEY}
    body = await summarize(settings, callbacks, payload(callbacks.url, parameters=parameters))

    assert body["status"] == "success"
    (sent,) = llm.requests_to("/v1/chat/completions")
    assert sent.headers["Authorization"] == f"Bearer {USER_KEY}"
    assert USER_KEY not in json.dumps(body)
    assert USER_KEY not in caplog.text


# --- failures the author can act on -----------------------------------------------------------


async def test_invalid_key_fails_with_actionable_message(
    llm: FakeOpenAI, callbacks: FakeService, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = summarizer_settings(llm)
    parameters = {"openai_api_key": BAD_KEY}
    body = await summarize(settings, callbacks, payload(callbacks.url, parameters=parameters))

    assert body == {
        "status": "failure",
        "message": (
            "The LLM API rejected the API key (401). Set a valid key with PUT "
            "/api/internal/profile/llm_key or ask the operator to set SKYHOOK_LLM_API_KEY."
        ),
        "analysis": {},
    }
    assert BAD_KEY not in caplog.text
    assert BAD_KEY[-6:] not in caplog.text


async def test_no_key_anywhere_fails_with_how_to_set_one(
    llm: FakeOpenAI, callbacks: FakeService
) -> None:
    settings = summarizer_settings(llm, llm_api_key=None)
    body = await summarize(settings, callbacks, payload(callbacks.url))

    assert body["status"] == "failure"
    assert body["message"] == NO_KEY_MESSAGE
    assert "PUT /api/internal/profile/llm_key" in body["message"]
    assert llm.requests == []


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (429, "The LLM API is rate limiting this key or its quota is used up (429): Rate limit"),
        (500, "The LLM API failed (HTTP 500): The server had an error"),
        (503, "The LLM API failed (HTTP 503): The server had an error"),
    ],
)
async def test_api_errors_fail_with_their_reason(
    llm: FakeOpenAI, callbacks: FakeService, status: int, expected: str
) -> None:
    llm.fail_next(status)
    body = await summarize(summarizer_settings(llm), callbacks, payload(callbacks.url))
    assert body["status"] == "failure"
    assert body["message"].startswith(expected)


async def test_transient_api_errors_are_retried_by_the_client(
    llm: FakeOpenAI, callbacks: FakeService
) -> None:
    llm.fail_next(429)
    settings = summarizer_settings(llm, llm_max_retries=1)
    body = await summarize(settings, callbacks, payload(callbacks.url))
    assert body["status"] == "success"
    assert len(llm.requests_to("/v1/chat/completions")) == 2


async def test_unknown_model_names_the_model(llm: FakeOpenAI, callbacks: FakeService) -> None:
    parameters = {"model": "no-such-model"}
    settings = summarizer_settings(llm)
    body = await summarize(settings, callbacks, payload(callbacks.url, parameters=parameters))
    assert body["status"] == "failure"
    assert body["message"].startswith("The LLM API does not know the model 'no-such-model' (404)")


async def test_unreachable_api_fails(callbacks: FakeService) -> None:
    closed = FakeOpenAI()  # never started: nothing listens on its port
    body = await summarize(summarizer_settings(closed), callbacks, payload(callbacks.url))
    assert body["status"] == "failure"
    assert body["message"].startswith("Could not reach the LLM API: cannot connect to http://")


async def test_nothing_to_summarize_fails(llm: FakeOpenAI, callbacks: FakeService) -> None:
    request = payload(callbacks.url, comments=[], classifications=[])
    body = await summarize(summarizer_settings(llm), callbacks, request)
    assert body == {
        "status": "failure",
        "message": "No comments or classifications to summarize",
        "analysis": {},
    }
    assert llm.requests == []


# --- the protocol -----------------------------------------------------------------------------


async def test_health(llm: FakeOpenAI) -> None:
    async with summarizer(summarizer_settings(llm)) as client:
        response = await client.get("/")
        assert (response.status, await response.json()) == (200, {"status": "active"})


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b.pop("inputs"), "missing required key inputs"),
        (lambda b: b.pop("callback_url"), "missing required key callback_url"),
        (lambda b: b.update(callback_method="GET"), "callback_method must be POST, got 'GET'"),
        (
            lambda b: b.update(callback_url="ftp://x/y"),
            "callback_url must be an absolute http(s) URL",
        ),
        (lambda b: b.update(inputs=[]), "inputs must be an object"),
        (
            lambda b: b["inputs"].update(analysis_parameters={"temperature": 7}),
            "temperature must be a number between 0 and 2",
        ),
        (
            lambda b: b["inputs"].update(analysis_parameters={"max_tokens": 0}),
            "max_tokens must be an integer between 1 and 100000",
        ),
        (
            lambda b: b["inputs"].update(analysis_parameters={"summary_parameters": "x"}),
            "summary_parameters must be an object",
        ),
        (lambda b: b["inputs"].update(comments=42), "inputs.comments must be CSV text"),
    ],
)
async def test_bad_requests_are_refused_at_once(
    llm: FakeOpenAI, callbacks: FakeService, mutate: Any, message: str
) -> None:
    body = payload(callbacks.url)
    mutate(body)
    async with summarizer(summarizer_settings(llm)) as client:
        response = await client.post("/summarize", json=body)
        assert response.status == 400
        reply = await response.json()
    assert reply["status"] == "error"
    assert reply["message"].startswith(message)
    assert llm.requests == [] and callbacks.received == []


async def test_invalid_json_is_refused(llm: FakeOpenAI) -> None:
    async with summarizer(summarizer_settings(llm)) as client:
        response = await client.post("/summarize", data=b"{nope")
        assert response.status == 400
        assert (await response.json())["message"] == "Invalid JSON"


async def test_callback_is_retried_until_accepted(llm: FakeOpenAI, callbacks: FakeService) -> None:
    callbacks.replies = [Reply(503, "busy"), Reply(429, "slow down")]
    async with summarizer(summarizer_settings(llm)) as client:
        assert (await client.post("/summarize", json=payload(callbacks.url))).status == 200
        received = await callbacks.wait_received(3)
    assert received[0].body == received[1].body == received[2].body
    assert received[2].json()["status"] == "success"


async def test_refused_callback_is_not_retried_and_is_logged_without_token(
    llm: FakeOpenAI, callbacks: FakeService, caplog: pytest.LogCaptureFixture
) -> None:
    callbacks.default = Reply(403, "Analysis already updated")
    async with summarizer(summarizer_settings(llm)) as client:
        assert (await client.post("/summarize", json=payload(callbacks.url))).status == 200
        await callbacks.wait_received(1)
        # Logged as post_callback gives up: its retry loop has ended, no second attempt comes.
        await eventually(lambda: "refused the results" in caplog.text, "the refusal logged")
    assert "refused the results (HTTP 403: Analysis already updated); not retrying" in caplog.text
    assert len(callbacks.received) == 1
    # The callback URL's last segment is its one-time token: never logged.
    assert f"127.0.0.1:{callbacks.port}/***" in caplog.text
    assert callbacks.url not in caplog.text


async def test_skyhook_summarizer_command_serves_the_app(
    llm: FakeOpenAI, callbacks: FakeService
) -> None:
    """``skyhook summarizer`` as the composition root runs it (no database, no bus)."""
    port = free_port()
    settings = summarizer_settings(llm, port=port, database_url="postgresql://nowhere:1/none")
    process = asyncio.create_task(run_service("summarizer", settings))
    try:
        async with aiohttp.ClientSession() as http:

            async def active() -> bool:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/") as response:
                        return response.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            await eventually(active, "the summarizer to answer", within=5, every=0.01)
            url = f"http://127.0.0.1:{port}/summarize"
            async with http.post(url, json=payload(callbacks.url)) as response:
                assert response.status == 200
        (received,) = await callbacks.wait_received(1)
        assert received.json()["status"] == "success"
    finally:
        process.cancel()
        await asyncio.gather(process, return_exceptions=True)
