"""The analysis-service registry: ``/api/analysis_service`` (SkyPortal-compatible).

Secrets (``_authinfo``, ``signing_secret``) are write-only: they are stored encrypted and
responses only say whether one is set (``has_authinfo``, ``has_signing_secret``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.auth import principal
from gateway.serialize import groups_brief
from http_edge.app_keys import SECRET_BOX, SESSIONS, SETTINGS, URL_POLICY
from http_edge.web import (
    bad_request,
    forbidden,
    json_body,
    page_from_query,
    path_int,
    success,
)
from shared.db.models import AnalysisService, Group, analysis_service_groups
from shared.domain import service_registry as registry
from shared.domain.access import Principal, groups_not_found, resolve_group_ids, visible
from shared.domain.analysis_lifecycle import delete_analyses_of_service
from shared.domain.enums import ACL, AuthenticationType
from shared.domain.errors import NotPermitted
from shared.domain.service_registry import PLAIN_FIELDS, Connection
from shared.security.secrets import SecretBox
from shared.security.urlpolicy import URLPolicy, URLPolicyError

log = logging.getLogger("skyhook.gateway.analysis_services")

ID_LABEL = "analysis_service_id"
CANNOT_ACCESS = "Cannot access this Analysis Service."
CANNOT_DELETE = "Cannot delete this Analysis Service."
# Names are unique across the site. A name held by a service the caller can see gets
# SkyPortal's text; one held elsewhere gets a refusal that says nothing of that service.
DUPLICATE_NAME = (
    "Analysis Service with that name already exists: "
    "duplicate key value violates unique constraint on name"
)
NAME_UNAVAILABLE = "Invalid name: this name cannot be used; choose another name"


def service_dict(service: AnalysisService) -> dict[str, Any]:
    """The API view of a service; secrets appear only as ``has_…`` flags."""
    data: dict[str, Any] = {"id": service.id}
    data.update({name: getattr(service, name) for name in PLAIN_FIELDS})
    data["has_authinfo"] = service.authinfo_ciphertext is not None
    data["has_signing_secret"] = service.signing_secret_ciphertext is not None
    data["created_at"] = service.created_at
    data["modified"] = service.modified
    data["groups"] = groups_brief(service.groups)
    return data


@dataclass(frozen=True)
class Registration:
    connection: Connection
    attributes: dict[str, Any]
    groups: list[Group] | None  # None: unchanged (PATCH without group_ids)


def _check_url_policy(policy: URLPolicy, url: str) -> None:
    """Syntax and literal addresses only: host names are resolved (and checked) when sent."""
    try:
        policy.check_url(url)
    except URLPolicyError as exc:
        raise bad_request(registry.url_rejected(str(exc))) from None


async def _validate(
    policy: URLPolicy,
    session: AsyncSession,
    me: Principal,
    merged: Mapping[str, Any],
    *,
    url_changed: bool,
    creating: bool,
) -> Registration:
    """SkyPortal's validation order for POST, applied to POST bodies and merged PATCH views."""
    connection = registry.check_connection(merged)  # a RegistryError is the client's 400
    if url_changed:
        _check_url_policy(policy, connection.url)
    if creating:
        groups: list[Group] | None = await _groups_for_new_service(
            session, me, merged.get("group_ids")
        )
    elif "group_ids" in merged:
        groups = await _groups_for_patch(session, me, merged["group_ids"])
    else:
        groups = None
    attributes = registry.check_attributes(merged)
    return Registration(connection, attributes, groups)


async def _groups_for_new_service(
    session: AsyncSession, me: Principal, group_ids: Any
) -> list[Group]:
    if group_ids == []:
        raise bad_request("Invalid group_ids: an Analysis Service needs at least one group")
    return await resolve_group_ids(session, me, group_ids, refusal=NotPermitted)


