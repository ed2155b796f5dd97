"""Summaries: manual edits of a source (``PATCH /api/sources/{obj_id}``), summary search
(``POST /api/summary_query``) and the caller's own LLM key (``/api/internal/profile/llm_key``).

Summary search only ever returns sources the caller can read: the readable sources are
selected first, then ranked. A user's LLM key is stored encrypted and never
returned; it reaches a summary service only when the dispatcher sends that user's analysis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.analysis_access import readable_conditions
from gateway.auth import principal
from gateway.schemas import summaries as schemas
from gateway.schemas.sources import REDSHIFT_FIELDS, SourceEdit
from gateway.schemas.validation import validated
from gateway.source_access import (
    source_not_found,
    visible_obj,
)
from http_edge.app_keys import SECRET_BOX, SESSIONS, SETTINGS
from http_edge.web import ApiError, bad_request, json_body, success
from shared.db.models import ObjAnalysis, User
from shared.db.session import Sessions
from shared.domain.access import Principal
from shared.domain.embeddings import (
    EmbeddingsConfig,
    SearchFilters,
    current_vector,
    embeddings_config,
    search,
)
from shared.domain.llm_keys import LLM_KEY, set_user_secret, user_llm_key
from shared.domain.summaries import lock_obj, prepend_summary
from shared.llm.client import LLMClient, LLMError, LLMErrorKind
from shared.security.secrets import SecretBox

SEARCH_NOT_CONFIGURED = (
    "Summary search is not configured: the operator must set SKYHOOK_EMBEDDINGS_MODEL and an "
    "API key (SKYHOOK_EMBEDDINGS_API_KEY or SKYHOOK_LLM_API_KEY), and run the summary service."
)


# --- PATCH /api/sources/{obj_id} --------------------------------------------------------------


@dataclass(frozen=True)
class SummaryEdit:
    text: str | None  # None clears the summary (the history keeps who cleared it, and when)
    origin: str | None
    is_bot: bool
    analysis_id: int | None


def _summary_edit(edit: SourceEdit) -> SummaryEdit | None:
    if "summary" not in edit.model_fields_set:
        return None
    return SummaryEdit(
        text=edit.summary,
        origin=edit.summary_origin,
        is_bot=bool(edit.is_bot),
        analysis_id=edit.analysis_id,
    )


def _redshift_edit(edit: SourceEdit) -> dict[str, Any]:
    return {name: getattr(edit, name) for name in REDSHIFT_FIELDS & edit.model_fields_set}


async def _check_analysis_reference(
    session: AsyncSession, me: Principal, obj_id: str, analysis_id: int
) -> None:
    found = await session.scalar(
        select(ObjAnalysis.id).where(
            ObjAnalysis.id == analysis_id,
            ObjAnalysis.obj_id == obj_id,
            *readable_conditions(me),
        )
    )
    if found is None:
        raise bad_request(f"Invalid analysis_id: no analysis {analysis_id} of source {obj_id}")


async def patch_source(request: web.Request) -> web.Response:
    me = principal(request)
    obj_id = request.match_info["obj_id"]
    wanted = validated(SourceEdit, await json_body(request, optional=False))
    edit, redshift = _summary_edit(wanted), _redshift_edit(wanted)
    async with request.app[SESSIONS].begin() as session:
        await visible_obj(session, me, obj_id)
        obj = await lock_obj(session, obj_id)
        if obj is None:
            raise source_not_found(obj_id)
        if edit is not None and edit.analysis_id is not None:
            await _check_analysis_reference(session, me, obj_id, edit.analysis_id)
        for name, value in redshift.items():
            setattr(obj, name, value)
        if edit is not None:
            prepend_summary(
                obj,
                edit.text,
                set_by_user_id=me.user_id,
                is_bot=edit.is_bot,
                analysis_id=edit.analysis_id,
                origin=edit.origin,
            )
    return success()


# --- POST /api/summary_query ------------------------------------------------------------------


@dataclass(frozen=True)
class SummaryQuery:
    text: str | None
    obj_id: str | None
    k: int  # the model gives the default when none is sent
    filters: SearchFilters


def _summary_query(body: dict[str, Any]) -> SummaryQuery:
    wanted = validated(schemas.SummaryQuery, body)
    classes = tuple(wanted.classificationTypes) if wanted.classificationTypes else None
    filters = SearchFilters(wanted.z_min, wanted.z_max, classes)
    return SummaryQuery(wanted.q, wanted.objID, cast(int, wanted.k), filters)


def _search_failure(error: LLMError) -> ApiError:
    if error.kind == LLMErrorKind.AUTHENTICATION:
        detail = (
            "the embeddings API rejected the site's API key (401); ask the operator to check "
            "SKYHOOK_EMBEDDINGS_API_KEY or SKYHOOK_LLM_API_KEY"
        )
    else:
        detail = f"the embeddings API failed ({error.kind}): {error.detail}"
    return ApiError(502, f"Could not search sources: {detail}")


async def _query_vector(
    sessions: Sessions, me: Principal, config: EmbeddingsConfig, query: SummaryQuery
) -> list[float]:
    if query.obj_id is not None:
        async with sessions() as session:
            await visible_obj(session, me, query.obj_id)
            vector = await current_vector(session, query.obj_id, config.model)
        if vector is None:
            raise bad_request(
                f"Source {query.obj_id} has no summary embedding yet (no summary, or it is "
                "still being computed)"
            )
        return [float(x) for x in vector]
    try:
        async with LLMClient(config.endpoint) as client:
            (vector,) = await client.embed([query.text or ""], config.model)
    except LLMError as exc:
        raise _search_failure(exc) from None
    return vector


async def summary_query(request: web.Request) -> web.Response:
    me = principal(request)
    config = embeddings_config(request.app[SETTINGS])
    if config is None:
        raise bad_request(SEARCH_NOT_CONFIGURED)
    query = _summary_query(await json_body(request))
    vector = await _query_vector(request.app[SESSIONS], me, config, query)
    async with request.app[SESSIONS]() as session:
        matches = await search(session, me, vector, config.model, query.k, query.filters)
    return success({"query_results": [m.to_dict() for m in matches]})


# --- /api/internal/profile/llm_key ------------------------------------------------------------


async def _update_llm_key(request: web.Request, key: str | None) -> bool:
    async with request.app[SESSIONS].begin() as session:
        user = await session.get(User, principal(request).user_id, with_for_update=True)
        if user is None:
            raise ApiError(401, "Unknown user")
        set_user_secret(request.app[SECRET_BOX], user, LLM_KEY, key)
        return user_llm_key(request.app[SECRET_BOX], user) is not None


async def put_llm_key(request: web.Request) -> web.Response:
    key = validated(schemas.LlmKey, await json_body(request, optional=False)).api_key
    return success({"llm_key_set": await _update_llm_key(request, key)})


async def delete_llm_key(request: web.Request) -> web.Response:
    return success({"llm_key_set": await _update_llm_key(request, None)})


async def llm_key_set(sessions: Sessions, box: SecretBox, user_id: int) -> bool:
    async with sessions() as session:
        user = await session.get(User, user_id)
        return user is not None and user_llm_key(box, user) is not None


async def get_llm_key(request: web.Request) -> web.Response:
    me = principal(request)
    is_set = await llm_key_set(request.app[SESSIONS], request.app[SECRET_BOX], me.user_id)
    return success({"llm_key_set": is_set})
