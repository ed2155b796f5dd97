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
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload, lazyload

from dispatcher.inputs import (
    INPUTS_SCHEMA_VERSION,
    JSON_FORMAT,
    InputsError,
    InputsRequest,
    assemble_inputs_many,
)
from shared.db.dialect import in_set, name_of
from shared.db.models import AnalysisService, ObjAnalysis, User
from shared.domain.access import principal_for
from shared.domain.analysis_lifecycle import naive_utc_text
from shared.domain.analysis_parameters import SECRET_PARAMETERS
from shared.domain.artifacts import ArtifactMissing, ArtifactStore, NewArtifact
from shared.security.redaction import REDACTED

INPUTS_ARTIFACT = "inputs"
INPUTS_FILE = "inputs.json"
REQUEST_PARAMETERS_ARTIFACT = "request_parameters"


@dataclass(frozen=True)
class DispatchContext:
    analysis: ObjAnalysis
    service: AnalysisService
    author: User


@dataclass(frozen=True)
class StoredPayload:
    """The payload bytes, and the secret parameters (never stored with the inputs) to put back
    into the body when sending. On the first attempt also the ``inputs.json`` file to store
    and the provenance columns to set (the caller writes both in the claim's transaction)."""

    body: bytes
    secret_parameters: dict[str, Any]
    new_file: NewArtifact | None = None
    provenance: dict[str, Any] | None = None


InputsMemo = dict[tuple[Any, ...], dict[str, Any] | InputsError]
"""Inputs assembled for a claim, by (source, reader, selection): analyses claimed together
that read the same data share one assembly."""


async def load_contexts(
    session: AsyncSession, analysis_ids: Sequence[int]
) -> dict[int, DispatchContext]:
    """The rows, their services and their authors with their memberships: one query."""
    query = (
        select(ObjAnalysis, User)
        .join(User, User.id == ObjAnalysis.author_id)
        .options(
            lazyload(ObjAnalysis.groups),
            joinedload(ObjAnalysis.service).raiseload(AnalysisService.groups),
            joinedload(User.memberships),
        )
        .where(in_set(ObjAnalysis.id, analysis_ids, name_of(session)))
    )
    found = (await session.execute(query)).unique().all()
    return {
        analysis.id: DispatchContext(analysis, analysis.service, author)
        for analysis, author in found
    }


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
    artifacts: ArtifactStore, analysis: ObjAnalysis, session: AsyncSession | None = None
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
        principal_for(context.author),
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
    first attempt): a few queries for the whole claim instead of a few per analysis."""
    requests = [
        _inputs_request(c) for c in contexts if INPUTS_ARTIFACT not in (c.analysis.artifacts or {})
    ]
    assembled = await assemble_inputs_many(session, requests)
    for request, data in zip(requests, assembled, strict=True):
        memo[_memo_key(request)] = data


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
        "invalid_after": naive_utc_text(analysis.invalid_after.astimezone(UTC)),
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
    file = await asyncio.to_thread(_inputs_file, payload)
    manifest[INPUTS_ARTIFACT] = file.ref(analysis.unique_id).to_dict()
    provenance = {"artifacts": manifest, "input_hash": file.sha256}
    return StoredPayload(file.data, secrets, file, provenance)


def _inputs_file(payload: dict[str, Any]) -> NewArtifact:
    return NewArtifact(INPUTS_FILE, _encode(payload), "application/json")


def body_to_send(body: bytes, callback: str, secrets: dict[str, Any]) -> bytes:
    """The stored payload with what was kept out of it: the real callback URL, and the secret
    parameters where the service reads parameters (both copies)."""
    payload = json.loads(body)
    payload["callback_url"] = callback
    if not secrets:
        return _encode(payload)
    payload["analysis_parameters"] = {**payload.get("analysis_parameters", {}), **secrets}
    inputs = payload.setdefault("inputs", {})
    inputs["analysis_parameters"] = {**inputs.get("analysis_parameters", {}), **secrets}
    return _encode(payload)


def with_body_secret(body: bytes, name: str, value: str) -> bytes:
    """SkyPortal's ``api_key`` authentication: the key goes into the JSON body."""
    payload = json.loads(body)
    payload[name] = value
    return _encode(payload)
