"""The request payload sent to a service, and its provenance.

The payload is built once per analysis, on the first attempt, and stored as the artifact
``inputs.json`` (its sha256 in ``input_hash``); retries send the stored bytes again, so what
was recorded is exactly what every attempt sent. Secrets added at send time (an ``api_key``
in the body, LLM keys in the parameters, the token of the callback URL) are never part of the
stored copy.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import ColumnElement, Select, join, select
from sqlalchemy.ext.asyncio import AsyncSession

from dispatcher.inputs import (
    INPUTS_SCHEMA_VERSION,
    JSON_FORMAT,
    InputsError,
    InputsRequest,
    assemble_inputs_many,
)
from shared.db.dialect import json_list
from shared.db.models import AnalysisService, GroupUser, ObjAnalysis, User
from shared.domain import analysis_lifecycle as lifecycle
from shared.domain.access import Principal, principal_of
from shared.domain.analysis_parameters import SECRET_PARAMETERS
from shared.domain.artifacts import ArtifactMissing, ArtifactStore, NewArtifact
from shared.security.redaction import REDACTED

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

INPUTS_ARTIFACT = "inputs"
INPUTS_FILE = "inputs.json"
REQUEST_PARAMETERS_ARTIFACT = "request_parameters"
# Smaller payloads are encoded and hashed on the event loop (about 5 µs per KiB, so at most
# about a millisecond): for them the hop to a worker thread costs more than the work.
INLINE_PAYLOAD_BYTES = 256 * 1024


@dataclass(frozen=True)
class AnalysisToSend:
    """What a request is built from, of the claimed row."""

    id: int
    unique_id: str
    obj_id: str
    artifacts: dict[str, Any] | None
    analysis_parameters: dict[str, Any] | None
    input_filters: dict[str, Any] | None
    invalid_after: datetime


@dataclass(frozen=True)
class ServiceToCall:
    """What sending needs of the analysis' service (its credentials still sealed)."""

    id: int
    url: str
    enabled: bool
    is_summary: bool
    authentication_type: str
    authinfo_ciphertext: str | None
    signing_secret_ciphertext: str | None
    input_data_types: list[Any]
    inputs_format: str


@dataclass(frozen=True)
class Author:
    """The analysis' author: whose data the inputs may hold, and whose LLM key is sent."""

    id: int
    secrets_ciphertext: str | None
    principal: Principal


@dataclass(frozen=True)
class DispatchContext:
    analysis: AnalysisToSend
    service: ServiceToCall
    author: Author


@dataclass(frozen=True)
class StoredPayload:
    """The payload bytes, and the secret parameters (never stored with the inputs) to put back
    into the body when sending. On the first attempt also the ``inputs.json`` file to store
    and the provenance columns to set (the caller writes both in the claim's transaction)."""

    body: bytes
    secret_parameters: dict[str, Any]
    new_file: NewArtifact | None = None
    provenance: dict[str, Any] | None = None
    replaces_stored: bool = False  # ``new_file`` replaces a stored copy that could not be read


T = TypeVar("T", bound="DataclassInstance")

InputsMemo = dict[tuple[Any, ...], dict[str, Any] | InputsError]
"""Inputs assembled for a claim, by (source, reader, selection): analyses claimed together
that read the same data share one assembly."""


def _columns_of(model: Any, shape: Any) -> list[Any]:
    """The model's columns named like the dataclass' fields, labelled with its name."""
    return [getattr(model, f.name).label(f"{shape.__name__}_{f.name}") for f in fields(shape)]


def _made(shape: type[T], row: Any) -> T:
    values = row._mapping
    return shape(**{f.name: values[f"{shape.__name__}_{f.name}"] for f in fields(shape)})


def _author_groups(*membership: ColumnElement[bool]) -> Any:
    """The author's group ids (those of the memberships ``membership`` picks), as a list."""
    groups = select(json_list(GroupUser.group_id)).where(
        GroupUser.user_id == ObjAnalysis.author_id, *membership
    )
    return groups.scalar_subquery()


# Plain rows, not ORM objects: a claim reads only these columns, for many analyses at once.
_CONTEXT_COLUMNS = [
    *_columns_of(ObjAnalysis, AnalysisToSend),
    *_columns_of(AnalysisService, ServiceToCall),
    ObjAnalysis.author_id,
    User.username,  # NULL: the author was deleted since the start
    User.is_admin,
    User.acls,
    User.secrets_ciphertext,
    _author_groups().label("author_groups"),
    _author_groups(GroupUser.admin.is_(True)).label("author_admin_groups"),
]


