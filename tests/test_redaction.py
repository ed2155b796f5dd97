"""Secrets skyhook sends are never stored or logged, even when a service echoes them back.

A real local service echoes every request (headers, body, and the secrets it shares with
skyhook) in a 5xx and then a 4xx answer, for each authentication type; the stored
``status_message``, every ``attempts[].error``, and the logs must hold none of them. The same
for a callback whose ``message`` repeats them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import settings as fuzzing
from hypothesis import strategies as st
from pydantic import SecretStr
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from dispatcher import Dispatcher
from shared.bus.outbox import enqueue
from shared.db.models import AnalysisService, User
from shared.domain.events import AnalysisRequested
from shared.domain.llm_keys import LLM_KEY, set_user_secret
from shared.runtime.resources import Resources
from shared.runtime.settings import Settings
from shared.security.redaction import REDACTED, redact, request_secrets, secret_forms
from tests.support.api import Accounts, ApiClient, unique
from tests.support.fuzz import FUZZ_EXAMPLES
from tests.support.pipeline import (
    FakeService,
    add_comment,
    load_analysis,
    load_attempts,
    make_analysis,
    make_obj,
    make_service,
    wait_for_status,
)

SITE_LLM_KEY = "sk-site-key-0123456789abcdef"
USER_LLM_KEY = "sk-user-key-fedcba9876543210"
SIGNING_SECRET = "whsec_" + base64.b64encode(b"signing-secret-bytes-32-long!!!!").decode()
FAST = {
    "dispatch_retry_delays_seconds": [0.1, 0.1],
    "dispatch_poll_interval_seconds": 0.05,
    "dispatch_timeout_seconds": 5.0,
    "llm_api_key": SecretStr(SITE_LLM_KEY),
}

# authentication type -> (stored _authinfo, the secrets as sent on the wire, the others)
AUTH_CASES: dict[str, tuple[dict[str, Any], list[str], list[str]]] = {
    "header_token": (
        {"header_token": {"Authorization": "Bearer hdr-t0ken-secret"}},
        ["Bearer hdr-t0ken-secret"],
        ["hdr-t0ken-secret"],
    ),
    "api_key": (
        {"api_key_name": "service_key", "api_key": "apik3y-secret-value"},
        ["apik3y-secret-value"],
        [],
    ),
    "HTTPBasicAuth": (
        {"username": "basic-user", "password": "basic:pa55word"},
        [base64.b64encode(b"basic-user:basic:pa55word").decode()],
        ["basic:pa55word"],
    ),
    "HTTPDigestAuth": (
        {"username": "digest-user", "password": "digest-pa55word"},
        ["digest-user"],
        ["digest-pa55word"],
    ),
}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update=FAST)


class EchoingGate:
    """A service that answers every request with everything it saw, and the secrets it
    shares with skyhook, in a 500 (retried) and then a 400 (final). For digest it first
    challenges, as a real digest server does."""

    def __init__(self, digest: bool) -> None:
        self.digest = digest
        self.statuses = [500, 400]
        self.echoed: list[str] = []

    async def __call__(self, request: web.Request, body: bytes) -> web.Response:
        authorization = request.headers.get("Authorization", "")
        if self.digest and not authorization.startswith("Digest "):
            header = 'Digest realm="echo", qop="auth", nonce="abc123", algorithm=MD5'
            return web.Response(status=401, headers={"WWW-Authenticate": header})
        headers = "\n".join(f"{name}: {value}" for name, value in request.headers.items())
        text = (
            f"refused: {headers}\nurl-encoded: {quote(authorization, safe='')}\n"
            f"known: {SIGNING_SECRET} {SITE_LLM_KEY}\nbody: {body.decode()}"
        )
        self.echoed.append(text)
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return web.Response(status=status, text=text)


@asynccontextmanager
async def dispatching(resources: Resources, service: FakeService) -> AsyncIterator[None]:
    """The service, a dispatcher and the outbox relay, running for the block."""
    await service.start()
    dispatcher = Dispatcher(resources)
    await dispatcher.start()
    relay = asyncio.create_task(resources.outbox.run())
    try:
        yield
    finally:
        relay.cancel()
        await asyncio.gather(relay, return_exceptions=True)
        await dispatcher.stop()
        await service.stop()


async def give_user_llm_key(resources: Resources, user_id: int) -> None:
    async with resources.sessions.begin() as session:
        user = await session.get(User, user_id)
        assert user is not None
        set_user_secret(resources.secret_box, user, LLM_KEY, USER_LLM_KEY)


def skyhook_logs(caplog: pytest.LogCaptureFixture) -> str:
    """Every log line but the test server's own access log (production runs without one)."""
    return "\n".join(
        f"{r.getMessage()} {r.exc_text or ''}"
        for r in caplog.records
        if not r.name.startswith("aiohttp.access")
    )


