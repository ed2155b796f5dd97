"""Live analysis status for the web app: Server-Sent Events fed by the bus.

While at least one stream is open, its gateway process listens to ``analysis.*`` on the bus
(a queue of its own, see ``Bus.listen``). Every open stream is woken by those events, re-reads
the analyses concerned that its user may read, and sends the ones whose status changed. Every
move publishes an event except a claim (``dispatching``) and a send put back for a retry, so a
stream watching analyses still in flight also re-reads them every ``RECHECK_SECONDS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

from aiohttp import web
from sqlalchemy import select

from gateway.analysis_access import readable_conditions
from gateway.auth import principal
from http_edge.app_keys import BUS, ENGINE
from http_edge.web import dumps, query_id
from shared.bus import Bus, Envelope
from shared.bus.base import Listening
from shared.db.models import AnalysisService, ObjAnalysis
from shared.db.session import read_session
from shared.domain.access import Principal
from shared.domain.analysis_lifecycle import running
from shared.domain.enums import ACTIVE_STATUSES

log = logging.getLogger("skyhook.gateway.live")

RECHECK_SECONDS = 2.0
KEEPALIVE_SECONDS = 15.0
_CLOSED = -1  # sentinel on a stream's queue: the server is shutting down


class LiveHub:
    """The bus listener of one gateway process and the streams it wakes. The process listens
    only while a stream is open: with no page to wake, every analysis event would cost it a
    delivery for nothing."""

    def __init__(self) -> None:
        self._streams: set[asyncio.Queue[int]] = set()
        self._listening: Listening | None = None
        self._changing = asyncio.Lock()
        self._stopping: set[asyncio.Task[None]] = set()

    async def _on_event(self, envelope: Envelope) -> None:
        analysis_id = envelope.payload.get("analysis_id")
        if isinstance(analysis_id, int):
            for queue in self._streams:
                queue.put_nowait(analysis_id)

    async def open(self, bus: Bus) -> asyncio.Queue[int]:
        queue: asyncio.Queue[int] = asyncio.Queue()
        self._streams.add(queue)
        async with self._changing:
            if self._listening is None:
                self._listening = await bus.listen(["analysis.*"], self._on_event)
        return queue

    def close(self, queue: asyncio.Queue[int]) -> None:
        """The stream is done; the last one stops the listening (in the background: a stream
        may end because its handler is being cancelled)."""
        self._streams.discard(queue)
        if not self._streams:
            task = asyncio.create_task(self._stop_if_unused())
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)

    async def _stop_if_unused(self) -> None:
        async with self._changing:
            if self._streams or self._listening is None:
                return
            listening, self._listening = self._listening, None
            try:
                await listening.stop()
            except Exception:  # the bus is closing or gone: its queue goes with it
                log.debug("stopping the live listener failed", exc_info=True)

    async def shutdown(self, app: web.Application) -> None:
        for queue in self._streams:
            queue.put_nowait(_CLOSED)
        await asyncio.gather(*self._stopping, return_exceptions=True)


LIVE_HUB = web.AppKey("live_hub", LiveHub)

_COLUMNS = (
    ObjAnalysis.id,
    ObjAnalysis.obj_id,
    ObjAnalysis.status,
    ObjAnalysis.status_message,
    ObjAnalysis.last_activity,
    ObjAnalysis.duration,
    ObjAnalysis.created_at,
    ObjAnalysis.analysis_service_id,
    AnalysisService.display_name.label("analysis_service_name"),
)


class _Watch:
    """What one stream has told its page, and which analyses it still re-reads."""

    def __init__(self, me: Principal, obj_id: str | None, service_id: int | None) -> None:
        self.me = me
        self.obj_id = obj_id
        self.service_id = service_id
        self.sent: dict[int, tuple[Any, ...]] = {}
        self.active: set[int] = set()

    def conditions(self) -> list[Any]:
        found = readable_conditions(self.me)
        if self.obj_id is not None:
            found.append(ObjAnalysis.obj_id == self.obj_id)
        if self.service_id is not None:
            found.append(ObjAnalysis.analysis_service_id == self.service_id)
        return found

    async def read(self, request: web.Request, ids: Iterable[int] | None) -> list[dict[str, Any]]:
        """Rows among ``ids`` and the in-flight ones (all in-flight ones when None) that
        changed since they were last sent."""
        query = select(*_COLUMNS).join(AnalysisService).where(*self.conditions())
        wanted = set(ids or ()) | self.active
        if ids is None:
            query = query.where(running())
        elif not wanted:
            return []
        else:
            query = query.where(ObjAnalysis.id.in_(wanted))
        async with read_session(request.app[ENGINE]) as session:
            rows = (await session.execute(query)).mappings().all()
        changed = []
        for row in rows:
            item = dict(row)
            key = (item["status"], item["status_message"], item["last_activity"])
            if ids is not None and self.sent.get(item["id"]) == key:
                continue
            self.sent[item["id"]] = key
            if item["status"] in ACTIVE_STATUSES:
                self.active.add(item["id"])
            else:
                self.active.discard(item["id"])
            changed.append(item)
        return changed


def _event(name: str, data: Any) -> bytes:
    return f"event: {name}\ndata: {dumps(data)}\n\n".encode()


async def _next_ids(queue: asyncio.Queue[int], wait: float) -> set[int] | None:
    """The analysis ids of the events that arrived (waiting up to ``wait`` for the first);
    an empty set on timeout, None when the server is closing."""
    ids: set[int] = set()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(wait):  # not wait_for: see shared.runtime.background.wait_event
            ids.add(await queue.get())
    while not queue.empty():
        ids.add(queue.get_nowait())
    return None if _CLOSED in ids else ids


async def analysis_events(request: web.Request) -> web.StreamResponse:
    watch = _Watch(
        principal(request),
        request.query.get("objID") or None,
        query_id(request, "analysisServiceID"),
    )
    hub = request.app[LIVE_HUB]
    queue = await hub.open(request.app[BUS])
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    try:
        await response.prepare(request)
        await watch.read(request, None)  # what the page already shows: in-flight rows
        await response.write(b"retry: 2000\n" + _event("ready", {"watching": len(watch.active)}))
        quiet = 0.0
        while True:
            wait = RECHECK_SECONDS if watch.active else KEEPALIVE_SECONDS
            ids = await _next_ids(queue, wait)
            if ids is None:
                break
            changed = await watch.read(request, ids)
            for item in changed:
                await response.write(_event("analysis", item))
            quiet = 0.0 if changed else quiet + wait
            if quiet >= KEEPALIVE_SECONDS:
                await response.write(b": keep-alive\n\n")
                quiet = 0.0
    except ConnectionResetError:
        pass  # the page went away
    finally:
        hub.close(queue)
    return response


def setup_live(app: web.Application) -> None:
    hub = LiveHub()
    app[LIVE_HUB] = hub
    app.on_shutdown.append(hub.shutdown)