_SERVICE_OF_ROW = AnalysisService.id == ObjAnalysis.analysis_service_id


def _claimed_contexts(claimed: Any, is_claimed: ColumnElement[bool]) -> Select[Any]:
    """The claimed rows with their services and authors, each with its claimed attempt's
    number."""
    return (
        select(claimed.dispatch_attempts_count.label("attempt_number"), *_CONTEXT_COLUMNS)
        .select_from(join(ObjAnalysis, AnalysisService, _SERVICE_OF_ROW))
        .outerjoin(User, User.id == ObjAnalysis.author_id)
        .where(is_claimed)
    )


async def claim_contexts(
    session: AsyncSession, analysis_ids: Sequence[int], now: datetime
) -> dict[int, tuple[int, DispatchContext]]:
    """Claim the due rows among ``analysis_ids`` (``queued → dispatching``) and load each
    with its service and author: for each claimed id, the attempt's number and its context.
    One statement on PostgreSQL (the claim, its rows, their services and authors with their
    groups), two on SQLite. A row whose author was deleted meanwhile is left out."""
    found = await lifecycle.claim_many(session, analysis_ids, now, _claimed_contexts)
    return {
        row.AnalysisToSend_id: (
            row.attempt_number,
            DispatchContext(_made(AnalysisToSend, row), _made(ServiceToCall, row), _author(row)),
        )
        for row in found
        if row.username is not None
    }


def _author(row: Any) -> Author:
    groups, admin_groups = row.author_groups or (), row.author_admin_groups or ()
    principal = principal_of(row.author_id, row, groups, admin_groups)
    return Author(row.author_id, row.secrets_ciphertext, principal)


@dataclass(frozen=True)
class Site:
    """What every request built here shares: the platform's public URL (callbacks go there)
    and the site's summary parameters (sent to summary services)."""

    public_url: str
    summary_parameters: dict[str, Any]

    def callback_url(self, token: str) -> str:
        """The webhook URL for a token (``[redacted]`` in the stored copy of the payload)."""
        return f"{self.public_url}/api/webhook/obj_analysis/{token}"


async def request_parameters(
    artifacts: ArtifactStore, analysis: AnalysisToSend, session: AsyncSession | None = None
) -> dict[str, Any]:
    """The full parameters: the ``request_parameters`` artifact (file contents) if any
    (read in ``session``'s transaction when given)."""
    ref = (analysis.artifacts or {}).get(REQUEST_PARAMETERS_ARTIFACT)
    if ref:
        stored = json.loads(await artifacts.read(ref, session))
        if isinstance(stored, dict):
            return stored
    return dict(analysis.analysis_parameters or {})


