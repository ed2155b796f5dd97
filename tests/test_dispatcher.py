"""The dispatcher against real local HTTP services: payload, auth, signing, retries, races,
the reaper and the sweeper. Rows are created directly; messages go through the outbox."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import logging
import random
import re
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import BasicAuth, ClientSession, TCPConnector, web
from aiohttp.abc import AbstractResolver, ResolveResult
from pydantic import SecretStr
from sqlalchemy import select, text, update

from dispatcher import Dispatcher
from dispatcher.attempt import AttemptRunner
from dispatcher.backoff import parse_retry_after, retry_delay
from dispatcher.inputs import PHOTOMETRY_COLUMNS
from dispatcher.request import Site, body_to_send
from dispatcher.resolver import PolicyResolver
from dispatcher.sender import Outbound, Sender, Verdict
from shared.bus.base import Envelope
from shared.bus.outbox import OutboxRelay, enqueue
from shared.db.models import Group, ObjAnalysis, OutboxMessage, User
from shared.db.types import utcnow
from shared.domain import analysis_lifecycle as lifecycle
from shared.domain.artifacts import ArtifactRef
from shared.domain.enums import AnalysisStatus
from shared.domain.events import AnalysisRequested
from shared.domain.llm_keys import LLM_KEY, set_user_secret
from shared.runtime.resources import Resources
from shared.runtime.settings import Settings
from shared.security.redaction import REDACTED
from shared.security.signing import verify
from shared.security.urlpolicy import URLPolicy
from tests.conftest import AMQP_URL
from tests.support.api import Accounts, ApiClient
from tests.support.api import TestUser as Author
from tests.support.artifacts import artifact_names, put_artifact
from tests.support.buses import isolated_rabbit
from tests.support.fake_service import Gate
from tests.support.pipeline import (
    FakeService,
    Reply,
    add_photometry,
    load_analysis,
    load_attempts,
    make_analysis,
    make_instrument,
    make_obj,
    make_service,
    wait_for_status,
)
from tests.support.statements import TRANSACTION_CONTROL, first_word, round_trips_on

FAST = {
    "dispatch_retry_delays_seconds": [0.2, 0.4],
    "dispatch_poll_interval_seconds": 0.05,
    "dispatch_timeout_seconds": 2.0,
    "dispatch_reap_margin_seconds": 1.0,
    "dispatch_requeue_after_seconds": 3600.0,
    "sweep_interval_seconds": 60.0,
}
PAYLOAD_KEYS = {
    "callback_url",
    "inputs",
    "callback_method",
    "invalid_after",
    "analysis_resource_type",
    "resource_id",
    "analysis_parameters",
}
SKYPORTAL_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update=FAST)


@asynccontextmanager
async def running(resources: Resources, **overrides: Any) -> AsyncIterator[Dispatcher]:
    """A started dispatcher (settings overridden) plus an outbox relay, for the block."""
    if overrides:
        settings = resources.settings.model_copy(update=overrides)
        resources = dataclasses.replace(resources, settings=settings)
    dispatcher = Dispatcher(resources)
    await dispatcher.start()
    relay = asyncio.create_task(resources.outbox.run())
    try:
        yield dispatcher
    finally:
        relay.cancel()
        await asyncio.gather(relay, return_exceptions=True)
        await dispatcher.stop()


@asynccontextmanager
async def serving(service: FakeService) -> AsyncIterator[FakeService]:
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


@dataclasses.dataclass
class Scene:
    author: Author
    group: Group
    obj_id: str
    instrument_id: int


@pytest.fixture
async def scene(resources: Resources, accounts: Accounts) -> Scene:
    group = await accounts.group()
    author = await accounts.user(acls=("Run Analyses",), groups=(group,))
    obj_id = await make_obj(resources, [group])
    instrument_id = await make_instrument(resources)
    await add_photometry(resources, obj_id, instrument_id, [group], mjd=59000.5)
    return Scene(author, group, obj_id, instrument_id)


async def start(resources: Resources, scene: Scene, service_id: int, **fields: Any) -> ObjAnalysis:
    """Insert a queued analysis and announce it through the outbox, as the start endpoint does."""
    row = await make_analysis(
        resources, scene.obj_id, service_id, scene.author.id, [scene.group], **fields
    )
    await announce(resources, row.id)
    return row


async def announce(resources: Resources, analysis_id: int) -> None:
    async with resources.sessions.begin() as session:
        enqueue(session, AnalysisRequested(analysis_id=analysis_id))
    resources.outbox.nudge()


async def wait_attempts(resources: Resources, analysis_id: int, count: int) -> list[Any]:
    """The finished attempts, once there are ``count`` of them (an attempt's row exists, as
    ``sending``, from just before its HTTP call)."""
    for _ in range(500):
        attempts = [
            a for a in await load_attempts(resources, analysis_id) if a.outcome != "sending"
        ]
        if len(attempts) >= count:
            return attempts
        await asyncio.sleep(0.02)
    raise AssertionError(f"analysis {analysis_id} has {len(attempts)} attempts, not {count}")


async def set_row(resources: Resources, analysis_id: int, **values: Any) -> None:
    async with resources.sessions.begin() as session:
        await session.execute(
            update(ObjAnalysis).where(ObjAnalysis.id == analysis_id).values(**values)
        )


# --- the happy path -----------------------------------------------------------------------------


@pytest.mark.usefixtures("backend")
async def test_202_is_accepted_and_the_payload_is_skyportals_with_provenance(
    resources: Resources, scene: Scene
) -> None:
    async with serving(FakeService()) as service, running(resources):
        service.default = Reply(202, "accepted for later")
        service_id = await make_service(resources, service.url, [scene.group])
        row = await start(resources, scene, service_id, analysis_parameters={"model": "salt2"})
        done = await wait_for_status(resources, row.id, ["pending", "failure"])

    assert (done.status, done.status_message) == ("pending", "accepted for later")
    (received,) = service.received
    payload = received.json()
    assert set(payload) == PAYLOAD_KEYS
    token = resources.callback_tokens.token_for(row.unique_id)
    assert payload["callback_url"] == f"http://127.0.0.1:5000/api/webhook/obj_analysis/{token}"
    assert payload["callback_method"] == "POST"
    assert payload["analysis_resource_type"] == "obj"
    assert payload["resource_id"] == scene.obj_id
    assert SKYPORTAL_TIME.match(payload["invalid_after"])
    assert payload["invalid_after"] == done.invalid_after.strftime("%Y-%m-%d %H:%M:%S.%f")
    assert payload["analysis_parameters"] == {"model": "salt2"}  # SkyPortal always sent {}
    assert set(payload["inputs"]) == {"analysis_parameters", "photometry"}
    assert payload["inputs"]["analysis_parameters"] == {"model": "salt2"}
    header, *rows = payload["inputs"]["photometry"].splitlines()
    assert header.split(",") == list(PHOTOMETRY_COLUMNS) and len(rows) == 1
    assert received.headers["Content-Type"] == "application/json"
    assert "webhook-signature" not in received.headers

    stored_bytes = await resources.artifacts.read(ArtifactRef.from_dict(done.artifacts["inputs"]))
    assert done.input_hash == hashlib.sha256(stored_bytes).hexdigest()
    assert done.artifacts["inputs"]["sha256"] == done.input_hash
    stored = json.loads(stored_bytes)  # what was sent, but the callback token
    assert stored["callback_url"] == "http://127.0.0.1:5000/api/webhook/obj_analysis/[redacted]"
    assert token not in stored_bytes.decode()
    assert stored == {**payload, "callback_url": stored["callback_url"]}
    assert done.dispatch_attempts_count == 1
    (attempt,) = await load_attempts(resources, row.id)
    assert (attempt.attempt_number, attempt.outcome, attempt.http_status) == (1, "accepted", 202)
    assert attempt.latency_ms is not None and attempt.latency_ms > 0 and attempt.error is None


async def test_summary_services_get_skyportals_summary_parameters_from_site_settings(
    resources: Resources, scene: Scene
) -> None:
    """SkyPortal's own summarizer needs ``summary_parameters`` (KeyError without it)."""
    async with serving(FakeService()) as service, running(resources):
        service_id = await make_service(
            resources, service.url, [scene.group], is_summary=True, input_data_types=["comments"]
        )
        row = await start(resources, scene, service_id, analysis_parameters={})
        await wait_for_status(resources, row.id, ["pending", "failure"])

    (received,) = service.received
    sent = received.json()["inputs"]["analysis_parameters"]["summary_parameters"]
    settings = resources.settings
    assert sent["model"] == settings.llm_model
    assert sent["max_tokens"] == settings.llm_max_tokens
    assert sent["prompt"] == settings.llm_prompt
    assert "api_key" not in str(sent) and "openai_api_key" not in received.json()["inputs"]