async def _groups_for_patch(session: AsyncSession, me: Principal, group_ids: Any) -> list[Group]:
    if not isinstance(group_ids, list) or not all(
        isinstance(g, int) and not isinstance(g, bool) for g in group_ids
    ):
        raise bad_request("Invalid group_ids: must be a list of integer group IDs")
    if not group_ids:
        raise bad_request("Invalid group_ids: an Analysis Service needs at least one group")
    wanted = set(group_ids)
    groups = list(await session.scalars(select(Group).where(Group.id.in_(wanted))))
    if {g.id for g in groups} != wanted:
        raise bad_request(groups_not_found(group_ids))
    if not me.is_admin and not wanted <= me.group_ids:
        raise bad_request(
            "Cannot change groups for Analysis Services that you are not a member of."
        )
    return groups


async def _refuse_taken_name(
    session: AsyncSession, me: Principal, name: str, except_id: int | None = None
) -> None:
    """400 when another service has this name; nothing told of a service the caller cannot
    see."""
    query = select(AnalysisService.id).where(AnalysisService.name == name)
    if except_id is not None:
        query = query.where(AnalysisService.id != except_id)
    holder = await session.scalar(query.limit(1))
    if holder is None:
        return
    if await _visible_service(session, me, holder) is not None:
        raise bad_request(DUPLICATE_NAME)
    raise bad_request(NAME_UNAVAILABLE)


def _apply_fields(service: AnalysisService, registration: Registration) -> None:
    """Write the validated plain values (and groups) onto the row."""
    connection = registration.connection
    service.url = connection.url
    service.optional_analysis_parameters = connection.optional_analysis_parameters
    service.authentication_type = connection.authentication_type
    for name, value in registration.attributes.items():
        if name != "signing_secret":
            setattr(service, name, value)
    if registration.groups is not None:
        service.groups = registration.groups


def _apply_secrets(box: SecretBox, service: AnalysisService, registration: Registration) -> None:
    """Encrypt the secrets bound to the row's id (so the row must have been flushed)."""
    authinfo = registration.connection.authinfo
    service.authinfo_ciphertext = registry.encrypt_authinfo(box, service.id, authinfo)
    if "signing_secret" in registration.attributes:
        secret = registration.attributes["signing_secret"]
        service.signing_secret_ciphertext = registry.encrypt_signing_secret(box, service.id, secret)


async def post_analysis_service(request: web.Request) -> web.Response:
    me = principal(request)
    body = await json_body(request, optional=False)
    async with request.app[SESSIONS].begin() as session:
        registration = await _validate(
            request.app[URL_POLICY], session, me, body, url_changed=True, creating=True
        )
        name = registration.attributes["name"]
        await _refuse_taken_name(session, me, name)
        service = AnalysisService()
        _apply_fields(service, registration)
        session.add(service)
        await _flush_or_duplicate(session)
        _apply_secrets(request.app[SECRET_BOX], service, registration)
        service_id = service.id
    log.info("analysis service %d (%s) created by user %d", service_id, name, me.user_id)
    return success({"id": service_id})


async def _flush_or_duplicate(session: AsyncSession) -> None:
    try:
        await session.flush()
    except IntegrityError:
        # Only the name is unique; a concurrent registration won the race.
        raise bad_request(NAME_UNAVAILABLE) from None


async def _visible_service(
    session: AsyncSession, me: Principal, service_id: int
) -> AnalysisService | None:
    query = select(AnalysisService).where(
        AnalysisService.id == service_id,
        visible(analysis_service_groups, AnalysisService.id, me),
    )
    return (await session.scalars(query)).one_or_none()


async def get_analysis_service(request: web.Request) -> web.Response:
    service_id = path_int(request, "analysis_service_id", ID_LABEL)
    me = principal(request)
    async with request.app[SESSIONS]() as session:
        service = await _visible_service(session, me, service_id)
        if service is None:
            raise forbidden(CANNOT_ACCESS)
        return success(service_dict(service))