def split_secret_parameters(parameters: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(parameters without secrets, the secrets) — e.g. an LLM key a summary service needs."""
    public = {k: v for k, v in parameters.items() if k not in SECRET_PARAMETERS}
    secret = {k: v for k, v in parameters.items() if k in SECRET_PARAMETERS}
    return public, secret


def _inputs_request(context: DispatchContext) -> InputsRequest:
    analysis, service = context.analysis, context.service
    return InputsRequest(
        analysis.obj_id,
        context.author.principal,
        tuple(service.input_data_types or ()),
        analysis.input_filters,
        service.inputs_format,
    )


def _memo_key(request: InputsRequest) -> tuple[Any, ...]:
    return (request.obj_id, *request.reading)


async def assemble_claimed_inputs(
    session: AsyncSession, contexts: Iterable[DispatchContext], memo: InputsMemo
) -> None:
    """Assemble, together, the inputs of every claimed analysis that has none stored yet (a
    first attempt): a few queries for the whole claim instead of a few per analysis, and
    one assembly for the analyses that read the same source the same way."""
    requests = {
        _memo_key(request): request
        for request in (
            _inputs_request(c)
            for c in contexts
            if INPUTS_ARTIFACT not in (c.analysis.artifacts or {})
        )
    }
    assembled = await assemble_inputs_many(session, list(requests.values()))
    memo.update(zip(requests, assembled, strict=True))


async def _inputs_data(
    session: AsyncSession, context: DispatchContext, memo: InputsMemo
) -> dict[str, Any]:
    request = _inputs_request(context)
    key = _memo_key(request)
    if key not in memo:
        (memo[key],) = await assemble_inputs_many(session, [request])
    found = memo[key]
    if isinstance(found, InputsError):
        raise found
    return found


async def build_payload(
    site: Site,
    session: AsyncSession,
    context: DispatchContext,
    parameters: dict[str, Any],
    memo: InputsMemo | None = None,
) -> dict[str, Any]:
    analysis, service = context.analysis, context.service
    if service.is_summary and "summary_parameters" not in parameters:
        parameters = {
            "summary_parameters": site.summary_parameters,
            **parameters,
        }
    data = await _inputs_data(session, context, {} if memo is None else memo)
    payload: dict[str, Any] = {
        "callback_url": site.callback_url(REDACTED),
        "inputs": {"analysis_parameters": parameters, **data},
        "callback_method": "POST",
        "invalid_after": lifecycle.naive_utc_text(analysis.invalid_after.astimezone(UTC)),
        "analysis_resource_type": "obj",
        "resource_id": analysis.obj_id,
        "analysis_parameters": parameters,
    }
    if service.inputs_format == JSON_FORMAT:
        payload["inputs_format"] = JSON_FORMAT
        payload["inputs_schema_version"] = INPUTS_SCHEMA_VERSION
    return payload


def _encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, allow_nan=False).encode()


async def stored_payload(
    artifacts: ArtifactStore,
    site: Site,
    session: AsyncSession,
    context: DispatchContext,
    memo: InputsMemo | None = None,
) -> StoredPayload:
    """The stored payload of an earlier attempt, or a new one with the file to store."""
    analysis = context.analysis
    parameters, secrets = split_secret_parameters(
        await request_parameters(artifacts, analysis, session)
    )
    manifest = dict(analysis.artifacts or {})
    ref = manifest.get(INPUTS_ARTIFACT)
    if ref:
        try:
            return StoredPayload(await artifacts.read(ref, session), secrets)
        except ArtifactMissing:
            pass  # not stored (its file was gone at the import): build and store it again
    payload = await build_payload(site, session, context, parameters, memo)
    if REQUEST_PARAMETERS_ARTIFACT in manifest or _rough_size(payload) > INLINE_PAYLOAD_BYTES:
        file = await asyncio.to_thread(_inputs_file, payload)  # CPU work: off the event loop
    else:
        file = _inputs_file(payload)
    manifest[INPUTS_ARTIFACT] = file.ref(analysis.unique_id).to_dict()
    provenance = {"artifacts": manifest, "input_hash": file.sha256}
    return StoredPayload(file.data, secrets, file, provenance, replaces_stored=bool(ref))


def _rough_size(payload: dict[str, Any]) -> int:
    """About how many bytes the payload's inputs encode to (CSV text by its length, JSON
    records at a few hundred bytes each)."""
    size = 0
    for value in payload["inputs"].values():
        if isinstance(value, str):
            size += len(value)
        elif isinstance(value, list):
            size += 512 * len(value)
    return size


def _inputs_file(payload: dict[str, Any]) -> NewArtifact:
    return NewArtifact(INPUTS_FILE, _encode(payload), "application/json")


def body_to_send(body: bytes, callback: str, secrets: dict[str, Any]) -> bytes:
    """The stored payload with what was kept out of it: the real callback URL, and the secret
    parameters where the service reads parameters (both copies)."""
    if not secrets:
        spliced = _with_callback(body, callback)
        if spliced is not None:
            return spliced
    payload = json.loads(body)
    payload["callback_url"] = callback
    if not secrets:
        return _encode(payload)
    payload["analysis_parameters"] = {**payload.get("analysis_parameters", {}), **secrets}
    inputs = payload.setdefault("inputs", {})
    inputs["analysis_parameters"] = {**inputs.get("analysis_parameters", {}), **secrets}
    return _encode(payload)


_STORED_CALLBACK = b'{"callback_url": '


def _with_callback(body: bytes, callback: str) -> bytes | None:
    """The stored body with its leading (redacted) callback URL replaced, without decoding
    the rest; None when the body does not start with it (then it is decoded)."""
    if not body.startswith(_STORED_CALLBACK):
        return None
    end = body.find(b'", ', len(_STORED_CALLBACK))
    if end < 0:
        return None
    stored = body[len(_STORED_CALLBACK) : end + 1]
    try:
        if not isinstance(json.loads(stored), str):
            return None
    except ValueError:
        return None
    return _STORED_CALLBACK + json.dumps(callback).encode() + body[end + 1 :]


def with_body_secret(body: bytes, name: str, value: str) -> bytes:
    """SkyPortal's ``api_key`` authentication: the key goes into the JSON body."""
    payload = json.loads(body)
    payload[name] = value
    return _encode(payload)