SITE_KEY = "sk-site-key-for-the-dispatcher-test"
USER_KEY = "sk-user-key-for-the-dispatcher-test"


async def _stored_text(resources: Resources) -> str:
    """Every row of the tables the dispatcher writes, as text."""
    dump: list[str] = []
    async with resources.sessions() as session:
        for table in ("obj_analyses", "dispatch_attempts", "outbox", "users"):
            rows = await session.execute(text(f"SELECT * FROM {table}"))
            dump.extend(str(tuple(row)) for row in rows)
    return "\n".join(dump)


@pytest.mark.usefixtures("backend")
async def test_the_site_llm_key_reaches_summary_services_and_is_never_stored(
    resources: Resources, scene: Scene, api: ApiClient, caplog: pytest.LogCaptureFixture
) -> None:
    """SkyPortal's own summarizer reads ``analysis_parameters.openai_api_key`` (KeyError
    without it): the site key is added when the author has none, at send time only."""
    caplog.set_level(logging.DEBUG)
    async with (
        serving(FakeService()) as summarizer,
        serving(FakeService()) as fitter,
        running(resources, llm_api_key=SecretStr(SITE_KEY)),
    ):
        summary_id = await make_service(
            resources, summarizer.url, [scene.group], is_summary=True, input_data_types=[]
        )
        fitter_id = await make_service(resources, fitter.url, [scene.group])
        summary = await start(resources, scene, summary_id, analysis_parameters={})
        fit = await start(resources, scene, fitter_id)
        summary_done = await wait_for_status(resources, summary.id, ["pending", "failure"])
        await wait_for_status(resources, fit.id, ["pending", "failure"])

    assert summary_done.status == "pending", summary_done.status_message
    (received,) = summarizer.received
    payload = received.json()
    assert payload["analysis_parameters"]["openai_api_key"] == SITE_KEY
    assert payload["inputs"]["analysis_parameters"]["openai_api_key"] == SITE_KEY
    assert SITE_KEY not in fitter.received[0].body.decode()

    stored = await resources.artifacts.read(summary_done.artifacts["inputs"])
    assert SITE_KEY not in stored.decode()
    assert summary_done.input_hash == hashlib.sha256(stored).hexdigest()
    assert SITE_KEY not in await _stored_text(resources)
    for path in (
        f"/api/obj/analysis/{summary.id}?includeAnalysisData=true",
        f"/api/obj/analysis/{summary.id}/attempts",
        f"/api/obj/{scene.obj_id}/analysis",
        "/api/obj/analysis",
    ):
        reply = await api.get(path, scene.author)
        assert reply.status == 200, reply.body
        assert SITE_KEY not in json.dumps(reply.body)
    assert SITE_KEY not in caplog.text


@pytest.mark.usefixtures("backend")
async def test_the_authors_key_wins_and_an_echoed_key_is_not_stored(
    resources: Resources, scene: Scene
) -> None:
    async with resources.sessions.begin() as session:
        author = await session.get(User, scene.author.id)
        assert author is not None
        set_user_secret(resources.secret_box, author, LLM_KEY, USER_KEY)
    echo = json.dumps({"status": "error", "message": f"key {USER_KEY} refused"})
    async with (
        serving(FakeService()) as summarizer,
        running(resources, llm_api_key=SecretStr(SITE_KEY)),
    ):
        summarizer.default = Reply(400, echo)
        service_id = await make_service(
            resources, summarizer.url, [scene.group], is_summary=True, input_data_types=[]
        )
        row = await start(resources, scene, service_id, analysis_parameters={})
        done = await wait_for_status(resources, row.id, ["failure", "pending"])

    (received,) = summarizer.received
    assert received.json()["analysis_parameters"]["openai_api_key"] == USER_KEY
    assert (done.status, done.status_message) == ("failure", "key [redacted] refused")
    (attempt,) = await load_attempts(resources, row.id)
    assert attempt.error == "HTTP 400: key [redacted] refused"
    assert USER_KEY not in await _stored_text(resources)


async def test_full_parameters_are_sent_and_secrets_stay_out_of_the_stored_inputs(
    resources: Resources, scene: Scene
) -> None:
    full = {
        "model": "salt2",
        "spectrum": "data:text/plain;name=spec.txt;base64,aGVsbG8=",
        "openai_api_key": "sk-test-secret",
    }
    async with serving(FakeService()) as service, running(resources):
        service_id = await make_service(resources, service.url, [scene.group])
        row = await make_analysis(
            resources,
            scene.obj_id,
            service_id,
            scene.author.id,
            [scene.group],
            analysis_parameters={"model": "salt2", "spectrum": "spec.txt"},
        )
        ref = await put_artifact(
            resources,
            row.id,
            "request_parameters.json",
            json.dumps(full).encode(),
            "application/json",
        )
        await set_row(resources, row.id, artifacts={"request_parameters": ref})
        await announce(resources, row.id)
        done = await wait_for_status(resources, row.id, ["pending", "failure"])

    assert done.status == "pending", done.status_message
    sent = service.received[0].json()
    assert sent["analysis_parameters"] == full
    assert sent["inputs"]["analysis_parameters"] == full
    stored = json.loads(await resources.artifacts.read(done.artifacts["inputs"]))
    assert "openai_api_key" not in stored["analysis_parameters"]
    assert "openai_api_key" not in stored["inputs"]["analysis_parameters"]
    assert stored["inputs"]["analysis_parameters"]["spectrum"] == full["spectrum"]
    assert done.artifacts["request_parameters"] == ref  # the manifest kept it
    assert await artifact_names(resources, row.unique_id) == [
        "inputs.json",
        "request_parameters.json",
    ]


