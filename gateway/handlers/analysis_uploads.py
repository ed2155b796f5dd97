"""Upload-only analyses: results posted directly by a user.

The row is created ``completed`` and, unlike SkyPortal, an ``analysis.completed`` event is
emitted, so summary services and other consumers treat uploads like webhook results. The
response never names a server path.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from gateway.analysis_access import (
    ANALYSIS_CREATOR,
    SERVICE_ID_LABEL,
    refuse_if_disabled,
    request_group_ids,
    usable_service,
)
from gateway.auth import principal
from gateway.schemas.analyses import UploadAnalysis
from gateway.schemas.validation import validated
from http_edge.web import bad_request, forbidden, json_body, not_found, path_int, success
from shared.db.session import Sessions
from shared.domain.analysis_data import PayloadError, store_analysis_payload
from shared.domain.analysis_lifecycle import (
    CapReached,
    NewAnalysis,
    ObjNotVisible,
    count_capped,
    obj_visible,
)
from shared.domain.enums import AnalysisStatus

log = logging.getLogger("skyhook.gateway.analysis_uploads")

UPLOAD_CAP_MESSAGE = (
    "You have reached the maximum number of analyses for this object. "
    "Please delete some analyses before uploading more."
)


def _flag(value: bool | None) -> bool:
    return True if value is None else value


async def _check_and_prepare(
    request: web.Request, sessions: Sessions, cap: int, body: dict[str, Any]
) -> tuple[NewAnalysis, UploadAnalysis]:
    me = principal(request)
    service_id = path_int(request, SERVICE_ID_LABEL, SERVICE_ID_LABEL)
    obj_id = request.match_info["obj_id"]
    async with sessions() as session:
        service = await usable_service(session, me, service_id)
        if not service.upload_only:
            raise forbidden(f"Analysis Service ID: {service_id} is not of type upload_only.")
        refuse_if_disabled(service)
        group_ids = await request_group_ids(session, me, body.get("group_ids"))
        if not await obj_visible(session, obj_id, me):
            raise not_found(f"Obj {obj_id} not found")
        # An early answer before storing anything; creating checks again atomically.
        if await count_capped(session, obj_id, me.user_id) >= cap:
            raise forbidden(UPLOAD_CAP_MESSAGE)
    upload = validated(UploadAnalysis, body)
    new = NewAnalysis(
        obj_id=obj_id,
        service=service,
        author=me,
        group_ids=group_ids,
        parameters={},
        display_parameters={},
        show_parameters=_flag(upload.show_parameters),
        show_plots=_flag(upload.show_plots),
        show_corner=_flag(upload.show_corner),
        status=AnalysisStatus.COMPLETED,
        status_message=upload.message or "",
        handled_by_url="/",
    )
    return new, upload


async def _store(new: NewAnalysis, analysis: dict[str, Any]) -> None:
    """Decode the payload; its files are stored with the row, in the creating transaction."""
    try:
        stored = await store_analysis_payload(new.unique_id, analysis)
    except PayloadError as exc:
        raise bad_request(str(exc)) from None
    new.artifacts = stored.artifacts
    new.files = stored.files
    new.data_summary = stored.data_summary
    new.annotations = stored.annotations


async def post_analysis_upload(request: web.Request) -> web.Response:
    me = principal(request)
    body = await json_body(request)
    creator = request.app[ANALYSIS_CREATOR]
    new, upload = await _check_and_prepare(request, creator.sessions, creator.cap, body)
    analysis = upload.analysis or {}
    if analysis:
        await _store(new, analysis)
    try:
        analysis_id = await creator.create(new)
    except ObjNotVisible:
        raise not_found(f"Obj {new.obj_id} not found") from None
    except CapReached:
        raise forbidden(UPLOAD_CAP_MESSAGE) from None
    log.info("analysis %d uploaded: obj %s, user %d", analysis_id, new.obj_id, me.user_id)
    if analysis:
        text = f"Saved upload_only analysis data. Message: {new.status_message}"
    else:
        text = f"Note: empty analysis upload_only results. Message: {new.status_message}"
    return success({"id": analysis_id, "message": text})
