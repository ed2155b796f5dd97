"""Every state change of an analysis, each one function over a set of rows that writes the
change and its event (through the outbox) in one statement or transaction::

    start  ──create──▶ queued ──claim──▶ dispatching ──accepted──▶ pending
    upload ──create──▶ completed             ├──retry, reap──▶ queued
                                             └──failed──▶ failure
    queued | dispatching | pending ──webhook──▶ completed | failure
    queued | dispatching | pending ──past invalid_after──▶ timed_out
    queued | dispatching | pending ──cancel──▶ cancelled
    any ──delete──▶ gone, with its artifacts and the summary entries it wrote

The sections below, in order: creating (:class:`AnalysisCreator`;
the per-(object, author) cap is counted and the rows inserted under a lock taken for that pair,
so concurrent starts cannot overshoot it), cancelling, the webhook's completion
(:func:`complete_many`), dispatching (:func:`claim_many`, :func:`mark_sending_many`,
:func:`finish_attempts`, :func:`announce_due`, the reaper's :func:`stuck_rows`), expiry
(:func:`sweep_expired`, :func:`expire`) and deleting. Every transition is conditional on the
row's current state, so a transition that lost a race writes nothing.

The cap counts completed analyses and the ones still in flight (queued, dispatching, pending),
which are the ones that may still complete; failed, timed-out and cancelled ones do not count.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import (
    ColumnElement,
    Integer,
    String,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.sql.schema import ScalarElementColumnDefault

from shared.bus.outbox import OutboxRelay, enqueue, outbox_values
from shared.db.dialect import (
    NOW,
    AllAtOnce,
    ReadOfWritten,
    RowSet,
    Together,
    WrittenAndRead,
    all_at_once,
    in_bound,
    lock_reserve_and_read,
    merged_json,
    name_of,
    row_check,
    seconds_since,
    skip_locked,
    together,
    upsert_selected,
    write_all,
    write_then_read,
    write_together,
    write_together_in,
    written_and_read,
)
from shared.db.models import (
    AnalysisService,
    Annotation,
    DispatchAttempt,
    Group,
    Obj,
    ObjAnalysis,
    OutboxMessage,
    obj_analysis_groups,
    obj_groups,
    table_of,
)
from shared.db.session import Sessions
from shared.db.types import OptionalJSONDoc, UTCDateTime, utcnow
from shared.domain.access import Principal, visible, visible_to_bound
from shared.domain.access_versions import PRINCIPALS as PRINCIPALS_COUNTER
from shared.domain.access_versions import SERVICES as SERVICES_COUNTER
from shared.domain.access_versions import ReadAt, StaleAccess, current_counters, version_of
from shared.domain.analysis_data import AnnotationIn
from shared.domain.artifacts import (
    ArtifactWrites,
    NewArtifact,
    artifact_inserts,
    artifact_writes,
    delete_artifacts,
    write_artifacts,
    write_artifacts_of,
)
from shared.domain.enums import ACTIVE_STATUSES, AnalysisStatus
from shared.domain.events import AnalysisAccepted, AnalysisRequested, Message, analysis_ended
from shared.domain.summaries import forget_analysis, lock_obj
from shared.runtime.group_commit import PIPELINE_WINDOW_SECONDS, GroupCommit
from shared.security.secrets import CallbackTokens, hash_token

CAPPED_STATUSES = (AnalysisStatus.COMPLETED, *ACTIVE_STATUSES)
REQUEST_PARAMETERS_FILE = "request_parameters.json"


# --- creating ---------------------------------------------------------------------------


class ObjNotVisible(Exception):
    """The object does not exist or the author cannot read it."""


class CapReached(Exception):
    """The author already has the maximum number of analyses on this object."""


@dataclass
class NewAnalysis:
    obj_id: str
    service: AnalysisService
    author: Principal
    group_ids: list[int]
    parameters: dict[str, Any]  # as the service will receive them
    display_parameters: dict[str, Any]  # as stored on the row (no file data, no secrets)
    input_filters: dict[str, Any] = field(default_factory=dict)
    show_parameters: bool = False
    show_plots: bool = False
    show_corner: bool = False
    status: AnalysisStatus = AnalysisStatus.QUEUED
    status_message: str | None = None
    handled_by_url: str = "api/webhook/obj_analysis"
    artifacts: dict[str, Any] = field(default_factory=dict)
    files: list[NewArtifact] = field(default_factory=list)  # the bytes ``artifacts`` describes
    data_summary: dict[str, Any] = field(default_factory=dict)
    annotations: list[AnnotationIn] = field(default_factory=list)  # of an upload's results
    unique_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    default_analysis_id: int | None = None  # set when a default analysis started it
    trigger: str | None = None  # what made the default start, in words
    # When ``author`` or ``service`` are cached copies: the counters they were read at. The
    # creating transaction refuses them (StaleAccess) if either moved since.
    read_at: ReadAt | None = None


class StartGuard(Protocol):
    """Extra conditions checked in the creating transaction (e.g. a default analysis' daily
    limit): ``check`` runs before the insert and raises to refuse, ``record`` after it."""

    async def check(self, session: AsyncSession) -> None: ...

    async def record(self, session: AsyncSession, analysis_id: int) -> None: ...


async def obj_visible(session: AsyncSession, obj_id: str, who: Principal) -> bool:
    query = select(Obj.id).where(Obj.id == obj_id, visible(obj_groups, Obj.id, who))
    return (await session.execute(query)).first() is not None


def _counted_toward_cap(obj_id: Any, author_id: Any) -> ColumnElement[bool]:
    """The author's analyses of the object that count toward the cap (values or columns)."""
    return and_(
        ObjAnalysis.obj_id == obj_id,
        ObjAnalysis.author_id == author_id,
        ObjAnalysis.status.in_(CAPPED_STATUSES),
    )


async def count_capped(session: AsyncSession, obj_id: str, author_id: int) -> int:
    query = (
        select(func.count()).select_from(ObjAnalysis).where(_counted_toward_cap(obj_id, author_id))
    )
    return int(await session.scalar(query) or 0)


def _message_for(analysis_id: int, new: NewAnalysis) -> Message:
    if new.status == AnalysisStatus.QUEUED:
        return AnalysisRequested(analysis_id=analysis_id)
    return analysis_ended(
        new.status, analysis_id, new.obj_id, new.service.id, bool(new.service.is_summary)
    )


NEW_ROW = (
    "unique_id",
    "obj_id",
    "author_id",
    "analysis_service_id",
    "token_hash",
    "status",
    "status_message",
    "analysis_parameters",
    "input_filters",
    "show_parameters",
    "show_plots",
    "show_corner",
    "invalid_after",
    "last_activity",
    "duration",
    "finished_at",
    "handled_by_url",
    "artifacts",
    "data_summary",
    "default_analysis_id",
    "trigger",
)