async def test_only_data_the_author_may_read_is_sent(
    resources: Resources, scene: Scene, accounts: Accounts
) -> None:
    hidden = await accounts.group()
    await add_photometry(resources, scene.obj_id, scene.instrument_id, [hidden], mjd=59999.0)
    async with serving(FakeService()) as service, running(resources):
        service_id = await make_service(resources, service.url, [scene.group])
        row = await start(resources, scene, service_id)
        await wait_for_status(resources, row.id, ["pending"])

    photometry = service.received[0].json()["inputs"]["photometry"]
    assert "59999.0" not in photometry
    assert len(photometry.splitlines()) == 2  # header + the author's own point


@pytest.mark.usefixtures("backend")
async def test_analyses_claimed_together_each_get_what_their_own_author_may_read(
    resources: Resources, scene: Scene, accounts: Accounts
) -> None:
    """One claim batch: two analyses of one author may share an assembly of the inputs,
    another author's analysis of the same source gets its own; each stores its inputs.json."""
    hidden = await accounts.group()
    await add_photometry(resources, scene.obj_id, scene.instrument_id, [hidden], mjd=59999.0)
    insider = await accounts.user(acls=("Run Analyses",), groups=(scene.group, hidden))
    service_id = await make_service(resources, "http://127.0.0.1:9/", [scene.group, hidden])
    rows = [
        await make_analysis(resources, scene.obj_id, service_id, author.id, [scene.group])
        for author in (scene.author, insider, scene.author)
    ]
    async with ClientSession() as http:
        claimed = await AttemptRunner(resources, http).claim_many([row.id for row in rows])

    def photometry_mjds(attempt: Any) -> list[str]:
        csv = json.loads(attempt.outbound.body)["inputs"]["photometry"]
        return [line.split(",")[0] for line in csv.splitlines()[1:]]

    assert [photometry_mjds(a) for a in claimed] == [
        ["59000.5"],
        ["59000.5", "59999.0"],
        ["59000.5"],
    ]
    stored = [await load_analysis(resources, row.id) for row in rows]
    assert len({a.input_hash for a in stored} - {None}) == 3  # each its own invalid_after
    assert [await artifact_names(resources, a.unique_id) for a in stored] == [["inputs.json"]] * 3


async def test_a_claim_batch_is_three_statements_on_postgresql_with_no_transaction(
    resources: Resources, scene: Scene
) -> None:
    """Claimed with their rows, services and author; the sources with their photometry; the
    attempts marked as sending: three round trips for a batch of one author's analyses, each
    committing on its own (no BEGIN and COMMIT around them), whatever the batch's size."""
    service_id = await make_service(resources, "http://127.0.0.1:9/", [scene.group])
    rows = [
        await make_analysis(resources, scene.obj_id, service_id, scene.author.id, [scene.group])
        for _ in range(10)
    ]
    async with ClientSession() as http:
        runner = AttemptRunner(resources, http)
        with round_trips_on(resources.engine) as sent:
            claimed = await runner.claim_many([row.id for row in rows])
            await asyncio.sleep(0)  # asyncpg calls its query loggers soon, not at once

    assert all(attempt is not None and attempt.outbound for attempt in claimed)
    assert len(sent) == 3, "\n".join(s[:120] for s in sent)
    assert not [s for s in sent if first_word(s) in TRANSACTION_CONTROL], sent
    stored = [await load_analysis(resources, row.id) for row in rows]
    assert {a.status for a in stored} == {"dispatching"}
    assert all(a.input_hash for a in stored)
    attempts = [await load_attempts(resources, row.id) for row in rows]
    assert [[a.outcome for a in mine] for mine in attempts] == [["sending"]] * 10


async def test_json_inputs_format_sends_typed_records_with_a_schema_version(
    resources: Resources, scene: Scene
) -> None:
    async with serving(FakeService()) as service, running(resources):
        service_id = await make_service(
            resources,
            service.url,
            [scene.group],
            inputs_format="json",
            input_data_types=["photometry", "redshift"],
        )
        row = await start(resources, scene, service_id)
        await wait_for_status(resources, row.id, ["pending"])

    payload = service.received[0].json()
    assert payload["inputs_format"] == "json" and payload["inputs_schema_version"] == 1
    (point,) = payload["inputs"]["photometry"]
    assert point["mjd"] == 59000.5 and isinstance(point["flux"], float)
    assert payload["inputs"]["redshift"] == [
        {"redshift": None, "redshift_error": None, "redshift_origin": None}
    ]


# --- authentication and signing ------------------------------------------------------------------


def _header_gate(name: str, value: str) -> Gate:
    async def gate(request: web.Request, body: bytes) -> web.Response | None:
        if request.headers.get(name) != value:
            return web.Response(status=401, text="bad header token")
        return None

    return gate


def _body_key_gate(name: str, value: str) -> Gate:
    async def gate(request: web.Request, body: bytes) -> web.Response | None:
        if json.loads(body).get(name) != value:
            return web.Response(status=403, text="bad api key")
        return None

    return gate


def _basic_gate(username: str, password: str) -> Gate:
    async def gate(request: web.Request, body: bytes) -> web.Response | None:
        try:
            given = BasicAuth.decode(request.headers.get("Authorization", ""))
        except ValueError:
            given = None
        if given is None or (given.login, given.password) != (username, password):
            return web.Response(status=401, text="bad basic credentials")
        return None

    return gate


class DigestGate:
    """Server side of RFC 7616 digest (MD5, qop=auth): challenge, then check the response."""

    realm = "skyhook-tests"

    def __init__(self, username: str, password: str) -> None:
        self.username, self.password = username, password
        self.nonces: set[str] = set()

    def challenge(self) -> web.Response:
        nonce = secrets.token_hex(16)
        self.nonces.add(nonce)
        header = f'Digest realm="{self.realm}", qop="auth", nonce="{nonce}", algorithm=MD5'
        return web.Response(
            status=401, text="digest required", headers={"WWW-Authenticate": header}
        )

    async def __call__(self, request: web.Request, body: bytes) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Digest "):
            return self.challenge()
        fields = {
            m[0]: m[1] or m[2] for m in re.findall(r'(\w+)=(?:"([^"]*)"|([^\s,]+))', header[7:])
        }
        if fields.get("nonce") not in self.nonces or fields.get("uri") != request.path_qs:
            return self.challenge()

        def md5(text: str) -> str:
            return hashlib.md5(text.encode()).hexdigest()

        ha1 = md5(f"{self.username}:{self.realm}:{self.password}")
        ha2 = md5(f"{request.method}:{fields['uri']}")
        parts = (ha1, fields["nonce"], fields.get("nc"), fields.get("cnonce"), "auth", ha2)
        if fields.get("username") != self.username or fields.get("response") != md5(
            ":".join(str(p) for p in parts)
        ):
            return web.Response(status=401, text="wrong digest credentials")
        return None