def assert_clean(text: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in text, f"{secret!r} leaked"


@pytest.mark.usefixtures("backend")
@pytest.mark.parametrize("auth_type", sorted(AUTH_CASES))
async def test_an_echoing_service_cannot_make_skyhook_store_or_log_its_secrets(
    resources: Resources, accounts: Accounts, caplog: pytest.LogCaptureFixture, auth_type: str
) -> None:
    caplog.set_level(logging.DEBUG)
    authinfo, on_wire, others = AUTH_CASES[auth_type]
    group = await accounts.group()
    author = await accounts.user(acls=("Run Analyses",), groups=(group,))
    await give_user_llm_key(resources, author.id)
    obj_id = await make_obj(resources, [group])
    await add_comment(resources, obj_id, [group], text="a comment")
    gate = EchoingGate(digest=auth_type == "HTTPDigestAuth")
    service = FakeService(gate=gate)
    async with dispatching(resources, service):
        service_id = await make_service(
            resources,
            service.url,
            [group],
            authentication_type=auth_type,
            authinfo=authinfo,
            signing_secret=SIGNING_SECRET,
            is_summary=True,
            input_data_types=["comments"],
        )
        row = await make_analysis(resources, obj_id, service_id, author.id, [group])
        async with resources.sessions.begin() as session:
            enqueue(session, AnalysisRequested(analysis_id=row.id))
        resources.outbox.nudge()
        done = await wait_for_status(resources, row.id, ["failure", "pending"])

    token = resources.callback_tokens.token_for(row.unique_id)
    secrets = [*on_wire, *others, SIGNING_SECRET, SITE_LLM_KEY, USER_LLM_KEY, token]
    echoed = "\n".join(gate.echoed)
    # The service really did echo them (else this test could not fail).
    for secret in [*on_wire, token, USER_LLM_KEY, SIGNING_SECRET]:
        assert secret in echoed
    if auth_type == "HTTPDigestAuth":
        assert re.search(r'response="?[0-9a-f]{32}', echoed)

    assert done.status == "failure"
    attempts = await load_attempts(resources, row.id)
    assert [a.http_status for a in attempts] == [500, 400]
    stored = [done.status_message or "", *(a.error or "" for a in attempts)]
    for text in stored:
        assert REDACTED in text
        assert_clean(text, secrets)
        assert not re.search(r'response="?[0-9a-f]{32}', text)
    assert_clean(skyhook_logs(caplog), secrets)


class StraddlingGate:
    """Refuses with a long answer in which the callback token straddles the stored
    message's 1,024-character limit."""

    def __init__(self) -> None:
        self.token = ""

    async def __call__(self, request: web.Request, body: bytes) -> web.Response:
        self.token = json.loads(body)["callback_url"].rstrip("/").rsplit("/", 1)[-1]
        text = "x" * 1020 + self.token + " and more" * 1000
        return web.Response(status=400, text=text)


@pytest.mark.usefixtures("backend")
async def test_a_secret_cut_by_the_message_limit_is_redacted_whole(
    resources: Resources, accounts: Accounts
) -> None:
    group = await accounts.group()
    author = await accounts.user(acls=("Run Analyses",), groups=(group,))
    obj_id = await make_obj(resources, [group])
    gate = StraddlingGate()
    service = FakeService(gate=gate)
    async with dispatching(resources, service):
        service_id = await make_service(resources, service.url, [group])
        row = await make_analysis(resources, obj_id, service_id, author.id, [group])
        async with resources.sessions.begin() as session:
            enqueue(session, AnalysisRequested(analysis_id=row.id))
        resources.outbox.nudge()
        done = await wait_for_status(resources, row.id, ["failure", "pending"])

    assert gate.token == resources.callback_tokens.token_for(row.unique_id)
    assert done.status == "failure"
    assert done.status_message == ("x" * 1020 + REDACTED)[:1024]
    (attempt,) = await load_attempts(resources, row.id)
    assert attempt.error is not None and gate.token[:4] not in attempt.error


@pytest.mark.usefixtures("backend")
async def test_a_callback_message_repeating_the_requests_secrets_is_stored_redacted(
    resources: Resources, accounts: Accounts, api: ApiClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    group = await accounts.group()
    author = await accounts.user(acls=("Run Analyses",), groups=(group,))
    await give_user_llm_key(resources, author.id)
    obj_id = await make_obj(resources, [group])
    authinfo = {"username": "hook-user", "password": "hook-pa55word"}
    service_id = await make_service(
        resources,
        "http://127.0.0.1:9/analysis",
        [group],
        authentication_type="HTTPBasicAuth",
        authinfo=authinfo,
        signing_secret=SIGNING_SECRET,
    )
    row = await make_analysis(resources, obj_id, service_id, author.id, [group])
    token = resources.callback_tokens.token_for(row.unique_id)
    basic = base64.b64encode(b"hook-user:hook-pa55word").decode()
    secrets = [token, "hook-pa55word", basic, SIGNING_SECRET, SITE_LLM_KEY, USER_LLM_KEY]
    message = (
        f"failed: callback {quote(token)} with Basic {basic}, password hook-pa55word, "
        f"signed with {SIGNING_SECRET}, keys {SITE_LLM_KEY} {USER_LLM_KEY}"
    )
    body = {"status": "failure", "message": message, "analysis": {}}
    reply = await api.post(f"/api/webhook/obj_analysis/{token}", None, body)
    assert reply.status == 200, reply.body

    done = await load_analysis(resources, row.id)
    assert done.status == "failure"
    assert done.status_message == (
        f"failed: callback {REDACTED} with Basic {REDACTED}, password {REDACTED}, "
        f"signed with {REDACTED}, keys {REDACTED} {REDACTED}"
    )
    shown = await api.get(f"/api/obj/analysis/{row.id}", author)
    assert_clean(json.dumps(shown.body), secrets)
    assert_clean(skyhook_logs(caplog), secrets)


def test_redact_replaces_every_form_of_a_secret_and_a_truncated_tail() -> None:
    secret = 'pa"ss wörd/+='
    forms = secret_forms(secret)
    assert {quote(secret, safe=""), json.dumps(secret)[1:-1]} <= forms
    text = f"a {secret} b {quote(secret, safe='')} c {json.dumps(secret)} d " + secret[:7]
    cleaned = redact(text, [secret], cut_short=True)
    assert 'pa"ss' not in cleaned and "pa%22ss" not in cleaned and 'pa\\"ss' not in cleaned
    assert cleaned.endswith(f"d {REDACTED}")
    # Too short to be worth hiding: messages keep their words.
    assert redact("a ab abc", ["a", "ab"]) == "a ab abc"
    digest = 'Digest username="u", response="0123456789abcdef0123456789abcdef", nc=1'
    assert "0123456789abcdef" not in redact(digest, [])


def test_a_whole_message_keeps_a_tail_that_only_looks_like_the_start_of_a_secret() -> None:
    # A random callback token and a random object id share their first hex digits now and
    # then; the message was not cut, so its tail is its own text.
    token = "245a3d9f0c1e"
    message = "fit of ZTF245a3d"
    assert redact(message, [token]) == message
    assert redact(message, [token], cut_short=True) == f"fit of ZTF{REDACTED}"
    assert redact(f"fit of {token}", [token]) == f"fit of {REDACTED}"


# Secrets as services are given them (tokens, keys, passwords: no brackets, so that no secret
# can be spelled across the edge of a "[redacted]"); answers of any text around them.
SECRETS = st.lists(
    st.text("abcdefABCDEF0123456789-_+/=: ", min_size=1, max_size=24), min_size=1, max_size=4
)


@st.composite
def answers(draw: st.DrawFn) -> tuple[list[str], str]:
    """Secrets, and an answer of arbitrary text with some of their forms in it, perhaps one
    cut short at its end."""
    secrets = draw(SECRETS)
    forms = sorted({form for secret in secrets for form in secret_forms(secret)})
    parts = draw(st.lists(st.one_of(st.text(max_size=20), st.sampled_from(forms or [""]))))
    text = "".join(parts)
    cut: str = draw(st.sampled_from(["", *forms]))  # "": the answer ends as it likes
    return secrets, text + cut[: draw(st.integers(0, len(cut)))]


@fuzzing(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize=True)
@given(answers(), st.booleans())
def test_fuzzed_answers_keep_no_secret_and_a_whole_one_keeps_its_own_words(
    answer: tuple[list[str], str], cut_short: bool
) -> None:
    secrets, text = answer
    forms = {form for secret in secrets for form in secret_forms(secret)}
    cleaned = redact(text, secrets, cut_short=cut_short)
    for form in forms:
        assert form not in cleaned
        if cut_short:  # the answer was cut: no tail that begins a secret is left
            assert not any(cleaned.endswith(form[:n]) for n in range(4, len(form)))
    if not cut_short and not any(form in text for form in forms) and "response=" not in text:
        assert cleaned == text  # nothing to hide, nothing changed


def test_request_secrets_list_credentials_and_their_encodings_not_field_names() -> None:
    found = request_secrets(
        {"username": "astro", "password": "pa:ss", "api_key_name": "service_key"},
        signing_secret=SIGNING_SECRET,
        callback_token="tok-123456",
        others=["sk-key-1", ""],
    )
    basic = base64.b64encode(b"astro:pa:ss").decode()
    assert {"astro", "pa:ss", basic, SIGNING_SECRET, "tok-123456", "sk-key-1"} <= found
    assert "service_key" not in found and "" not in found


@pytest.mark.usefixtures("backend")
async def test_database_errors_never_print_bound_parameters(resources: Resources) -> None:
    secret = "ciphertext-that-must-not-be-printed"
    statement = insert(AnalysisService).values(
        name=unique("same"),
        display_name="d",
        url="http://x",
        authentication_type="none",
        analysis_type="lightcurve_fitting",
        authinfo_ciphertext=secret,
    )
    async with resources.sessions.begin() as session:
        await session.execute(statement)
    with pytest.raises(IntegrityError) as raised:
        async with resources.sessions.begin() as session:
            await session.execute(statement)
    assert secret not in str(raised.value)
    assert "hidden" in str(raised.value)