def _new_row(tokens: CallbackTokens, new: NewAnalysis, analysis_id: int) -> dict[str, Any]:
    """The new row's id and columns (:data:`NEW_ROW`; a row set's row, no ORM object)."""
    now = utcnow()
    active = new.status in ACTIVE_STATUSES
    return {
        "id": analysis_id,
        "unique_id": new.unique_id,
        "obj_id": new.obj_id,
        "author_id": new.author.user_id,
        "analysis_service_id": new.service.id,
        "token_hash": hash_token(tokens.token_for(new.unique_id)),
        "status": new.status,
        "status_message": new.status_message,
        "analysis_parameters": new.display_parameters,
        "input_filters": new.input_filters,
        "show_parameters": new.show_parameters,
        "show_plots": new.show_plots,
        "show_corner": new.show_corner,
        "invalid_after": now + timedelta(seconds=new.service.timeout) if active else now,
        "last_activity": now,
        "duration": None if active else 0.0,
        "finished_at": None if active else now,
        "handled_by_url": new.handled_by_url,
        "artifacts": dict(new.artifacts),
        "data_summary": new.data_summary,
        "default_analysis_id": new.default_analysis_id,
        "trigger": new.trigger,
    }


def _store_request_parameters(new: NewAnalysis) -> None:
    """The service must receive file contents the row does not keep (contract: the
    dispatcher sends ``artifacts["request_parameters"]`` instead of the column). Stored with
    the row, in the creating transaction."""
    if new.parameters == new.display_parameters:
        return
    data = json.dumps(new.parameters).encode()
    file = NewArtifact(REQUEST_PARAMETERS_FILE, data, "application/json")
    new.files.append(file)
    new.artifacts["request_parameters"] = file.ref(new.unique_id).to_dict()


@dataclass
class Admission:
    """What deciding a batch of starts reads with its locks: for every (author, object) pair,
    whether the author may read the object; and the access counters (see
    :mod:`shared.domain.access_versions`). The cap is the insert's to check (see
    :func:`_creation_writes`)."""

    readable: set[tuple[int, str]] = field(default_factory=set)
    counters: dict[str, int] = field(default_factory=dict)

    def still_current(self, new: NewAnalysis) -> bool:
        """Whether the item's cached principal and service (if any) are still current."""
        return new.read_at is None or new.read_at.still_current(self.counters)


async def _locked_admission(
    session: AsyncSession, batch: Sequence[NewAnalysis]
) -> tuple[list[int], Admission]:
    """Lock every (object, author) pair of the batch and reserve an id per item, and read
    what admitting the items needs: one query per distinct author of the batch (typically
    one), the first of them with the locks and the ids. Each of the objects that exists,
    whether the author may read it, and the counters.

    The author's analyses are not counted toward the cap here: on PostgreSQL this read's
    snapshot may predate the locks (one statement, one snapshot), so the insert, which runs
    after them, counts (see :func:`_creation_writes`)."""
    admission = Admission()
    by_author: dict[int, tuple[Principal, set[str]]] = {}
    for new in batch:
        by_author.setdefault(new.author.user_id, (new.author, set()))[1].add(new.obj_id)
    keys = sorted({f"{new.obj_id}:{new.author.user_id}" for new in batch})
    ids: list[int] = []
    locked = False
    for author_id, (author, obj_ids) in by_author.items():
        query = _admission_query(name_of(session), author.is_admin)
        parameters = {
            "admitted_author": author_id,
            "admitted_objs": sorted(obj_ids),
            "author_groups": sorted(author.group_ids),
        }
        if locked:
            rows = list(await session.execute(query, parameters))
        else:
            table = table_of(ObjAnalysis)
            ids, rows = await lock_reserve_and_read(
                session, keys, table, len(batch), query, parameters
            )
            locked = True
        for row in rows:
            pair = (author_id, row.id)
            if row.readable:
                admission.readable.add(pair)
            admission.counters = {
                PRINCIPALS_COUNTER: row.principals,
                SERVICES_COUNTER: row.services,
            }
    if not admission.counters and any(new.read_at is not None for new in batch):
        admission.counters = await current_counters(session)  # none of the objects exists
    return ids, admission


@functools.cache
def _admission_query(dialect: str, admin: bool) -> Any:
    """Built once per dialect (and for admins, who read everything): bound with the author,
    the objects and the author's groups."""
    readable = visible_to_bound(obj_groups, Obj.id, "author_groups", dialect, admin=admin)
    return select(
        Obj.id,
        readable.label("readable"),
        version_of(PRINCIPALS_COUNTER).label("principals"),
        version_of(SERVICES_COUNTER).label("services"),
    ).where(in_bound(Obj.id, "admitted_objs", dialect))


@dataclass(frozen=True)
class Admitted:
    """A start admitted by the batch's read, the cap still to check: ``rank``, its place
    among the batch's admitted starts of the same (author, object) pair, 1 for the first."""

    new: NewAnalysis
    rank: int


def _admitted(batch: Sequence[NewAnalysis], admission: Admission) -> list[Admitted | Exception]:
    """Each item with its rank, or why it is refused (the cap aside)."""
    admitted: list[Admitted | Exception] = []
    ranks: dict[tuple[int, str], int] = defaultdict(int)
    for new in batch:
        pair = (new.author.user_id, new.obj_id)
        if not admission.still_current(new):
            admitted.append(StaleAccess())
        elif pair not in admission.readable:
            admitted.append(ObjNotVisible(new.obj_id))
        else:
            ranks[pair] += 1
            admitted.append(Admitted(new, ranks[pair]))
    return admitted


@dataclass(frozen=True)
class Inserted:
    """What a creating insert stored: the ids of the rows, and their outbox messages (to
    hand to the relay after the commit)."""

    ids: set[int]
    messages: list[dict[str, Any]]


async def _insert_analyses(
    tokens: CallbackTokens,
    session: AsyncSession,
    admitted: list[Admitted],
    ids: list[int],
    cap: int,
) -> Inserted:
    """The rows, under the ids reserved for them, of those that the cap still admits now that
    the pairs are locked, with their group links and outbox messages (one statement on
    PostgreSQL); their artifacts and, for uploaded results, their annotations."""
    writes = _creation_writes(name_of(session))
    now = utcnow()
    created = list(zip(ids, admitted, strict=True))
    links = [
        {"obj_analysis_id": analysis_id, "group_id": group_id}
        for analysis_id, item in created
        for group_id in item.new.group_ids
    ]
    messages = {
        analysis_id: outbox_values(_message_for(analysis_id, item.new))
        for analysis_id, item in created
    }
    rows = [{**_new_row(tokens, item.new, i), "cap_rank": item.rank} for i, item in created]
    parameters = {
        **writes.analyses.bound(rows),
        **writes.links.bound(links),
        **writes.messages.bound([{**m, "analysis_id": i} for i, m in messages.items()]),
        NOW.key: now,
        CREATION_CAP.key: cap,
    }
    inserted = {row.id for row in await write_together_in(session, writes.write, parameters)}
    stored = [(i, item.new) for i, item in created if i in inserted]
    # Starts: file parameters only; uploads: their results' files.
    await write_artifacts_of(session, {analysis_id: new.files for analysis_id, new in stored})
    for analysis_id, new in stored:
        if new.status == AnalysisStatus.COMPLETED and new.annotations:
            target = AnnotatedAnalysis(
                analysis_id, new.obj_id, new.author.user_id, new.service.name
            )
            await upsert_annotations(session, target, new.annotations)
    return Inserted(inserted, [m for i, m in messages.items() if i in inserted])