AUTH_CASES: dict[str, tuple[Gate, dict[str, Any], dict[str, Any]]] = {
    "header_token": (
        _header_gate("Authorization", "Bearer s3cret"),
        {"header_token": {"Authorization": "Bearer s3cret"}},
        {"header_token": {"Authorization": "Bearer wrong"}},
    ),
    "api_key": (
        _body_key_gate("service_key", "k-123"),
        {"api_key_name": "service_key", "api_key": "k-123"},
        {"api_key_name": "service_key", "api_key": "k-999"},
    ),
    "HTTPBasicAuth": (
        _basic_gate("astro", "pa:ss"),
        {"username": "astro", "password": "pa:ss"},
        {"username": "astro", "password": "nope"},
    ),
    "HTTPDigestAuth": (
        DigestGate("astro", "pa55"),
        {"username": "astro", "password": "pa55"},
        {"username": "astro", "password": "nope"},
    ),
}


@pytest.mark.parametrize("auth_type", sorted(AUTH_CASES))
async def test_each_authentication_type_reaches_a_server_that_checks_it(
    resources: Resources, scene: Scene, auth_type: str
) -> None:
    gate, good, bad = AUTH_CASES[auth_type]
    async with serving(FakeService(gate=gate)) as service, running(resources):
        good_service = await make_service(
            resources, service.url, authentication_type=auth_type, authinfo=good
        )
        bad_service = await make_service(
            resources, service.url, authentication_type=auth_type, authinfo=bad
        )
        accepted = await start(resources, scene, good_service)
        refused = await start(resources, scene, bad_service)
        accepted_row = await wait_for_status(resources, accepted.id, ["pending", "failure"])
        refused_row = await wait_for_status(resources, refused.id, ["pending", "failure"])

    assert accepted_row.status == "pending", accepted_row.status_message
    assert refused_row.status == "failure"
    assert refused_row.status_message in {
        "bad header token",
        "bad api key",
        "bad basic credentials",
        "wrong digest credentials",
    }
    (attempt,) = await load_attempts(resources, refused.id)
    assert attempt.outcome == "failed" and attempt.http_status in {401, 403}
    if auth_type == "HTTPDigestAuth":  # the good request went through a real challenge
        assert any("Authorization" not in r.headers for r in service.refused)
        assert service.received[0].headers["Authorization"].startswith("Digest ")
    if auth_type == "api_key":
        stored = json.loads(await resources.artifacts.read(accepted_row.artifacts["inputs"]))
        assert "service_key" not in stored  # the key is added at send time, never stored
        assert service.received[0].json()["service_key"] == "k-123"


async def test_oauth1_is_refused_with_a_clear_message(resources: Resources, scene: Scene) -> None:
    async with serving(FakeService()) as service, running(resources):
        credentials = {
            "app_key": "a",
            "app_secret": "b",
            "user_oauth_token": "c",
            "user_oauth_token_secret": "d",
        }
        service_id = await make_service(
            resources, service.url, authentication_type="OAuth1", authinfo=credentials
        )
        row = await start(resources, scene, service_id)
        done = await wait_for_status(resources, row.id, ["failure", "pending"])

    assert done.status == "failure"
    assert done.status_message is not None
    assert done.status_message.startswith("OAuth1 authentication is not supported")
    assert service.received == []


async def test_requests_are_signed_and_retries_keep_the_message_id(
    resources: Resources, scene: Scene
) -> None:
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    async with serving(FakeService()) as service, running(resources):
        service.replies = [Reply(503, "warming up")]
        service_id = await make_service(resources, service.url, signing_secret=secret)
        row = await start(resources, scene, service_id)
        await wait_for_status(resources, row.id, ["pending", "failure"])

    first, second = service.received
    assert verify(secret, first.headers, first.body) == row.unique_id
    assert verify(secret, second.headers, second.body) == row.unique_id
    assert first.body == second.body


async def test_a_url_refused_by_the_policy_fails_without_a_request(
    resources: Resources, scene: Scene
) -> None:
    async with running(resources):
        service_id = await make_service(resources, "http://169.254.169.254/latest/meta-data")
        row = await start(resources, scene, service_id)
        done = await wait_for_status(resources, row.id, ["failure", "pending"])

    assert done.status == "failure"
    assert done.status_message is not None
    assert done.status_message.startswith("Service URL refused by the URL policy:")
    assert "metadata" in done.status_message


# --- failures and retries ------------------------------------------------------------------------


@pytest.mark.usefixtures("backend")
async def test_500_then_200_is_retried_after_the_backoff(
    resources: Resources, scene: Scene
) -> None:
    async with serving(FakeService()) as service, running(resources):
        service.replies = [Reply(500, "boom")]
        service_id = await make_service(resources, service.url)
        row = await start(resources, scene, service_id)
        done = await wait_for_status(resources, row.id, ["pending", "failure"])

    assert done.status == "pending" and done.dispatch_attempts_count == 2
    first, second = await load_attempts(resources, row.id)
    assert (first.outcome, first.http_status, first.error) == ("retry", 500, "HTTP 500: boom")
    assert (second.outcome, second.http_status) == ("accepted", 200)
    gap = service.received[1].at - service.received[0].at
    assert gap >= 0.2 * 0.8  # first delay with the -20 % jitter


@pytest.mark.usefixtures("backend")
async def test_400_is_a_failure_with_the_response_text_truncated(
    resources: Resources, scene: Scene
) -> None:
    text = "missing required key: inputs " + "x" * 2000
    async with serving(FakeService()) as service, running(resources):
        service.default = Reply(400, text)
        service_id = await make_service(resources, service.url)
        row = await start(resources, scene, service_id)
        done = await wait_for_status(resources, row.id, ["failure", "pending"])

    assert done.status == "failure"
    assert done.status_message == text[:1024]
    assert len(service.received) == 1
    (attempt,) = await load_attempts(resources, row.id)
    assert (attempt.outcome, attempt.http_status) == ("failed", 400)


