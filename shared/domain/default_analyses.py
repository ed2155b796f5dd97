"""Default analyses: a service that starts by itself, as its author, when a source qualifies.

``source_filter`` says when:

- ``{"classifications": [{"name": "Ia", "probability": 0.9}, …]}``: a classification with one of
  these names and at least that probability is added to a source;
- ``{"group_id": 3}``: a source is saved to group 3;
- ``{"on_new_photometry": true, …}`` (skyhook's extension): new photometry arrives on a source,
  once the source has been quiet for the configured period; the other keys, if any, are then
  conditions on the source as it stands (it has such a classification, it is saved to that group).

Rules SkyPortal does not apply: the author must be able to read the source and the triggering
classification (the service only ever receives what the author may read); the daily limit counts
the analyses started since 00:00 UTC and is checked and recorded in the transaction that creates
the analysis, under a lock per default, so simultaneous triggers cannot overshoot it; the same
event delivered twice starts one analysis (a run is unique per default and event id); disabled
services and deleted defaults trigger nothing; the per-user cap applies as to any start.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.dialect import take_write_lock
from shared.db.models import (
    AnalysisService,
    Classification,
    DefaultAnalysis,
    DefaultAnalysisRun,
    PendingPhotometryTrigger,
    classification_groups,
    obj_groups,
    table_of,
)
from shared.db.session import Sessions
from shared.db.types import utcnow
from shared.domain.access import Principal, principal_for
from shared.domain.analysis_lifecycle import (
    AnalysisCreator,
    CapReached,
    NewAnalysis,
    ObjNotVisible,
)
from shared.domain.analysis_parameters import (
    ParameterError,
    display_parameters,
    parameter_specs,
    validate_analysis_parameters,
)
from shared.domain.enums import ACL
from shared.observability.metrics import DEFAULT_ANALYSIS_TRIGGERS

log = logging.getLogger("skyhook.default_analyses")

DAILY_LIMIT_DEFAULT = 10
DAILY_LIMIT_MAX = 1000
FILTER_KEYS = ("classifications", "group_id", "on_new_photometry")
CLASSIFICATION_KEYS = frozenset({"name", "probability"})


class DefaultAnalysisError(ValueError):
    """An invalid default analysis; the message is meant for the client (HTTP 400)."""


class DailyLimitReached(Exception):
    """The default already started its daily limit of analyses today (UTC)."""


class AlreadyTriggered(Exception):
    """This event already started an analysis of this default."""


# --- validation ---------------------------------------------------------------------------------


def _json_object(value: Any, name: str) -> Any:
    """SkyPortal accepts these fields as objects or as JSON strings."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise DefaultAnalysisError(f"Invalid {name}: not valid JSON") from None
    return value


def check_parameters(service: AnalysisService, value: Any) -> dict[str, Any]:
    value = _json_object({} if value is None else value, "default_analysis_parameters")
    try:
        specs = parameter_specs(service.optional_analysis_parameters)
        return validate_analysis_parameters(specs, value)
    except ParameterError as exc:
        message = str(exc).replace("analysis_parameters", "default_analysis_parameters", 1)
        raise DefaultAnalysisError(message) from None


def check_source_filter(value: Any) -> dict[str, Any]:
    value = _json_object(value, "source_filter")
    if not isinstance(value, dict):
        raise DefaultAnalysisError("Invalid source_filter: must be a JSON object")
    unknown = sorted(set(value) - set(FILTER_KEYS))
    if unknown:
        raise DefaultAnalysisError(
            f"Invalid source_filter: {unknown}. Keys must be among {list(FILTER_KEYS)}"
        )
    if not value or (value.get("on_new_photometry") is False and len(value) == 1):
        raise DefaultAnalysisError(
            f"Invalid source_filter: it must name at least one of {list(FILTER_KEYS)}"
        )
    if "classifications" in value:
        _check_classification_filters(value["classifications"])
    if "group_id" in value:
        group_id = value["group_id"]
        if not isinstance(group_id, int) or isinstance(group_id, bool):
            raise DefaultAnalysisError("Invalid source_filter. Key group_id must be a int.")
    if "on_new_photometry" in value and not isinstance(value["on_new_photometry"], bool):
        raise DefaultAnalysisError(
            "Invalid source_filter. Key on_new_photometry must be true or false."
        )
    return dict(value)


