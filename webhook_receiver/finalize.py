"""The webhook's reads and refusals: which analysis a token names, and why a callback for it is
refused now. The winning transition itself is ``shared.analysis_lifecycle.complete``."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from shared import analysis_lifecycle as lifecycle
from shared.analysis_lifecycle import Callee
from shared.db.models import AnalysisService, ObjAnalysis, User
from shared.enums import ACTIVE_STATUSES, AnalysisStatus
from shared.web import ApiError, bad_request, forbidden

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


async def find_callee(connection: AsyncConnection, condition: ColumnElement[bool]) -> Callee | None:
    """One query, plain columns: no ORM session, no relationships."""
    query = (
        select(*_CALLEE_COLUMNS)
        .join(AnalysisService, AnalysisService.id == ObjAnalysis.analysis_service_id)
        .join(User, User.id == ObjAnalysis.author_id)
        .where(condition)
    )
    row = (await connection.execute(query)).first()
    return None if row is None else Callee(*row)


async def expire(session: AsyncSession, analysis: Callee, now: datetime) -> bool:
    """Active and past invalid_after → timed_out. False when another writer got there first."""
    return bool(await lifecycle.expire(session, ObjAnalysis.id == analysis.id, now))