class Events:
    """Every ``analysis.*`` event published on the bus, as (routing key, analysis id, status)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, str | None]] = []
        self.arrived = asyncio.Event()

    async def record(self, envelope: Envelope) -> None:
        payload = envelope.payload
        self.seen.append((envelope.routing_key, payload["analysis_id"], payload.get("status")))
        self.arrived.set()

    async def wait_for(self, expected: tuple[str, int, str | None]) -> None:
        while expected not in self.seen:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), 10)

    def of(self, analysis_id: int) -> list[tuple[str, str | None]]:
        return [(key, status) for key, aid, status in self.seen if aid == analysis_id]


@pytest.mark.usefixtures("backend")
async def test_each_move_the_dispatcher_makes_is_announced_by_the_event_that_names_it(
    resources: Resources, scene: Scene
) -> None:
    events = Events()
    await resources.bus.listen(["analysis.*"], events.record)
    async with serving(FakeService()) as service, running(resources):
        service.default = Reply(202, "accepted for later")
        service_id = await make_service(resources, service.url, [scene.group])
        accepted = await start(resources, scene, service_id)
        await events.wait_for(("analysis.accepted", accepted.id, None))
        service.default = Reply(400, "no such model")
        refused = await start(resources, scene, service_id)
        await events.wait_for(("analysis.failed", refused.id, "failure"))
        async with resources.sessions.begin() as session:
            assert await lifecycle.cancel_analyses(session, [accepted.id], "ada") == [accepted.id]
        resources.outbox.nudge()
        await events.wait_for(("analysis.cancelled", accepted.id, "cancelled"))

    requested = ("analysis.requested", None)
    assert events.of(accepted.id) == [
        requested,
        ("analysis.accepted", None),
        ("analysis.cancelled", "cancelled"),
    ]
    assert events.of(refused.id) == [requested, ("analysis.failed", "failure")]


@pytest.mark.usefixtures("backend")
async def test_a_json_error_answer_gives_its_message_not_the_raw_json(
    resources: Resources, scene: Scene
) -> None:
    said = "missing required key: callback_url"
    async with serving(FakeService()) as service, running(resources):
        service.default = Reply(400, json.dumps({"status": "error", "message": said}))
        service_id = await make_service(resources, service.url)
        row = await start(resources, scene, service_id)
        done = await wait_for_status(resources, row.id, ["failure", "pending"])

    assert (done.status, done.status_message) == ("failure", said)
    (attempt,) = await load_attempts(resources, row.id)
    assert (attempt.outcome, attempt.error) == ("failed", f"HTTP 400: {said}")


async def test_service_down_then_up_completes_the_dispatch(
    resources: Resources, scene: Scene
) -> None:
    service = FakeService()  # not listening yet
    async with running(resources):
        service_id = await make_service(resources, service.url)
        row = await start(resources, scene, service_id)
        (first,) = await wait_attempts(resources, row.id, 1)
        async with serving(service):
            done = await wait_for_status(resources, row.id, ["pending", "failure"])

    assert done.status == "pending"
    assert first.outcome == "retry" and first.http_status is None
    assert first.error.startswith(f"Request to {service.url} failed:")
    attempts = await load_attempts(resources, row.id)
    assert attempts[-1].outcome == "accepted" and len(service.received) == 1


async def test_retry_after_is_honoured_when_longer_than_the_backoff(
    resources: Resources, scene: Scene
) -> None:
    async with serving(FakeService()) as service, running(resources):
        service.replies = [Reply(503, "busy", headers={"Retry-After": "1"})]
        service_id = await make_service(resources, service.url)
        row = await start(resources, scene, service_id)
        await wait_attempts(resources, row.id, 1)
        queued = await load_analysis(resources, row.id)
        await wait_for_status(resources, row.id, ["pending", "failure"])

    assert queued.status == "queued" and queued.next_attempt_at is not None
    assert queued.status_message is not None
    assert queued.status_message.startswith("Dispatch attempt 1 failed (HTTP 503: busy)")
    assert service.received[1].at - service.received[0].at >= 0.95


async def test_a_timeout_is_retried(resources: Resources, scene: Scene) -> None:
    async with serving(FakeService()) as service, running(resources, dispatch_timeout_seconds=0.3):
        service.replies = [Reply(delay=1.5)]
        service_id = await make_service(resources, service.url)
        row = await start(resources, scene, service_id)
        done = await wait_for_status(resources, row.id, ["pending", "failure"])

    assert done.status == "pending"
    first, second = await load_attempts(resources, row.id)
    assert (
        first.outcome == "retry"
        and first.error == f"Request to {service.url} timed out after 0.3 s"
    )
    assert second.outcome == "accepted"


async def test_exhausted_retries_fail_with_the_last_error(
    resources: Resources, scene: Scene
) -> None:
    async with serving(FakeService()) as service, running(resources):
        service.default = Reply(503, "down for maintenance")
        service_id = await make_service(resources, service.url)
        row = await start(resources, scene, service_id)
        done = await wait_for_status(resources, row.id, ["failure", "pending"], within=15)

    assert done.status == "failure"
    assert done.status_message == (
        "Service unreachable after 3 attempts: HTTP 503: down for maintenance"
    )
    attempts = await load_attempts(resources, row.id)
    assert [a.outcome for a in attempts] == ["retry", "retry", "failed"]
    assert len(service.received) == 3


# --- races, exactly-once, back-pressure ----------------------------------------------------------


@pytest.mark.usefixtures("backend")
async def test_a_webhook_that_arrives_first_is_never_overwritten(
    resources: Resources, scene: Scene
) -> None:
    release = asyncio.Event()
    async with serving(FakeService()) as service, running(resources):
        service.replies = [Reply(200, "started", hold=release)]
        service_id = await make_service(resources, service.url)
        row = await start(resources, scene, service_id)
        await service.wait_received(1)
        # The service's callback lands while it still holds the dispatcher's request.
        await set_row(resources, row.id, status="completed", status_message="fit done")
        release.set()
        (attempt,) = await wait_attempts(resources, row.id, 1)

    final = await load_analysis(resources, row.id)
    assert (final.status, final.status_message) == ("completed", "fit done")
    assert attempt.outcome == "accepted"


async def test_the_message_is_acknowledged_before_the_http_call_ends(
    resources: Resources, scene: Scene
) -> None:
    release = asyncio.Event()
    async with serving(FakeService()) as service:
        service.replies = [Reply(200, "started", hold=release)]
        service_id = await make_service(resources, service.url)
        row = await make_analysis(resources, scene.obj_id, service_id, scene.author.id)
        dispatcher = Dispatcher(resources)
        await dispatcher.start()
        try:
            envelope = Envelope("m-1", "analysis.requested", {"analysis_id": row.id})
            await asyncio.wait_for(dispatcher.handle_message(envelope), 5)  # returns at once
            await service.wait_received(1)
            assert (await load_analysis(resources, row.id)).status == "dispatching"
            release.set()
            await dispatcher.wait_idle()
        finally:
            await dispatcher.stop()
    assert (await load_analysis(resources, row.id)).status == "pending"


async def test_two_dispatchers_and_duplicate_messages_send_each_analysis_once(
    resources: Resources, scene: Scene
) -> None:
    async with serving(FakeService()) as service:
        service.default = Reply(200, "ok", delay=0.05)
        service_id = await make_service(resources, service.url)
        rows = [await start(resources, scene, service_id) for _ in range(6)]
        for row in rows:  # every message delivered twice
            await announce(resources, row.id)
        async with running(resources), running(resources):
            for row in rows:
                await wait_for_status(resources, row.id, ["pending"])
            await asyncio.sleep(0.2)  # time for any duplicate to be (wrongly) sent

    assert len(service.received) == len(rows)
    for row in rows:
        assert (await load_analysis(resources, row.id)).dispatch_attempts_count == 1
        assert len(await load_attempts(resources, row.id)) == 1


async def test_a_single_dispatcher_never_exceeds_its_concurrency(
    resources: Resources, scene: Scene
) -> None:
    release = asyncio.Event()
    async with serving(FakeService()) as service:
        service.default = Reply(200, "ok", hold=release)
        service_id = await make_service(resources, service.url)
        rows = [await start(resources, scene, service_id) for _ in range(5)]
        async with running(resources, dispatch_concurrency=2):
            await service.wait_received(2)
            await asyncio.sleep(0.3)
            assert len(service.received) == 2
            statuses = [(await load_analysis(resources, r.id)).status for r in rows]
            assert sorted(statuses) == ["dispatching"] * 2 + ["queued"] * 3
            release.set()
            for row in rows:
                await wait_for_status(resources, row.id, ["pending"])
    assert len(service.received) == 5


async def test_cancelled_rows_are_not_sent(resources: Resources, scene: Scene) -> None:
    async with serving(FakeService()) as service:
        service_id = await make_service(resources, service.url)
        row = await make_analysis(
            resources, scene.obj_id, service_id, scene.author.id, status="cancelled"
        )
        dispatcher = Dispatcher(resources)
        await dispatcher.start()
        try:
            await dispatcher.handle_message(
                Envelope("m-2", "analysis.requested", {"analysis_id": row.id})
            )
            await dispatcher.wait_idle()
        finally:
            await dispatcher.stop()
    assert service.received == []
    assert (await load_analysis(resources, row.id)).status == "cancelled"


async def test_concurrent_pollers_announce_each_due_row_once(
    resources: Resources, scene: Scene
) -> None:
    service_id = await make_service(resources, "http://127.0.0.1:9/never")
    past = utcnow() - timedelta(seconds=1)
    rows = [
        await make_analysis(
            resources, scene.obj_id, service_id, scene.author.id, next_attempt_at=past
        )
        for _ in range(20)
    ]
    lost = await make_analysis(
        resources,
        scene.obj_id,
        service_id,
        scene.author.id,
        last_activity=utcnow() - timedelta(hours=2),
    )
    fresh = await make_analysis(resources, scene.obj_id, service_id, scene.author.id)
    first, second = Dispatcher(resources), Dispatcher(resources)

    counts = await asyncio.gather(*(d.announce_due() for d in (first, second, first, second)))

    wanted = {r.id for r in rows} | {lost.id}
    async with resources.sessions() as session:
        messages = list(await session.scalars(select(OutboxMessage)))
    announced = [
        m.payload["analysis_id"] for m in messages if m.payload.get("analysis_id") in wanted
    ]
    assert sorted(announced) == sorted(wanted)  # each exactly once
    assert sum(counts) >= len(wanted)
    assert fresh.id not in [m.payload.get("analysis_id") for m in messages]
    for row in rows:
        assert (await load_analysis(resources, row.id)).next_attempt_at is None


# --- reaper and sweeper --------------------------------------------------------------------------


@pytest.mark.usefixtures("backend")
async def test_the_reaper_requeues_a_row_left_dispatching_and_it_is_sent_again(
    resources: Resources, scene: Scene
) -> None:
    long_ago = utcnow() - timedelta(seconds=30)
    async with serving(FakeService()) as service:
        service_id = await make_service(resources, service.url)
        stuck = await make_analysis(
            resources,
            scene.obj_id,
            service_id,
            scene.author.id,
            status="dispatching",
            dispatch_attempts_count=1,
            last_activity=long_ago,
        )
        last_chance = await make_analysis(
            resources,
            scene.obj_id,
            service_id,
            scene.author.id,
            status="dispatching",
            dispatch_attempts_count=3,
            last_activity=long_ago,
        )
        busy = await make_analysis(
            resources,
            scene.obj_id,
            service_id,
            scene.author.id,
            status="dispatching",
            dispatch_attempts_count=1,
        )
        async with running(resources) as dispatcher:
            await dispatcher.reap_stuck()
            done = await wait_for_status(resources, stuck.id, ["pending", "failure"])

    assert done.status == "pending" and done.dispatch_attempts_count == 2
    interrupted, accepted = await load_attempts(resources, stuck.id)
    assert interrupted.error is not None
    assert interrupted.outcome == "retry" and "interrupted" in interrupted.error
    assert accepted.outcome == "accepted"
    failed = await load_analysis(resources, last_chance.id)
    assert failed.status == "failure"
    assert failed.status_message is not None
    assert failed.status_message.startswith("Service unreachable after 3 attempts:")
    assert (await load_analysis(resources, busy.id)).status == "dispatching"
    await set_row(resources, busy.id, status="cancelled")


@pytest.mark.usefixtures("backend")
async def test_an_attempt_cut_short_is_listed_even_when_the_callback_completes_the_analysis(
    resources: Resources, scene: Scene
) -> None:
    release = asyncio.Event()
    async with serving(FakeService()) as service:
        service.replies = [Reply(200, "started", hold=release)]
        service_id = await make_service(resources, service.url)
        row = await start(resources, scene, service_id)
        async with running(resources) as dispatcher:
            await service.wait_received(1)
            (sending,) = await load_attempts(resources, row.id)
            # The dispatcher dies during the call; the service's callback completes the row.
            for task in set(dispatcher._in_flight):
                task.cancel()
            await dispatcher.wait_idle()
            await set_row(resources, row.id, status="completed", status_message="fit done")
            release.set()
            (left,) = await load_attempts(resources, row.id)
            await dispatcher.reap_stuck()  # within the reaper's window: left as it is
            (recent,) = await load_attempts(resources, row.id)
            await dispatcher.reap_stuck(utcnow() + timedelta(seconds=60))
            (reaped,) = await load_attempts(resources, row.id)

    assert (sending.attempt_number, sending.outcome, sending.http_status) == (1, "sending", None)
    assert (left.outcome, recent.outcome) == ("sending", "sending")
    assert (reaped.attempt_number, reaped.outcome) == (1, "interrupted")
    assert reaped.error is not None
    assert "dispatcher stopped" in reaped.error
    final = await load_analysis(resources, row.id)
    assert (final.status, final.status_message) == ("completed", "fit done")


@pytest.mark.usefixtures("backend")
async def test_attempts_that_end_together_are_recorded_together_each_on_its_own_terms(
    resources: Resources, scene: Scene
) -> None:
    """One set-based write for a batch of attempt ends: each row moves only if its attempt
    still owns it, each move emits its own event, a duplicate end changes nothing twice."""
    service_id = await make_service(resources, "http://127.0.0.1:9/")
    rows = [
        await make_analysis(
            resources,
            scene.obj_id,
            service_id,
            scene.author.id,
            status="dispatching",
            dispatch_attempts_count=1,
        )
        for _ in range(4)
    ]
    accepted, retried, failed, overtaken = rows
    await set_row(resources, overtaken.id, status="completed")  # its callback came first
    started = utcnow() - timedelta(seconds=1)

    def ended(row: ObjAnalysis, status: AnalysisStatus, outcome: str) -> Any:
        subject = lifecycle.Subject(row.id, scene.obj_id, service_id, False)
        record = lifecycle.AttemptRecord(1, started, outcome, latency_ms=3.0, http_status=202)
        next_at = utcnow() + timedelta(seconds=30) if status == AnalysisStatus.QUEUED else None
        return lifecycle.FinishedAttempt(subject, record, status, f"{outcome}!", next_at)

    batch = [
        ended(accepted, AnalysisStatus.PENDING, "accepted"),
        ended(retried, AnalysisStatus.QUEUED, "retry"),
        ended(failed, AnalysisStatus.FAILURE, "failed"),
        ended(overtaken, AnalysisStatus.PENDING, "accepted"),
        ended(accepted, AnalysisStatus.FAILURE, "failed"),  # a duplicate of the first attempt
    ]
    moved = await lifecycle.finish_attempts(
        resources.engine, batch, utcnow(), outbox=resources.outbox
    )

    assert moved == [True, True, True, False, False]
    statuses = [(await load_analysis(resources, row.id)).status for row in rows]
    assert statuses == ["pending", "queued", "failure", "completed"]
    assert (await load_analysis(resources, retried.id)).next_attempt_at is not None
    outcomes = [[a.outcome for a in await load_attempts(resources, row.id)] for row in rows]
    assert outcomes == [["accepted"], ["retry"], ["failed"], ["accepted"]]
    async with resources.sessions() as session:
        events = (await session.scalars(select(OutboxMessage))).all()
    mine = {row.id for row in rows}
    announced = sorted(
        (e.payload["analysis_id"], e.routing_key)
        for e in events
        if e.payload.get("analysis_id") in mine
    )
    assert announced == [(accepted.id, "analysis.accepted"), (failed.id, "analysis.failed")]


@pytest.mark.usefixtures("backend")
async def test_an_attempt_the_reaper_recorded_first_does_not_stop_the_rest_of_its_batch(
    resources: Resources, scene: Scene
) -> None:
    """A dispatcher that stalls between the claim and marking its attempts ``sending`` may
    find one of them already given up by the reaper: that record stays, the others are
    marked."""
    service_id = await make_service(resources, "http://127.0.0.1:9/")
    long_ago = utcnow() - timedelta(seconds=120)
    stalled, fresh = [
        await make_analysis(
            resources,
            scene.obj_id,
            service_id,
            scene.author.id,
            status="dispatching",
            dispatch_attempts_count=1,
            last_activity=last_activity,
        )
        for last_activity in (long_ago, utcnow())
    ]
    subject = lifecycle.Subject(stalled.id, scene.obj_id, service_id, False)
    given_up = lifecycle.AttemptRecord(1, long_ago, "retry", error="interrupted")
    (reaped,) = await lifecycle.finish_attempts(
        resources.engine,
        [lifecycle.FinishedAttempt(subject, given_up, AnalysisStatus.QUEUED, "retrying")],
        utcnow(),
        outbox=resources.outbox,
        idle_before=utcnow() - timedelta(seconds=60),
    )
    assert reaped

    sending = [lifecycle.Sending(stalled.id, 1), lifecycle.Sending(fresh.id, 1)]
    async with resources.sessions.begin() as session:
        await lifecycle.mark_sending_many(session, sending, utcnow(), long_ago)

    (kept,) = await load_attempts(resources, stalled.id)
    assert (kept.outcome, kept.error) == ("retry", "interrupted")
    assert (await load_analysis(resources, stalled.id)).status == "queued"
    (marked,) = await load_attempts(resources, fresh.id)
    assert marked.outcome == "sending"


@pytest.mark.usefixtures("backend")
async def test_a_slow_attempt_marked_interrupted_still_records_its_real_outcome(
    resources: Resources, scene: Scene
) -> None:
    service_id = await make_service(resources, "http://127.0.0.1:9/")
    row = await make_analysis(
        resources,
        scene.obj_id,
        service_id,
        scene.author.id,
        status="dispatching",
        dispatch_attempts_count=1,
    )
    started = utcnow() - timedelta(seconds=60)
    sessions, now = resources.sessions, utcnow()
    async with sessions.begin() as session:
        await lifecycle.mark_sending_many(session, [lifecycle.Sending(row.id, 1)], now, started)
    await set_row(resources, row.id, status="completed")  # the callback came first
    assert await lifecycle.mark_orphaned_attempts(sessions, utcnow() - timedelta(seconds=3)) == 1
    record = lifecycle.AttemptRecord(1, started, "accepted", latency_ms=5.0, http_status=202)
    subject = lifecycle.Subject(row.id, scene.obj_id, service_id, False)
    finished = lifecycle.FinishedAttempt(subject, record, AnalysisStatus.PENDING, "ok")
    (moved,) = await lifecycle.finish_attempts(
        resources.engine, [finished], utcnow(), outbox=resources.outbox
    )
    reaped_record = lifecycle.AttemptRecord(1, started, "retry", error="interrupted")
    reaped = lifecycle.FinishedAttempt(subject, reaped_record, AnalysisStatus.QUEUED, "retry")
    # a final outcome is never overwritten
    (moved_again,) = await lifecycle.finish_attempts(
        resources.engine, [reaped], utcnow(), outbox=resources.outbox
    )

    assert not moved and not moved_again
    (attempt,) = await load_attempts(resources, row.id)
    assert (attempt.outcome, attempt.http_status, attempt.error) == ("accepted", 202, None)
    assert (await load_analysis(resources, row.id)).status == "completed"


@pytest.mark.usefixtures("backend")
async def test_the_sweeper_times_out_expired_active_rows_only_with_their_events(
    resources: Resources, scene: Scene
) -> None:
    service_id = await make_service(resources, "http://127.0.0.1:9/never")
    past = utcnow() - timedelta(seconds=5)

    async def row(status: str, invalid_after: Any = past) -> ObjAnalysis:
        return await make_analysis(
            resources,
            scene.obj_id,
            service_id,
            scene.author.id,
            status=status,
            invalid_after=invalid_after,
        )

    expired = [await row(s) for s in ("queued", "dispatching", "pending")]
    finished = await row("completed")
    alive = await row("pending", utcnow() + timedelta(hours=1))

    assert await Dispatcher(resources).sweep_expired() >= 3

    for analysis in expired:
        swept = await load_analysis(resources, analysis.id)
        assert swept.status == "timed_out"
        assert swept.status_message is not None
        assert re.fullmatch(
            r"Analysis timed out before webhook call at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}",
            swept.status_message,
        )
    assert (await load_analysis(resources, finished.id)).status == "completed"
    assert (await load_analysis(resources, alive.id)).status == "pending"
    async with resources.sessions() as session:
        messages = list(await session.scalars(select(OutboxMessage)))
    events = sorted(
        (m.payload["analysis_id"], m.routing_key, m.payload["status"])
        for m in messages
        if m.payload.get("analysis_id") in {a.id for a in (*expired, finished, alive)}
    )
    assert events == sorted((a.id, "analysis.timed_out", "timed_out") for a in expired)
    for analysis in expired:  # as long as it waited, like a webhook that came too late
        duration = (await load_analysis(resources, analysis.id)).duration
        assert duration is not None and duration >= 0.0
    await set_row(resources, alive.id, status="cancelled")


async def test_a_never_called_back_analysis_is_timed_out_by_the_running_sweeper(
    resources: Resources, scene: Scene
) -> None:
    async with serving(FakeService()) as service, running(resources, sweep_interval_seconds=0.1):
        service_id = await make_service(resources, service.url)
        # Long enough to be sent and accepted first on a busy machine, short enough to wait.
        row = await start(
            resources, scene, service_id, invalid_after=utcnow() + timedelta(seconds=4)
        )
        await wait_for_status(resources, row.id, ["pending"])
        done = await wait_for_status(resources, row.id, ["timed_out"], within=15)

    assert done.status_message is not None
    assert done.status_message.startswith("Analysis timed out before webhook call at ")


# --- through RabbitMQ ----------------------------------------------------------------------------


async def test_dispatch_through_rabbitmq(resources: Resources, scene: Scene) -> None:
    async with isolated_rabbit(AMQP_URL) as make_bus, serving(FakeService()) as service:
        bus = make_bus()
        await bus.start()
        outbox = OutboxRelay(resources.sessions, bus)
        outbox.collect(resources.sessions)
        rabbit = dataclasses.replace(resources, bus=bus, outbox=outbox)
        async with running(rabbit):
            service.replies = [Reply(502, "bad gateway")]
            service_id = await make_service(resources, service.url)
            row = await start(rabbit, scene, service_id)
            done = await wait_for_status(resources, row.id, ["pending", "failure"], within=20)

    assert done.status == "pending"
    assert [a.outcome for a in await load_attempts(resources, row.id)] == ["retry", "accepted"]
    assert len(service.received) == 2


async def test_a_disabled_service_fails_the_analysis_without_a_request(
    resources: Resources, scene: Scene
) -> None:
    async with serving(FakeService()) as service, running(resources):
        service_id = await make_service(resources, service.url, enabled=False)
        row = await start(resources, scene, service_id)
        done = await wait_for_status(resources, row.id, ["failure", "pending"])

    assert done.status_message == (
        f"Analysis Service ID: {service_id} was disabled before the analysis was sent."
    )
    assert service.received == []


# --- DNS rebinding, backoff arithmetic ----------------------------------------------------------


class _LoopbackResolver(AbstractResolver):
    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            {
                "hostname": host,
                "host": "127.0.0.1",
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        return None


async def test_a_name_is_checked_on_the_addresses_actually_connected_to() -> None:
    """No lookup before the connection: the connector's one answer is what the policy sees."""
    policy = URLPolicy(allow_loopback=False)
    async with serving(FakeService()) as service:
        connector = TCPConnector(resolver=PolicyResolver(policy, _LoopbackResolver()))
        async with ClientSession(connector=connector) as http:
            outbound = Outbound(
                url=f"http://rebinding.example:{service.port}/analysis",
                body=b"{}",
                message_id="m",
                authentication_type="none",
                authinfo={},
                signing_secret=None,
            )
            result = await Sender(http, policy, 2.0).send(outbound)

    assert result.verdict == Verdict.RETRY  # DNS answers change, as for connection errors
    assert result.message.startswith("Service URL refused by the URL policy: points to a loopback")
    assert service.received == []