def listed_service_dict(service: AnalysisService) -> dict[str, Any]:
    """As :func:`service_dict`, with ``optional_analysis_parameters`` parsed to an object, as
    SkyPortal's list answers (a single GET gives them back as stored)."""
    data = service_dict(service)
    parameters = data.get("optional_analysis_parameters")
    if isinstance(parameters, str):
        try:
            data["optional_analysis_parameters"] = json.loads(parameters) if parameters else {}
        except ValueError:  # registration refuses these; a row from elsewhere stays as stored
            pass
    elif parameters is None:
        data["optional_analysis_parameters"] = {}
    return data


async def list_analysis_services(request: web.Request) -> web.Response:
    """Every visible service; a plain list unless ``pageNumber``/``numPerPage`` is given."""
    me = principal(request)
    paged = "pageNumber" in request.query or "numPerPage" in request.query
    settings = request.app[SETTINGS]
    page = page_from_query(request, settings.page_size_default, settings.page_size_max)
    condition = visible(analysis_service_groups, AnalysisService.id, me)
    query = select(AnalysisService).where(condition).order_by(AnalysisService.id)
    async with request.app[SESSIONS]() as session:
        if not paged:
            return success([listed_service_dict(s) for s in await session.scalars(query)])
        counted = await session.execute(select(func.count(AnalysisService.id)).where(condition))
        total = counted.scalar_one()
        rows = await session.scalars(query.offset(page.offset).limit(page.size))
        items = [listed_service_dict(s) for s in rows]
    return success(page.answer(total, analysis_services=items))


def _stored_view(service: AnalysisService) -> dict[str, Any]:
    return {name: getattr(service, name) for name in PLAIN_FIELDS}


def _stored_authinfo(box: SecretBox, service: AnalysisService) -> dict[str, Any]:
    try:
        return registry.decrypt_authinfo(box, service)
    except ValueError:
        raise bad_request(
            "The stored `_authinfo` cannot be decrypted with the current secret keys "
            "(SKYHOOK_SECRET_KEY, SKYHOOK_PREVIOUS_SECRET_KEYS); send `_authinfo` again."
        ) from None


async def patch_analysis_service(request: web.Request) -> web.Response:
    service_id = path_int(request, "analysis_service_id", ID_LABEL)
    me = principal(request)
    me.require(ACL.MANAGE_ANALYSIS_SERVICES)
    patch = await json_body(request, optional=False)
    async with request.app[SESSIONS].begin() as session:
        service = await _visible_service(session, me, service_id)
        if service is None:
            raise forbidden(CANNOT_ACCESS)
        merged = _stored_view(service)
        needs_stored_authinfo = "_authinfo" not in patch and (
            patch.get("authentication_type", service.authentication_type) != AuthenticationType.NONE
        )
        if needs_stored_authinfo:
            merged["_authinfo"] = _stored_authinfo(request.app[SECRET_BOX], service)
        merged.update(patch)
        registration = await _validate(
            request.app[URL_POLICY],
            session,
            me,
            merged,
            url_changed="url" in patch and patch["url"] != service.url,
            creating=False,
        )
        name = registration.attributes["name"]
        await _refuse_taken_name(session, me, name, except_id=service.id)
        _apply_fields(service, registration)
        _apply_secrets(request.app[SECRET_BOX], service, registration)
        await _flush_or_duplicate(session)
    log.info("analysis service %d updated by user %d", service_id, me.user_id)
    return success()


async def delete_analysis_service(request: web.Request) -> web.Response:
    """Delete a service; its analyses go too, with their artifacts and summary entries."""
    service_id = path_int(request, "analysis_service_id", ID_LABEL)
    me = principal(request)
    me.require(ACL.MANAGE_ANALYSIS_SERVICES)
    async with request.app[SESSIONS].begin() as session:
        service = await _visible_service(session, me, service_id)
        if service is None:
            raise forbidden(CANNOT_DELETE)
        unique_ids = await delete_analyses_of_service(session, service_id)
        await session.delete(service)
    log.info(
        "analysis service %d deleted by user %d (%d analyses)",
        service_id,
        me.user_id,
        len(unique_ids),
    )
    return success()