def _check_classification_filters(filters: Any) -> None:
    if not isinstance(filters, list):
        raise DefaultAnalysisError(
            "Invalid source_filter. Key classifications Value must be a list."
        )
    for item in filters:
        if not isinstance(item, dict) or not set(item) <= CLASSIFICATION_KEYS or "name" not in item:
            raise DefaultAnalysisError(
                "Invalid source_filter. Key classifications must be a list of dicts with keys "
                f"{sorted(CLASSIFICATION_KEYS)} (name required)."
            )
        if not isinstance(item["name"], str) or not item["name"]:
            raise DefaultAnalysisError("Invalid source_filter: a classification name is text.")
        probability = item.get("probability", 0)
        if (
            not isinstance(probability, int | float)
            or isinstance(probability, bool)
            or not 0 <= probability <= 1
        ):
            raise DefaultAnalysisError(
                "Invalid source_filter: a classification probability is a number in [0, 1]."
            )


def check_daily_limit(value: Any) -> int:
    if value is None:
        return DAILY_LIMIT_DEFAULT
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= DAILY_LIMIT_MAX:
        raise DefaultAnalysisError(
            f"Invalid daily_limit: {value}. Must be between 1 and {DAILY_LIMIT_MAX}"
        )
    return value


# --- matching -----------------------------------------------------------------------------------


def classification_matches(source_filter: dict[str, Any], name: str, probability: Any) -> bool:
    """A classification ``name`` with ``probability`` (None counts as 0) meets the filter."""
    wanted = source_filter.get("classifications") or []
    found = float(probability or 0.0)
    return any(f["name"] == name and found >= float(f.get("probability", 0)) for f in wanted)


async def active_defaults(
    session: AsyncSession, default_id: int | None = None
) -> list[DefaultAnalysis]:
    """Every default of an enabled service, or just ``default_id`` if it is one (few: matched
    in Python, the same on both databases)."""
    query = (
        select(DefaultAnalysis)
        .join(AnalysisService, AnalysisService.id == DefaultAnalysis.analysis_service_id)
        .where(AnalysisService.enabled.is_(True))
        .order_by(DefaultAnalysis.id)
    )
    if default_id is not None:
        query = query.where(DefaultAnalysis.id == default_id)
    return list((await session.scalars(query)).unique())


async def _source_meets(
    session: AsyncSession, default: DefaultAnalysis, obj_id: str, author: Principal
) -> bool:
    """For photometry triggers: the other keys of the filter hold for the source now, as far
    as the author can see."""
    source_filter = default.source_filter
    if "group_id" in source_filter:
        saved = select(obj_groups.c.obj_id).where(
            obj_groups.c.obj_id == obj_id, obj_groups.c.group_id == source_filter["group_id"]
        )
        if (await session.execute(saved)).first() is None:
            return False
    if source_filter.get("classifications"):
        query = select(Classification.classification, Classification.probability).where(
            Classification.obj_id == obj_id
        )
        if not author.is_admin:
            shared_with_author = select(classification_groups.c.classification_id).where(
                classification_groups.c.group_id.in_(author.group_ids)
            )
            query = query.where(Classification.id.in_(shared_with_author))
        rows = (await session.execute(query)).all()
        if not any(classification_matches(source_filter, n, p) for n, p in rows):
            return False
    return True


# --- starting -----------------------------------------------------------------------------------