CREATION_CAP = bindparam("creation_cap", type_=Integer)


@dataclass(frozen=True)
class CreationWrites:
    analyses: RowSet  # the new rows (``_new_row``) with their ``cap_rank``, created at ``now``
    links: RowSet  # the new analyses' group links
    messages: RowSet  # their outbox messages with their ``analysis_id``, created at ``now``
    write: Together


@functools.cache
def _creation_writes(dialect: str) -> CreationWrites:
    """Built once per dialect: the row sets of the new analyses (ids included), their group
    links and outbox messages, and the INSERTs that store them together. A row is inserted
    only while its author's capped analyses on its object, counted by this statement (after
    the locks, so none can be added meanwhile), plus its rank leave room under the cap;
    links and messages follow the rows inserted."""
    analyses = table_of(ObjAnalysis)
    columns = ("id", *NEW_ROW)
    analysis_rows = RowSet(
        "new_analyses",
        {**{c: analyses.c[c].type for c in columns}, "cap_rank": Integer()},
        dialect,
    )
    new = analysis_rows.table.c
    # Inside a statement of several, an INSERT gets no client-side defaults: given here.
    stamped = (*columns, "created_at", "modified")
    defaults = {
        c.name: c.default.arg
        for c in analyses.c
        if c.name not in stamped and isinstance(c.default, ScalarElementColumnDefault)
    }
    capped = (
        select(func.count())
        .select_from(analyses)
        .where(_counted_toward_cap(new.obj_id, new.author_id))
        .correlate_except(analyses)
        .scalar_subquery()
    )
    selected = select(
        *(new[c] for c in columns),
        NOW,
        NOW,
        *(literal(value, analyses.c[name].type) for name, value in defaults.items()),
    ).where(capped + new.cap_rank <= CREATION_CAP)
    rows = insert(analyses).from_select([*stamped, *defaults], selected).returning(analyses.c.id)
    link_table = obj_analysis_groups
    link_rows = RowSet("new_group_links", {c.name: c.type for c in link_table.c}, dialect)
    outbox = table_of(OutboxMessage)
    message_columns = ("message_id", "routing_key", "payload")
    message_rows = RowSet(
        "new_messages",
        {**{c: outbox.c[c].type for c in message_columns}, "analysis_id": Integer()},
        dialect,
    )

    def links(inserted: Any) -> Any:
        chosen = select(link_rows.table).where(link_rows.table.c.obj_analysis_id.in_(inserted))
        return insert(link_table).from_select([c.name for c in link_table.c], chosen)

    def messages(inserted: Any) -> Any:
        of_rows = message_rows.table.c
        chosen = select(*(of_rows[c] for c in message_columns), NOW).where(
            of_rows.analysis_id.in_(inserted)
        )
        return insert(outbox).from_select([*message_columns, "created_at"], chosen)

    write = together(dialect, rows, then=(links, messages))
    return CreationWrites(analysis_rows, link_rows, message_rows, write)


@dataclass(frozen=True)
class AnalysisCreator:
    """Creates analyses: each row with its group links, artifacts and ``analysis.requested``
    event in one transaction, then hands the events to the outbox relay. ``cap`` is how many capped
    analyses one author may have on one object."""

    sessions: Sessions
    callback_tokens: CallbackTokens
    outbox: OutboxRelay
    cap: int

    async def create(self, new: NewAnalysis, *, guard: StartGuard | None = None) -> int:
        """Insert the row and its outbox message in one transaction; returns the analysis id.

        Raises :class:`ObjNotVisible` or :class:`CapReached` (or what ``guard`` raises) with
        nothing written. The artifacts (``new.files``, and the request parameters) are stored
        in the same transaction.
        """
        _store_request_parameters(new)
        async with self.sessions.begin() as session:
            if guard is not None:
                await guard.check(session)
            (analysis_id,), admission = await _locked_admission(session, [new])
            (admitted,) = _admitted([new], admission)
            if isinstance(admitted, Exception):
                raise admitted
            tokens = self.callback_tokens
            inserted = await _insert_analyses(tokens, session, [admitted], [analysis_id], self.cap)
            if analysis_id not in inserted.ids:
                raise CapReached(new.obj_id)
            if guard is not None:
                await guard.record(session, analysis_id)
        self.outbox.hand_off(inserted.messages)
        return analysis_id

    async def create_many(self, batch: list[NewAnalysis]) -> list[int | Exception]:
        """Many starts in one transaction, as :meth:`create` does one: each item gets its
        analysis id, or :class:`ObjNotVisible` / :class:`CapReached` with nothing written for
        it, or :class:`StaleAccess` when its cached author or service changed since read.
        The (object, author) pairs are locked in one statement, in a fixed order, so
        concurrent batches can neither overshoot a cap nor deadlock; the same statement
        reserves the new rows' ids and reads what admitting them needs, so the transaction is
        four round trips on PostgreSQL: BEGIN, the locks with that read, the insert of the
        rows with their links and events, COMMIT."""
        for new in batch:
            _store_request_parameters(new)
        outcomes: list[int | Exception] = []
        async with self.sessions.begin() as session:
            ids, admission = await _locked_admission(session, batch)
            admitted = _admitted(batch, admission)
            chosen = [item for item in admitted if isinstance(item, Admitted)]
            inserted = Inserted(set(), [])
            if chosen:
                tokens = self.callback_tokens
                inserted = await _insert_analyses(
                    tokens, session, chosen, ids[: len(chosen)], self.cap
                )
            given = iter(ids)  # in the order of the admitted items
            for item in admitted:
                if isinstance(item, Exception):
                    outcomes.append(item)
                    continue
                analysis_id = next(given)
                counted_in = analysis_id in inserted.ids
                outcomes.append(analysis_id if counted_in else CapReached(item.new.obj_id))
        self.outbox.hand_off(inserted.messages)
        return outcomes

    def batcher(self) -> GroupCommit[NewAnalysis, int]:
        """Starts from concurrent requests, created together (see :meth:`create_many`)."""
        return GroupCommit(
            self.create_many,
            max_batches_in_flight=1,
            stretch_to_seconds=PIPELINE_WINDOW_SECONDS,
        )


