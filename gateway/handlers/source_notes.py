"""Comments, classifications and annotations on a source."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import Table, select

from gateway.auth import principal
from gateway.schemas.sources import NewAnnotation, NewClassification, NewComment, NewCommentOn
from gateway.schemas.validation import validated
from gateway.serialize import annotation_dict, classification_dict, comment_dict
from gateway.source_access import (
    add_data_row,
    required,
    visible_obj,
)
from http_edge.app_keys import SESSIONS
from http_edge.web import bad_request, json_body, success
from shared.bus.outbox import enqueue
from shared.db.models import (
    Annotation,
    Classification,
    Comment,
    User,
    annotation_groups,
    classification_groups,
    comment_groups,
)
from shared.domain.access import Principal, visible
from shared.domain.enums import ACL
from shared.domain.events import ClassificationAdded

NoteModel = type[Comment] | type[Classification] | type[Annotation]


def _visible_rows(model: NoteModel, link: Table, obj_id: str, me: Principal) -> Any:
    return (
        select(model)
        .where(model.obj_id == obj_id, visible(link, model.id, me))
        .order_by(model.created_at, model.id)
    )


async def _post_comment(
    request: web.Request, obj_id: object, body: dict[str, Any], model: type[NewComment]
) -> int:
    me = principal(request)
    me.require(ACL.UPLOAD_DATA)
    new = validated(model, body)
    async with request.app[SESSIONS].begin() as session:
        obj = await visible_obj(session, me, obj_id)
        return await add_data_row(
            session, me, obj, new.group_ids, Comment, text=new.text, origin=new.origin
        )


async def post_source_comment(request: web.Request) -> web.Response:
    body = await json_body(request, optional=False)
    comment_id = await _post_comment(request, request.match_info["obj_id"], body, NewComment)
    return success({"comment_id": comment_id})


async def post_comment(request: web.Request) -> web.Response:
    """SkyPortal's older form: the source is named in the body."""
    body = await json_body(request, optional=False)
    comment_id = await _post_comment(request, required(body, "obj_id"), body, NewCommentOn)
    return success({"comment_id": comment_id})


async def get_source_comments(request: web.Request) -> web.Response:
    me = principal(request)
    obj_id = request.match_info["obj_id"]
    query = _visible_rows(Comment, comment_groups, obj_id, me).outerjoin(
        User, User.id == Comment.owner_id
    )
    async with request.app[SESSIONS]() as session:
        await visible_obj(session, me, obj_id)
        rows = await session.execute(query.add_columns(User.username))
        return success([comment_dict(c, author, me) for c, author in rows])


def _classification_fields(new: NewClassification) -> dict[str, Any]:
    return {
        "classification": new.classification,
        "probability": new.probability,
        "taxonomy": new.taxonomy,
        "ml": bool(new.ml),
    }


async def post_classification(request: web.Request) -> web.Response:
    me = principal(request)
    new = validated(NewClassification, await json_body(request, optional=False))
    fields = _classification_fields(new)
    async with request.app[SESSIONS].begin() as session:
        obj = await visible_obj(session, me, new.obj_id)
        row_id = await add_data_row(session, me, obj, new.group_ids, Classification, **fields)
        shared_with = await session.scalars(
            select(classification_groups.c.group_id).where(
                classification_groups.c.classification_id == row_id
            )
        )
        added = ClassificationAdded(
            classification_id=row_id,
            obj_id=obj.id,
            classification=fields["classification"],
            probability=fields["probability"],
            group_ids=sorted(shared_with),
        )
        enqueue(session, added)  # default analyses may start on it
    return success({"classification_id": row_id})


async def get_source_classifications(request: web.Request) -> web.Response:
    me = principal(request)
    obj_id = request.match_info["obj_id"]
    async with request.app[SESSIONS]() as session:
        await visible_obj(session, me, obj_id)
        rows = await session.scalars(
            _visible_rows(Classification, classification_groups, obj_id, me)
        )
        return success([classification_dict(row, me) for row in rows])


async def post_source_annotation(request: web.Request) -> web.Response:
    me = principal(request)
    new = validated(NewAnnotation, await json_body(request, optional=False))
    origin, data = new.origin, new.data
    async with request.app[SESSIONS].begin() as session:
        obj = await visible_obj(session, me, request.match_info["obj_id"])
        same_origin = _visible_rows(Annotation, annotation_groups, obj.id, me).where(
            Annotation.origin == origin
        )
        if await session.scalar(same_origin.limit(1)) is not None:
            raise bad_request(
                f"An annotation from origin {origin!r} already exists on source {obj.id}"
            )
        row_id = await add_data_row(
            session, me, obj, new.group_ids, Annotation, origin=origin, data=data
        )
    return success({"annotation_id": row_id})


async def get_source_annotations(request: web.Request) -> web.Response:
    me = principal(request)
    obj_id = request.match_info["obj_id"]
    async with request.app[SESSIONS]() as session:
        await visible_obj(session, me, obj_id)
        rows = await session.scalars(_visible_rows(Annotation, annotation_groups, obj_id, me))
        return success([annotation_dict(row, me) for row in rows])
