"""The webhook's reads and refusals: which analysis a token names, and why a callback for it is
refused now. The winning transition itself is ``shared.domain.analysis_lifecycle.complete_many``."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from http_edge.web import ApiError, bad_request, forbidden
from shared.db.dialect import in_bound, name_of
from shared.db.models import AnalysisService, ObjAnalysis, User
from shared.domain import analysis_lifecycle as lifecycle
from shared.domain.analysis_lifecycle import Callee
from shared.domain.enums import ACTIVE_STATUSES, AnalysisStatus

TOKEN_EXPIRED = "Token has expired"


_CALLEE_COLUMNS = (
    ObjAnalysis.id,
    ObjAnalysis.unique_id,
    ObjAnalysis.obj_id,
    ObjAnalysis.author_id,
    ObjAnalysis.analysis_service_id,
    ObjAnalysis.status,
    ObjAnalysis.status_message,
    ObjAnalysis.invalid_after,
    ObjAnalysis.last_activity,
    AnalysisService.name,
    AnalysisService.is_summary,
    AnalysisService.authinfo_ciphertext,
    AnalysisService.signing_secret_ciphertext,
    User.secrets_ciphertext,
)


def refusal(analysis: Callee) -> ApiError | None:
    """Why a webhook for this row is refused now, or None while it may still be accepted."""
    if analysis.status == AnalysisStatus.TIMED_OUT:
        return bad_request(TOKEN_EXPIRED)
    if analysis.status not in ACTIVE_STATUSES:
        return forbidden(
            f"Analysis already updated with status='{analysis.status}' "
            f"and message={analysis.status_message}"
        )
    return None


def _callees(condition: ColumnElement[bool]) -> Select[*tuple[Any, ...]]:
    return (
        select(*_CALLEE_COLUMNS)
        .join(AnalysisService, AnalysisService.id == ObjAnalysis.analysis_service_id)
        .join(User, User.id == ObjAnalysis.author_id)
        .where(condition)
    )


async def find_callee(connection: AsyncConnection, condition: ColumnElement[bool]) -> Callee | None:
    """One query, plain columns: no ORM session, no relationships."""
    row = (await connection.execute(_callees(condition))).first()
    return None if row is None else Callee(*row)


async def find_callees(engine: AsyncEngine, token_hashes: list[str]) -> list[Callee | None]:
    """The analyses these tokens name (None for a token that names none), in one read on an
    autocommit connection: one round trip, no transaction around it."""
    query = _callees_by_token(name_of(engine))
    async with engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        rows = await connection.execute(query, {"token_hashes": sorted(set(token_hashes))})
    found = {row[-1]: Callee(*row[:-1]) for row in rows}
    return [found.get(token_hash) for token_hash in token_hashes]


@functools.cache
def _callees_by_token(dialect: str) -> Select[*tuple[Any, ...]]:
    condition = in_bound(ObjAnalysis.token_hash, "token_hashes", dialect)
    return _callees(condition).add_columns(ObjAnalysis.token_hash)


async def expire(session: AsyncSession, analysis: Callee, now: datetime) -> bool:
    """Active and past invalid_after → timed_out. False when another writer got there first."""
    return bool(await lifecycle.expire(session, ObjAnalysis.id == analysis.id, now))