# --- cancelling -------------------------------------------------------------------------


async def cancel_analyses(
    session: AsyncSession, analysis_ids: Sequence[int], username: str
) -> list[int]:
    """Active → cancelled in one conditional UPDATE, each with its ``analysis.cancelled``
    event (handed to the outbox relay when the caller's session commits); returns the ids
    cancelled (not those already final)."""
    parameters = {
        "cancelled_ids": sorted(set(analysis_ids)),
        "cancelled_message": f"Cancelled by {username}",
        NOW.key: utcnow(),
    }
    rows = list(await session.execute(_cancelling(name_of(session)), parameters))
    if rows:
        await enqueue_ended(session, rows, AnalysisStatus.CANCELLED)
    return [row.id for row in rows]


@functools.cache
def _cancelling(dialect: str) -> Any:
    return (
        update(ObjAnalysis)
        .where(
            in_bound(ObjAnalysis.id, "cancelled_ids", dialect),
            row_check(ObjAnalysis.status.in_(ACTIVE_STATUSES)),
        )
        .values(
            status=AnalysisStatus.CANCELLED,
            status_message=bindparam("cancelled_message", type_=String),
            last_activity=NOW,
            finished_at=NOW,
            modified=NOW,
        )
        .returning(ObjAnalysis.id, ObjAnalysis.obj_id, ObjAnalysis.analysis_service_id)
    )


# --- results: the webhook's completion -----------------------------------------------------
#
# Exactly one valid POST per token wins: ``status IN (queued, dispatching, pending) AND
# invalid_after >= now`` is checked by the UPDATE itself, never by a read before it. The
# winner's write also stores the artifacts, upserts the annotations and outboxes the event.


@dataclass(frozen=True)
class Outcome:
    """What the service reported, ready to be written."""

    status: AnalysisStatus
    message: str
    artifacts: dict[str, Any]
    data_summary: dict[str, Any]
    annotations: list[AnnotationIn]
    files: Sequence[NewArtifact] = ()  # the bytes ``artifacts`` describes


@dataclass(frozen=True)
class Callee:
    """The analysis a token names, as a plain row (the columns the webhook uses)."""

    id: int
    unique_id: str
    obj_id: str
    author_id: int
    analysis_service_id: int
    status: str
    status_message: str | None
    invalid_after: datetime
    last_activity: datetime
    service_name: str
    is_summary: bool
    # What redacting the callback's message needs, read with the row (no second query).
    authinfo_ciphertext: str | None = None
    signing_secret_ciphertext: str | None = None
    author_secrets_ciphertext: str | None = None


def _seconds_since(start: datetime, now: datetime) -> float:
    return max((now - start).total_seconds(), 0.0)


def _ended_message(analysis: Callee, outcome: Outcome) -> Message:
    return analysis_ended(
        outcome.status,
        analysis.id,
        analysis.obj_id,
        analysis.analysis_service_id,
        analysis.is_summary,
    )


@dataclass(frozen=True)
class Completion:
    """A service's callback for an analysis: what it reported."""

    analysis: Callee
    outcome: Outcome

    @property
    def annotated(self) -> bool:
        return self.outcome.status == AnalysisStatus.COMPLETED and bool(self.outcome.annotations)


def _won(now: datetime | ColumnElement[datetime]) -> ColumnElement[bool]:
    return and_(ObjAnalysis.status.in_(ACTIVE_STATUSES), ObjAnalysis.invalid_after >= now)


def _completion_columns() -> dict[str, Any]:
    rows, outbox = table_of(ObjAnalysis).c, table_of(OutboxMessage).c
    names = ("id", "status", "status_message", "duration", "artifacts", "data_summary")
    return {
        **{name: rows[name].type for name in names},
        **{name: outbox[name].type for name in ("message_id", "routing_key", "payload")},
    }


_COMPLETION_COLUMNS = _completion_columns()


def _completion_row(completion: Completion, now: datetime) -> dict[str, Any]:
    analysis, outcome = completion.analysis, completion.outcome
    return {
        "id": analysis.id,
        "status": outcome.status.value,
        "status_message": outcome.message,
        "duration": _seconds_since(analysis.last_activity, now),
        "artifacts": outcome.artifacts,
        "data_summary": outcome.data_summary,
        **outbox_values(_ended_message(analysis, outcome)),
    }


async def complete_many(
    engine: AsyncEngine,
    sessions: Sessions,
    completions: Sequence[Completion],
    *,
    outbox: OutboxRelay,
) -> list[bool]:
    """The webhook's transition for many callbacks at once: active → completed or failure,
    with the results' artifacts, the annotations and the ended event (handed to ``outbox``
    once committed). For each in turn, whether it won (a loser wrote nothing; of two
    callbacks for one analysis in the same batch, the second loses).

    Callbacks without annotations: one set-based write for them all (one round trip on
    PostgreSQL). With annotations: a transaction each, since they are matched against the
    author's own."""
    now = utcnow()
    firsts = {c.analysis.id: c for c in reversed(completions)}
    plain = [firsts[i] for i in sorted(firsts) if not firsts[i].annotated]  # locked by id
    won = await _complete_plain(engine, outbox, plain, now) if plain else set()
    for completion in firsts.values():
        if completion.annotated and await _complete_annotated(engine, sessions, completion, now):
            won.add(completion.analysis.id)
    return [c.analysis.id in won and firsts[c.analysis.id] is c for c in completions]


@functools.cache
def _winning_update(dialect: str) -> tuple[RowSet, Any]:
    """The callbacks as a row set, and the conditional UPDATE that lets each of them win
    (its analysis still active and not expired) with its status, message and results; built
    once per dialect, bound with the callbacks' rows and ``now``."""
    completed = RowSet("completed", _COMPLETION_COLUMNS, dialect)
    rows = completed.table
    won = (
        update(ObjAnalysis)
        .where(ObjAnalysis.id == rows.c.id, row_check(_won(NOW)))
        .values(
            status=rows.c.status,
            status_message=rows.c.status_message,
            last_activity=NOW,
            duration=rows.c.duration,
            finished_at=NOW,
            artifacts=merged_json(ObjAnalysis.artifacts, rows.c.artifacts, dialect),
            data_summary=merged_json(ObjAnalysis.data_summary, rows.c.data_summary, dialect),
            modified=NOW,
        )
        .returning(ObjAnalysis.id)
    )
    return completed, won


def _winning_parameters(
    completed: RowSet, rows: Sequence[dict[str, Any]], now: datetime
) -> dict[str, Any]:
    return {**completed.bound(rows), NOW.key: now}