async def _dispatch_with_policy(
    resources: Resources, scene: Scene, url: str, policy: URLPolicy
) -> ObjAnalysis:
    strict = dataclasses.replace(resources, url_policy=policy)
    async with running(strict):
        service_id = await make_service(resources, url, [scene.group])
        row = await start(strict, scene, service_id)
        return await wait_for_status(resources, row.id, ["failure", "pending"])


async def test_localhost_is_refused_at_send_time_then_retried_like_a_connection_error(
    resources: Resources, scene: Scene
) -> None:
    async with serving(FakeService()) as service:
        url = f"http://localhost:{service.port}/analysis"
        done = await _dispatch_with_policy(resources, scene, url, URLPolicy())

    assert done.status == "failure"
    assert done.status_message is not None
    assert done.status_message.startswith(
        "Service unreachable after 3 attempts: Service URL refused by the URL policy: "
        "points to a loopback address"
    )
    attempts = await load_attempts(resources, done.id)
    assert [a.outcome for a in attempts] == ["retry", "retry", "failed"]
    assert service.received == []


async def test_a_name_that_does_not_resolve_ends_the_attempt_with_a_clear_message(
    resources: Resources, scene: Scene
) -> None:
    url = "http://skyhook-no-such-host.invalid:6801/analysis/rrl_analysis"
    done = await _dispatch_with_policy(resources, scene, url, URLPolicy())

    assert done.status == "failure"
    assert done.status_message == (
        f"Service unreachable after 3 attempts: Request to {url} failed: "
        "host 'skyhook-no-such-host.invalid' cannot be resolved"
    )