def utc_day_start(now: datetime) -> datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass
class DailyLimitGuard:
    """Checked and recorded in the creating transaction, under a lock per default."""

    default_id: int
    daily_limit: int
    event_id: str
    obj_id: str

    async def check(self, session: AsyncSession) -> None:
        await take_write_lock(session, f"default-analysis:{self.default_id}")
        seen = select(DefaultAnalysisRun.id).where(
            DefaultAnalysisRun.default_analysis_id == self.default_id,
            DefaultAnalysisRun.event_id == self.event_id,
        )
        if (await session.execute(seen)).first() is not None:
            raise AlreadyTriggered(self.event_id)
        if await runs_since(session, self.default_id, utc_day_start(utcnow())) >= self.daily_limit:
            raise DailyLimitReached(self.default_id)

    async def record(self, session: AsyncSession, analysis_id: int) -> None:
        run = {
            "default_analysis_id": self.default_id,
            "event_id": self.event_id,
            "obj_id": self.obj_id,
            "analysis_id": analysis_id,
            "created_at": utcnow(),
        }
        await session.execute(insert(table_of(DefaultAnalysisRun)).values(**run))


async def runs_since(session: AsyncSession, default_id: int, since: datetime) -> int:
    query = select(func.count(DefaultAnalysisRun.id)).where(
        DefaultAnalysisRun.default_analysis_id == default_id,
        DefaultAnalysisRun.created_at >= since,
    )
    return int(await session.scalar(query) or 0)


def _refusal(default: DefaultAnalysis, author: Principal, readable_group_ids: Any) -> str | None:
    """Why the default may not run for this author now, or None."""
    if not author.has_acl(ACL.RUN_ANALYSES):
        return "author_not_allowed"
    service_groups = {g.id for g in default.service.groups}
    if not author.is_admin and not service_groups & author.group_ids:
        return "service_not_usable"
    if readable_group_ids is not None and not author.is_admin:
        if not set(readable_group_ids) & author.group_ids:
            return "trigger_not_readable"
    return None


def _count(outcome: str, reason: str = "") -> str:
    DEFAULT_ANALYSIS_TRIGGERS.labels(outcome=outcome, reason=reason).inc()
    return outcome if not reason else f"{outcome}:{reason}"


async def start_default(
    creator: AnalysisCreator,
    default: DefaultAnalysis,
    obj_id: str,
    *,
    event_id: str,
    trigger: str,
    readable_group_ids: list[int] | None = None,
) -> str:
    """Start the default's analysis on the source, as its author; returns the outcome
    (``started``, ``limited:daily_limit`` or ``skipped:<reason>``), also counted in /metrics."""
    _count("matched")
    author = principal_for(default.author)
    refused = _refusal(default, author, readable_group_ids)
    if refused is not None:
        return _count("skipped", refused)
    new = NewAnalysis(
        obj_id=obj_id,
        service=default.service,
        author=author,
        group_ids=sorted(g.id for g in default.groups),
        parameters=dict(default.default_analysis_parameters),
        display_parameters=display_parameters(dict(default.default_analysis_parameters)),
        show_parameters=default.show_parameters,
        show_plots=default.show_plots,
        show_corner=default.show_corner,
        default_analysis_id=default.id,
        trigger=trigger,
    )
    guard = DailyLimitGuard(default.id, default.daily_limit, event_id, obj_id)
    try:
        analysis_id = await creator.create(new, guard=guard)
    except ObjNotVisible:
        return _count("skipped", "author_cannot_read")
    except CapReached:
        return _count("skipped", "cap_reached")
    except AlreadyTriggered:
        return _count("skipped", "duplicate_event")
    except DailyLimitReached:
        return _count("limited", "daily_limit")
    log.info(
        "default analysis %d started analysis %d on %s (%s)",
        default.id,
        analysis_id,
        obj_id,
        trigger,
    )
    return _count("started")