@functools.cache
def _completing(dialect: str) -> tuple[RowSet, ArtifactWrites, Together]:
    """The callbacks' write (without annotations), built once per dialect: the winning
    update, the ended events and the results' files of those that won."""
    completed, won = _winning_update(dialect)
    rows = completed.table
    files = artifact_writes(dialect)

    def announced(won_ids: Any) -> Any:
        events = select(rows.c.message_id, rows.c.routing_key, rows.c.payload)
        return insert(OutboxMessage).from_select(
            ["message_id", "routing_key", "payload", "created_at"],
            events.add_columns(NOW).where(rows.c.id.in_(won_ids)),
        )

    return completed, files, together(dialect, won, then=[announced, *files.then])


async def _complete_plain(
    engine: AsyncEngine, outbox: OutboxRelay, completions: Sequence[Completion], now: datetime
) -> set[int]:
    completed, files, write = _completing(name_of(engine))
    rows = [_completion_row(c, now) for c in completions]
    parameters = {
        **_winning_parameters(completed, rows, now),
        **files.bound({c.analysis.id: c.outcome.files for c in completions}),
    }
    won = {row[0] for row in await write_together(engine, write, parameters)}
    # Reports of what happened: nobody waits on them, so they may go out with others.
    outbox.hand_off((row for row in rows if row["id"] in won), urgent=False)
    return won


async def _complete_annotated(
    engine: AsyncEngine, sessions: Sessions, completion: Completion, now: datetime
) -> bool:
    analysis, outcome = completion.analysis, completion.outcome
    completed, won = _winning_update(name_of(engine))
    async with sessions.begin() as session:
        parameters = _winning_parameters(completed, [_completion_row(completion, now)], now)
        if (await session.execute(won, parameters)).first() is None:
            return False
        await write_artifacts(session, analysis.id, outcome.files)
        await upsert_annotations(session, analysis, outcome.annotations)
        enqueue(session, _ended_message(analysis, outcome))
    return True


class Annotated(Protocol):
    """The analysis whose results carry annotations: whose, on what, from which service."""

    @property
    def id(self) -> int: ...
    @property
    def obj_id(self) -> str: ...
    @property
    def author_id(self) -> int: ...
    @property
    def service_name(self) -> str: ...


@dataclass(frozen=True)
class AnnotatedAnalysis:
    id: int
    obj_id: str
    author_id: int
    service_name: str


async def upsert_annotations(
    session: AsyncSession, analysis: Annotated, items: list[AnnotationIn]
) -> None:
    """Update the author's own annotation with this origin when it is shared with exactly the
    analysis' groups; otherwise add a new one. Other annotations are never touched."""
    if not items:
        return
    groups = list(
        await session.scalars(
            select(Group)
            .join(obj_analysis_groups, obj_analysis_groups.c.group_id == Group.id)
            .where(obj_analysis_groups.c.obj_analysis_id == analysis.id)
        )
    )
    group_ids = {g.id for g in groups}
    for item in items:
        origin = item.origin or analysis.service_name
        mine = await session.scalars(
            select(Annotation)
            .where(
                Annotation.obj_id == analysis.obj_id,
                Annotation.origin == origin,
                Annotation.owner_id == analysis.author_id,
            )
            .order_by(Annotation.id.desc())
        )
        same_groups = [a for a in mine if {g.id for g in a.groups} == group_ids]
        if same_groups:
            same_groups[0].data = dict(item.data)
            same_groups[0].modified = utcnow()
        else:
            session.add(
                Annotation(
                    obj_id=analysis.obj_id,
                    owner_id=analysis.author_id,
                    origin=origin,
                    data=dict(item.data),
                    groups=list(groups),
                )
            )
    await session.flush()


# --- dispatching: claim, send, accept / retry / fail, reap ----------------------------------
#
# A claim increments ``dispatch_attempts_count`` and returns it: that number is the attempt's
# fencing token. Every later update of the attempt requires ``status = 'dispatching'`` and the
# same count, so an attempt that was reaped (and perhaps claimed again by another dispatcher),
# cancelled, or overtaken by a fast webhook changes nothing.

MESSAGE_LIMIT = 1024
BATCH_LIMIT = 500
SENDING = "sending"  # the HTTP call is under way (or its dispatcher died during it)
INTERRUPTED = "interrupted"  # its dispatcher died during it; the analysis moved on without it
UNFINISHED_OUTCOMES = (SENDING, INTERRUPTED)
ORPHAN_ERROR = "the dispatcher stopped during this attempt; the analysis moved on without it"


def naive_utc_text(moment: datetime) -> str:
    """SkyPortal's datetime text: naive UTC ``YYYY-MM-DD HH:MM:SS.ffffff``."""
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def truncate(text: str, limit: int = MESSAGE_LIMIT) -> str:
    return text if len(text) <= limit else text[:limit]


@dataclass(frozen=True)
class AttemptRecord:
    """What one attempt did, as stored in ``dispatch_attempts``."""

    attempt_number: int
    started_at: datetime
    outcome: str  # sending | accepted | retry | failed | interrupted
    latency_ms: float | None = None
    http_status: int | None = None
    error: str | None = None


def unfinished() -> ColumnElement[bool]:
    """The analyses that have not reached a final status. Said with ``finished_at`` (set once,
    by that transition) rather than the status, so that a read of them uses the partial index
    ``ix_obj_analyses_running``: no index holds the status, which changes while they run."""
    return ObjAnalysis.finished_at.is_(None)


def running() -> ColumnElement[bool]:
    """The analyses in an active status (queued, dispatching, pending), found through
    :func:`unfinished`'s partial index."""
    return and_(unfinished(), ObjAnalysis.status.in_(ACTIVE_STATUSES))


def _due(now: datetime | ColumnElement[datetime]) -> ColumnElement[bool]:
    return and_(
        ObjAnalysis.status == AnalysisStatus.QUEUED,
        or_(ObjAnalysis.next_attempt_at.is_(None), ObjAnalysis.next_attempt_at <= now),
        ObjAnalysis.invalid_after > now,
    )


def _in_attempt(attempt_number: Any) -> ColumnElement[bool]:
    """The row is being dispatched, and by the attempt numbered ``attempt_number`` (a column
    or a value): that attempt still owns it."""
    return and_(
        ObjAnalysis.status == AnalysisStatus.DISPATCHING,
        ObjAnalysis.dispatch_attempts_count == attempt_number,
    )