def test_retry_delays_have_jitter_and_run_out() -> None:
    delays = [1.0, 10.0]
    rng = random.Random(7)
    samples = [retry_delay(2, delays, rng=rng) for _ in range(200)]
    assert all(s is not None and 8.0 <= s <= 12.0 for s in samples)
    assert len({round(s or 0, 6) for s in samples}) > 100  # jittered, not constant
    assert retry_delay(3, delays) is None
    assert retry_delay(1, delays, retry_after=30.0) == 30.0  # the service knows better
    after_retry_after = retry_delay(2, delays, retry_after=0.5, rng=random.Random(1))
    assert after_retry_after is not None and after_retry_after >= 8.0


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon", now) is None and parse_retry_after(None, now) is None


@pytest.mark.parametrize(
    "public_url", ["http://127.0.0.1:5000", 'https://odd.example/a"b\\c', "https://ünï.example"]
)
def test_the_callback_put_into_a_stored_body_leaves_the_rest_byte_for_byte(public_url: str) -> None:
    site = Site(public_url, {})
    payload = {
        "callback_url": site.callback_url(REDACTED),
        "inputs": {"analysis_parameters": {"note": 'say "hi", then go'}, "photometry": "a,b\n1,2"},
        "callback_method": "POST",
        "analysis_parameters": {"note": 'say "hi", then go'},
    }
    stored = json.dumps(payload, allow_nan=False).encode()
    callback = site.callback_url("t0ken")

    sent = body_to_send(stored, callback, {})

    assert sent == json.dumps({**payload, "callback_url": callback}).encode()
    with_secret = json.loads(body_to_send(stored, callback, {"openai_api_key": "sk-1"}))
    assert with_secret["callback_url"] == callback
    assert with_secret["analysis_parameters"]["openai_api_key"] == "sk-1"