async def on_classification_added(
    creator: AnalysisCreator,
    event_id: str,
    obj_id: str,
    name: str,
    probability: float | None,
    group_ids: list[int],
) -> list[str]:
    async with creator.sessions() as session:
        defaults = [
            d
            for d in await active_defaults(session)
            if classification_matches(d.source_filter, name, probability)
        ]
    trigger = f"classification {name}" + (f" ({probability:g})" if probability is not None else "")
    return [
        await start_default(
            creator, d, obj_id, event_id=event_id, trigger=trigger, readable_group_ids=group_ids
        )
        for d in defaults
    ]


async def on_source_saved(
    creator: AnalysisCreator, event_id: str, obj_id: str, group_id: int
) -> list[str]:
    async with creator.sessions() as session:
        defaults = [
            d for d in await active_defaults(session) if d.source_filter.get("group_id") == group_id
        ]
    trigger = f"save to group {group_id}"
    return [
        await start_default(creator, d, obj_id, event_id=event_id, trigger=trigger)
        for d in defaults
    ]


async def on_photometry_added(
    sessions: Sessions, quiet: timedelta, event_id: str, obj_id: str
) -> int:
    """Push back (or set) the quiet-period deadline of every default that runs on new
    photometry; returns how many deadlines were set."""
    async with sessions.begin() as session:
        defaults = [
            d for d in await active_defaults(session) if d.source_filter.get("on_new_photometry")
        ]
        for default in defaults:
            await take_write_lock(session, f"photometry-trigger:{default.id}:{obj_id}")
            await session.execute(
                delete(PendingPhotometryTrigger).where(
                    PendingPhotometryTrigger.default_analysis_id == default.id,
                    PendingPhotometryTrigger.obj_id == obj_id,
                )
            )
            pending = {
                "default_analysis_id": default.id,
                "obj_id": obj_id,
                "event_id": event_id,
                "due_at": utcnow() + quiet,
            }
            await session.execute(insert(table_of(PendingPhotometryTrigger)).values(**pending))
    return len(defaults)


async def start_due_photometry_triggers(creator: AnalysisCreator, limit: int = 100) -> list[str]:
    """Start the analyses whose photometry quiet period has passed. A crash between the start
    and the removal of the deadline is harmless: the run is unique per event."""
    async with creator.sessions() as session:
        due = (
            (
                await session.execute(
                    select(PendingPhotometryTrigger)
                    .where(PendingPhotometryTrigger.due_at <= utcnow())
                    .order_by(PendingPhotometryTrigger.due_at)
                    .limit(limit)
                )
            )
            .scalars()
            .all()
        )
        work = [(p.default_analysis_id, p.obj_id, p.event_id) for p in due]
    outcomes = []
    for default_id, obj_id, event_id in work:
        outcomes.append(await _start_photometry_trigger(creator, default_id, obj_id, event_id))
        async with creator.sessions.begin() as session:
            await session.execute(
                delete(PendingPhotometryTrigger).where(
                    PendingPhotometryTrigger.default_analysis_id == default_id,
                    PendingPhotometryTrigger.obj_id == obj_id,
                    PendingPhotometryTrigger.event_id == event_id,
                )
            )
    return outcomes


async def _start_photometry_trigger(
    creator: AnalysisCreator, default_id: int, obj_id: str, event_id: str
) -> str:
    async with creator.sessions() as session:
        found = await active_defaults(session, default_id)
        if not found:
            return "gone"
        (default,) = found
        if not await _source_meets(session, default, obj_id, principal_for(default.author)):
            _count("matched")
            return _count("skipped", "source_filter_not_met")
    return await start_default(
        creator, default, obj_id, event_id=event_id, trigger="new photometry"
    )


async def stats_of(session: AsyncSession, default: DefaultAnalysis) -> dict[str, Any]:
    """SkyPortal's ``stats``: the limit, how many ran since 00:00 UTC, and the last run."""
    last = await session.scalar(
        select(func.max(DefaultAnalysisRun.created_at)).where(
            DefaultAnalysisRun.default_analysis_id == default.id
        )
    )
    return {
        "daily_limit": default.daily_limit,
        "daily_count": await runs_since(session, default.id, utc_day_start(utcnow())),
        "last_run": last,
    }