@functools.cache
def _claiming(dialect: str) -> Any:
    """``queued → dispatching`` for the due rows among ``claimed_ids``, built once."""
    return (
        update(ObjAnalysis)
        .where(in_bound(ObjAnalysis.id, "claimed_ids", dialect), row_check(_due(NOW)))
        .values(
            status=AnalysisStatus.DISPATCHING,
            dispatch_attempts_count=ObjAnalysis.dispatch_attempts_count + 1,
            next_attempt_at=None,
            last_activity=NOW,
        )
        .returning(ObjAnalysis.id, ObjAnalysis.dispatch_attempts_count)
        .execution_options(synchronize_session=False)
    )


@functools.cache
def _claiming_and_reading(dialect: str, read: ReadOfWritten) -> WrittenAndRead:
    return written_and_read(dialect, _claiming(dialect), read)


async def claim_many(
    session: AsyncSession, analysis_ids: Sequence[int], now: datetime, read: ReadOfWritten
) -> list[Any]:
    """``queued → dispatching`` for those of the rows that are due, and ``read`` of the rows
    claimed: one statement on PostgreSQL. ``read`` (a module-level function: the pair is
    built once per dialect and reader) gets the claim's returned columns, ``id`` and
    ``dispatch_attempts_count`` (the claimed attempt's number), and the condition that picks
    the claimed rows out of ``obj_analyses``."""
    parameters = {"claimed_ids": sorted(set(analysis_ids)), NOW.key: now}
    return await write_then_read(session, _claiming_and_reading(name_of(session), read), parameters)


@dataclass(frozen=True)
class Sending:
    """A claimed attempt about to be sent, and on its first attempt the inputs' provenance."""

    analysis_id: int
    attempt_number: int
    provenance: dict[str, Any] | None = None


async def mark_sending_many(
    session: AsyncSession,
    attempts: Sequence[Sending],
    now: datetime,
    started_at: datetime,
    inputs: Mapping[int, Sequence[NewArtifact]] | None = None,
) -> None:
    """Just before the HTTP calls, for attempts claimed moments before: refreshes
    ``last_activity`` (the reaper's clock) and on a first attempt records the inputs'
    provenance (artifact manifest, hash), for each row its attempt still owns; stores the new
    ``inputs`` files; and writes the attempt row (outcome ``sending``: the request goes out
    whatever happened to the row since its claim) unless that attempt is already recorded, so
    an attempt cut short by a crash is listed even when the service's callback completes the
    analysis. One statement per table, all of them one round trip on PostgreSQL."""
    if not attempts:
        return
    writes = _sending_writes(name_of(session))
    sending = [
        {
            "analysis_id": a.analysis_id,
            "attempt_number": a.attempt_number,
            "manifest": a.provenance["artifacts"] if a.provenance else None,
            "hash": a.provenance["input_hash"] if a.provenance else None,
        }
        for a in attempts
    ]
    parameters = {
        **writes.sending.bound(sending),
        **writes.files.bound(inputs or {}),
        NOW.key: now,
        ATTEMPTS_STARTED_AT.key: started_at,
    }
    await write_all(session, writes.write, parameters)


ATTEMPTS_STARTED_AT = bindparam("attempts_started_at", type_=UTCDateTime())


@dataclass(frozen=True)
class SendingWrites:
    """The row sets of :func:`mark_sending_many` and its writes, built once per dialect."""

    sending: RowSet  # each attempt: its number, and for a first attempt its provenance
    files: ArtifactWrites  # the first attempts' new inputs files
    write: AllAtOnce


@functools.cache
def _sending_writes(dialect: str) -> SendingWrites:
    """The rows touched at ``now`` (the provenance recorded where there is one); the files
    stored; the attempts inserted, started at ``attempts_started_at``, outcome ``sending``."""
    rows = table_of(ObjAnalysis)
    attempts = table_of(DispatchAttempt)
    sending = RowSet(
        "sending",
        {
            "analysis_id": attempts.c.analysis_id.type,
            "attempt_number": attempts.c.attempt_number.type,
            "manifest": OptionalJSONDoc,  # None (a retry): SQL NULL, the manifest is kept
            "hash": rows.c.input_hash.type,
        },
        dialect,
    )
    sent = sending.table
    touched = (
        rows.update()
        .where(
            rows.c.id == sent.c.analysis_id,
            row_check(_in_attempt(sent.c.attempt_number)),
        )
        .values(
            last_activity=NOW,
            modified=NOW,  # as a CTE the column's onupdate default does not apply
            artifacts=func.coalesce(sent.c.manifest, rows.c.artifacts),
            input_hash=func.coalesce(sent.c.hash, rows.c.input_hash),
        )
    )
    files, insert_blobs, insert_links = artifact_inserts(dialect)
    # An attempt already recorded (the reaper gave it up while its dispatcher stalled between
    # the claim and here) keeps its record, and the rest of the batch is written all the same.
    inserted = upsert_selected(
        dialect,
        attempts,
        ["analysis_id", "attempt_number", "started_at", "outcome"],
        select(sent.c.analysis_id, sent.c.attempt_number, ATTEMPTS_STARTED_AT, literal(SENDING)),
        ["analysis_id", "attempt_number"],
        update=(),
    )
    # Blobs before links: on SQLite these run in this order (a link names its blob).
    write = all_at_once(dialect, [touched, insert_blobs, insert_links, inserted])
    return SendingWrites(sending, files, write)


@dataclass(frozen=True)
class Subject:
    """What the events about an analysis name besides its id."""

    analysis_id: int
    obj_id: str
    analysis_service_id: int
    is_summary: bool

    def event_for(self, status: AnalysisStatus) -> Message | None:
        """The event a move to ``status`` emits (None for a move back to ``queued``)."""
        if status == AnalysisStatus.PENDING:
            return AnalysisAccepted(analysis_id=self.analysis_id)
        if status in ACTIVE_STATUSES:
            return None
        return analysis_ended(
            status, self.analysis_id, self.obj_id, self.analysis_service_id, self.is_summary
        )


@dataclass(frozen=True)
class FinishedAttempt:
    """An attempt's end: its record, and where it moves the analysis (only if the attempt
    still owns the row)."""

    subject: Subject
    record: AttemptRecord
    new_status: AnalysisStatus
    status_message: str | None
    next_attempt_at: datetime | None = None


def _finished_columns() -> dict[str, Any]:
    rows, attempts, outbox = (
        table_of(ObjAnalysis).c,
        table_of(DispatchAttempt).c,
        table_of(OutboxMessage).c,
    )
    return {
        "analysis_id": rows.id.type,
        "attempt_number": attempts.attempt_number.type,
        "status": rows.status.type,
        "status_message": rows.status_message.type,
        "next_attempt_at": rows.next_attempt_at.type,
        "finished_at": rows.finished_at.type,
        "started_at": attempts.started_at.type,
        "latency_ms": attempts.latency_ms.type,
        "http_status": attempts.http_status.type,
        "outcome": attempts.outcome.type,
        "error": attempts.error.type,
        "message_id": outbox.message_id.type,
        "routing_key": outbox.routing_key.type,
        "payload": outbox.payload.type,
    }


_FINISHED_COLUMNS = _finished_columns()
_RECORD_COLUMNS = ("started_at", "latency_ms", "http_status", "outcome", "error")


def _finished_row(finished: FinishedAttempt, now: datetime) -> dict[str, Any]:
    record = finished.record
    event = finished.subject.event_for(finished.new_status)
    message = finished.status_message
    return {
        "analysis_id": finished.subject.analysis_id,
        "attempt_number": record.attempt_number,
        "status": finished.new_status.value,
        "status_message": truncate(message) if message is not None else None,
        "next_attempt_at": finished.next_attempt_at,
        "finished_at": None if finished.new_status in ACTIVE_STATUSES else now,
        "started_at": record.started_at,
        "latency_ms": record.latency_ms,
        "http_status": record.http_status,
        "outcome": record.outcome,
        "error": truncate(record.error) if record.error else None,
        **(
            {"message_id": None, "routing_key": None, "payload": None}
            if event is None
            else outbox_values(event)
        ),
    }


IDLE_BEFORE = bindparam("idle_before", type_=UTCDateTime())


@functools.cache
def _finishing(dialect: str, *, reaping: bool) -> tuple[RowSet, Together]:
    """The attempts' ends as a row set, and their write (see :func:`finish_attempts`), built
    once per dialect and kind; bound with the rows, ``now`` and ``idle_before``."""
    finished = RowSet("finished", _FINISHED_COLUMNS, dialect)
    rows = finished.table
    moved = (
        update(ObjAnalysis)
        .where(
            ObjAnalysis.id == rows.c.analysis_id,
            row_check(
                and_(
                    _in_attempt(rows.c.attempt_number),
                    ObjAnalysis.last_activity < IDLE_BEFORE if reaping else true(),
                )
            ),
        )
        .values(
            status=rows.c.status,
            status_message=rows.c.status_message,
            last_activity=NOW,
            next_attempt_at=rows.c.next_attempt_at,
            finished_at=rows.c.finished_at,
            modified=NOW,  # set here: an UPDATE inside a CTE gets no Python-side onupdate
        )
        .returning(ObjAnalysis.id)
    )
    records = select(rows.c.analysis_id, rows.c.attempt_number).add_columns(
        *(rows.c[c] for c in _RECORD_COLUMNS)
    )

    def recorded(moved_ids: Any = None) -> Any:
        return upsert_selected(
            dialect,
            table_of(DispatchAttempt),
            ["analysis_id", "attempt_number", *_RECORD_COLUMNS],
            records if moved_ids is None else records.where(rows.c.analysis_id.in_(moved_ids)),
            ["analysis_id", "attempt_number"],
            where=DispatchAttempt.outcome.in_(UNFINISHED_OUTCOMES),
        )

    def announced(moved_ids: Any) -> Any:
        events = select(rows.c.message_id, rows.c.routing_key, rows.c.payload).add_columns(NOW)
        return insert(OutboxMessage).from_select(
            ["message_id", "routing_key", "payload", "created_at"],
            events.where(rows.c.analysis_id.in_(moved_ids), rows.c.routing_key.is_not(None)),
        )

    if reaping:
        return finished, together(dialect, moved, then=[recorded, announced])
    return finished, together(dialect, moved, always=[recorded()], then=[announced])


async def finish_attempts(
    engine: AsyncEngine,
    attempts: Sequence[FinishedAttempt],
    now: datetime,
    *,
    outbox: OutboxRelay,
    idle_before: datetime | None = None,
) -> list[bool]:
    """Record each attempt (replacing its ``sending`` row; a final outcome the reaper already
    wrote wins) and move each row on if the attempt still owns it, with the move's event
    (handed to ``outbox`` once committed): one set-based atomic write for them all. For each
    attempt in turn, whether its row moved.

    ``idle_before`` (the reaper giving up attempts whose dispatcher died): only rows with no
    activity since then move, and only the attempts of rows that moved are recorded (an
    attempt whose row another writer moved on keeps its ``sending`` row, for its own
    dispatcher or the orphan marking to end)."""
    firsts = {(a.subject.analysis_id, a.record.attempt_number): a for a in reversed(attempts)}
    finished, write = _finishing(name_of(engine), reaping=idle_before is not None)
    rows = [_finished_row(firsts[key], now) for key in sorted(firsts)]  # rows locked by id
    parameters = {**finished.bound(rows), NOW.key: now, IDLE_BEFORE.key: idle_before}
    moved_rows = await write_together(engine, write, parameters)
    moved_ids = {row[0] for row in moved_rows}
    events = [r for r in rows if r["analysis_id"] in moved_ids and r["routing_key"] is not None]
    outbox.hand_off(events, urgent=False)  # reports of what happened: nobody waits on them
    return [
        a.subject.analysis_id in moved_ids
        and firsts[(a.subject.analysis_id, a.record.attempt_number)] is a
        for a in attempts
    ]


async def announce_due(sessions: Sessions, now: datetime, lost_after: timedelta) -> list[int]:
    """Queue an ``analysis.requested`` (via the outbox) for every ``queued`` row that is due.

    Due: its retry time has come, or it never had one and has waited ``lost_after`` (its
    message was probably lost). Clearing ``next_attempt_at`` and touching ``last_activity`` in
    the same statement makes each row announced once, however many dispatchers poll.
    """
    due = and_(
        unfinished(),
        ObjAnalysis.status == AnalysisStatus.QUEUED,
        ObjAnalysis.invalid_after > now,
        or_(
            ObjAnalysis.next_attempt_at <= now,
            and_(
                ObjAnalysis.next_attempt_at.is_(None),
                ObjAnalysis.last_activity < now - lost_after,
            ),
        ),
    )
    async with sessions.begin() as session:
        candidates = skip_locked(
            select(ObjAnalysis.id).where(due).limit(BATCH_LIMIT), name_of(session)
        )
        # Read first: most polls find nothing, and then take no write lock at all.
        found = list(await session.scalars(candidates))
        if not found:
            return []
        statement = (
            update(ObjAnalysis)
            .where(ObjAnalysis.id.in_(found), due)
            .values(next_attempt_at=None, last_activity=now)
            .returning(ObjAnalysis.id)
            .execution_options(synchronize_session=False)
        )
        ids = list((await session.execute(statement)).scalars())
        for analysis_id in ids:
            enqueue(session, AnalysisRequested(analysis_id=analysis_id))
    return ids


@dataclass(frozen=True)
class StuckRow:
    subject: Subject
    attempt_number: int
    last_activity: datetime


async def stuck_rows(sessions: Sessions, cutoff: datetime) -> list[StuckRow]:
    """Rows ``dispatching`` with no activity since ``cutoff`` (at most ``BATCH_LIMIT``)."""
    async with sessions() as session:
        rows = await session.execute(
            select(
                ObjAnalysis.id,
                ObjAnalysis.obj_id,
                ObjAnalysis.analysis_service_id,
                AnalysisService.is_summary,
                ObjAnalysis.dispatch_attempts_count,
                ObjAnalysis.last_activity,
            )
            .join(AnalysisService, AnalysisService.id == ObjAnalysis.analysis_service_id)
            .where(
                unfinished(),
                ObjAnalysis.status == AnalysisStatus.DISPATCHING,
                ObjAnalysis.last_activity < cutoff,
            )
            .order_by(ObjAnalysis.id)
            .limit(BATCH_LIMIT)
        )
        return [
            StuckRow(
                Subject(r.id, r.obj_id, r.analysis_service_id, bool(r.is_summary)),
                r.dispatch_attempts_count,
                r.last_activity,
            )
            for r in rows
        ]


async def mark_orphaned_attempts(sessions: Sessions, cutoff: datetime) -> int:
    """Attempts still ``sending`` since before ``cutoff`` whose analysis is no longer in that
    attempt (completed by the service's callback, cancelled, timed out): their dispatcher died
    during the call. Marked ``interrupted``; a dispatcher that was only slow still writes its
    real outcome over it."""
    in_this_attempt = (
        select(ObjAnalysis.id)
        .where(
            ObjAnalysis.id == DispatchAttempt.analysis_id,
            _in_attempt(DispatchAttempt.attempt_number),
        )
        .exists()
    )
    statement = (
        update(DispatchAttempt)
        .where(
            DispatchAttempt.outcome == SENDING,
            DispatchAttempt.started_at < cutoff,
            ~in_this_attempt,
        )
        .values(outcome=INTERRUPTED, error=ORPHAN_ERROR)
        .returning(DispatchAttempt.id)
        .execution_options(synchronize_session=False)
    )
    async with sessions.begin() as session:
        return len(list((await session.execute(statement)).scalars()))


# --- expiry: past invalid_after, an active analysis times out ------------------------------


def timed_out_message(now: datetime) -> str:
    return f"Analysis timed out before webhook call at {naive_utc_text(now)}"


_ENDED_COLUMNS = (ObjAnalysis.id, ObjAnalysis.obj_id, ObjAnalysis.analysis_service_id)


async def enqueue_ended(session: AsyncSession, rows: Sequence[Any], status: AnalysisStatus) -> None:
    """Outbox the ended event of each ``(id, obj_id, analysis_service_id)`` row."""
    service_ids = {row.analysis_service_id for row in rows}
    summary_ids = set(
        await session.scalars(
            select(AnalysisService.id).where(
                AnalysisService.id.in_(service_ids), AnalysisService.is_summary.is_(True)
            )
        )
    )
    for row in rows:
        summary = row.analysis_service_id in summary_ids
        enqueue(
            session, analysis_ended(status, row.id, row.obj_id, row.analysis_service_id, summary)
        )


async def expire(session: AsyncSession, condition: ColumnElement[bool], now: datetime) -> list[int]:
    """Active rows matching ``condition`` and past ``invalid_after`` → ``timed_out``, each
    with its duration and its ``analysis.timed_out`` event. Returns their ids."""
    rows = list(await session.execute(_expiring(condition, now, name_of(session))))
    if rows:
        await enqueue_ended(session, rows, AnalysisStatus.TIMED_OUT)
    return [row.id for row in rows]


def _expiring(condition: ColumnElement[bool], now: datetime, dialect: str) -> Any:
    return (
        update(ObjAnalysis)
        .where(
            condition,
            running(),
            ObjAnalysis.invalid_after < now,
        )
        .values(
            status=AnalysisStatus.TIMED_OUT,
            status_message=timed_out_message(now),
            last_activity=now,
            finished_at=now,
            next_attempt_at=None,
            duration=seconds_since(ObjAnalysis.last_activity, now, dialect),
            modified=now,
        )
        .returning(*_ENDED_COLUMNS)
        .execution_options(synchronize_session=False)
    )


async def sweep_expired(sessions: Sessions, now: datetime) -> list[int]:
    """Every active row past ``invalid_after`` → ``timed_out``."""
    async with sessions.begin() as session:
        return await expire(session, true(), now)


# --- deleting ----------------------------------------------------------------------------


async def _forget_summaries(
    session: AsyncSession, obj_id: str, analysis_ids: Iterable[int]
) -> None:
    """Drop the analyses' summary-history entries; the object row is locked meanwhile so a
    summary written concurrently is not lost."""
    obj = await lock_obj(session, obj_id)
    if obj is None:
        return
    for analysis_id in analysis_ids:
        forget_analysis(obj, analysis_id)


async def delete_analysis(session: AsyncSession, analysis: ObjAnalysis) -> str:
    """Delete the row, its artifacts (and any blob no other analysis shares) and, for summary
    services, its summary-history entries, all in the caller's transaction. Returns the
    analysis' unique_id."""
    if analysis.service.is_summary:
        await _forget_summaries(session, analysis.obj_id, [analysis.id])
    await delete_artifacts(session, [analysis.id])
    await session.execute(delete(ObjAnalysis).where(ObjAnalysis.id == analysis.id))
    return analysis.unique_id


async def delete_analyses_of_service(session: AsyncSession, service_id: int) -> list[str]:
    """Delete every analysis of a service, with its artifacts, in the caller's transaction,
    before the service row itself is deleted (the database cascade would otherwise remove the
    rows first and leave their blobs and summary entries behind). Returns their unique_ids.
    """
    rows = (
        await session.execute(
            select(ObjAnalysis.id, ObjAnalysis.unique_id, ObjAnalysis.obj_id).where(
                ObjAnalysis.analysis_service_id == service_id
            )
        )
    ).all()
    service = await session.get(AnalysisService, service_id)
    if service is not None and service.is_summary:
        by_obj: dict[str, list[int]] = defaultdict(list)
        for row in rows:
            by_obj[row.obj_id].append(row.id)
        for obj_id, analysis_ids in sorted(by_obj.items()):
            await _forget_summaries(session, obj_id, analysis_ids)
    await delete_analyses_where(session, ObjAnalysis.analysis_service_id == service_id)
    return [row.unique_id for row in rows]


async def delete_analyses_where(session: AsyncSession, condition: ColumnElement[bool]) -> None:
    """Delete the analyses matching ``condition`` and their artifacts (blobs no other analysis
    shares go too) in the caller's transaction. Summary-history entries are the caller's."""
    await delete_artifacts(session, select(ObjAnalysis.id).where(condition))
    await session.execute(delete(ObjAnalysis).where(condition))
