"""The dispatcher: consumes ``analysis.requested`` and sends analyses to their services.

For each message: wait for a free sending slot, claim the row (``queued → dispatching``,
conditional, so duplicates and late messages do nothing), let the broker have its
acknowledgement, then send in a background task. Periodic jobs, safe to run in any number of
replicas: the retry poller re-announces due rows through the outbox, the reaper requeues rows
left ``dispatching`` by a dispatcher that died, the sweeper times out expired rows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

import aiohttp

from dispatcher.attempt import AttemptRunner, ClaimedAttempt
from dispatcher.resolver import PolicyResolver
from shared.bus.base import Envelope
from shared.db.types import utcnow
from shared.domain import analysis_lifecycle as lifecycle
from shared.domain.enums import AnalysisStatus
from shared.domain.events import AnalysisRequested
from shared.runtime.group_commit import PIPELINE_WINDOW_SECONDS, GroupCommit
from shared.runtime.resources import Resources

log = logging.getLogger("skyhook.dispatcher")

QUEUE = "dispatcher"  # skyhook.dispatcher with the default SKYHOOK_BUS_PREFIX


class DispatcherStopping(RuntimeError):
    """Raised for messages that arrive while stopping, so the broker hands them back."""


class Dispatcher:
    def __init__(self, resources: Resources, *, http: aiohttp.ClientSession | None = None) -> None:
        self.resources = resources
        self.settings = resources.settings
        self._http = http
        self._owns_http = http is None
        self._slots = asyncio.Semaphore(self.settings.dispatch_concurrency)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._claiming: set[asyncio.Task[ClaimedAttempt | None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._runner: AttemptRunner | None = None
        self._claims: GroupCommit[int, ClaimedAttempt | None] | None = None
        self._stopping = False

    async def start(self) -> None:
        if self._http is None:
            connector = aiohttp.TCPConnector(
                limit=self.settings.dispatch_concurrency,
                resolver=PolicyResolver(self.resources.url_policy),
            )
            self._http = aiohttp.ClientSession(connector=connector, trust_env=False)
        self._runner = AttemptRunner(self.resources, self._http)
        # Messages that arrive together are claimed together (one transaction per batch).
        self._claims = GroupCommit(
            self._runner.claim_many,
            max_items=self.settings.dispatch_prefetch,
            stretch_to_seconds=PIPELINE_WINDOW_SECONDS,
        )
        self._stopping = False
        await self.resources.bus.subscribe(
            QUEUE,
            [AnalysisRequested.ROUTING_KEY],
            self.handle_message,
            prefetch=self.settings.dispatch_prefetch,
        )
        self._loops = [
            self._every(self.settings.dispatch_poll_interval_seconds, self.announce_due),
            self._every(self.settings.sweep_interval_seconds, self.reap_stuck),
            self._every(self.settings.sweep_interval_seconds, self.sweep_expired),
        ]
        log.info("dispatcher started (queue %s)", QUEUE)

    async def stop(self) -> None:
        """Stop the periodic jobs, let in-flight sends finish (within the shutdown grace period),
        close the client. Calling it again does nothing more."""
        self._stopping = True
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops = []
        deadline = asyncio.get_running_loop().time() + self.settings.shutdown_grace_seconds
        # Claims under way become sends (or nothing); then the sends get the rest of the grace.
        while self._claiming or self._in_flight:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            await asyncio.wait(
                self._claiming | self._in_flight,
                timeout=left,
                return_when=asyncio.FIRST_COMPLETED,
            )
        pending = self._claiming | self._in_flight
        for task in pending:  # their rows stay `dispatching` until the reaper requeues them
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if self._owns_http and self._http is not None:
            await self._http.close()
            self._http = None

    async def wait_idle(self) -> None:
        """Wait until no send is in flight (for tests and orderly shutdowns)."""
        while self._in_flight:
            await asyncio.gather(*set(self._in_flight), return_exceptions=True)

    # --- consuming ---------------------------------------------------------------------------

    async def handle_message(self, envelope: Envelope) -> None:
        if self._stopping or self._claims is None:
            raise DispatcherStopping("dispatcher is stopping")
        message = AnalysisRequested.model_validate(envelope.payload)
        await self._slots.acquire()
        if self._stopping:  # stopped while waiting for a slot: hand the message back
            self._slots.release()
            raise DispatcherStopping("dispatcher is stopping")
        claiming = asyncio.ensure_future(self._claims.submit(message.analysis_id))
        self._claiming.add(claiming)
        try:
            claimed = await claiming
        except BaseException:
            self._slots.release()
            raise
        finally:
            self._claiming.discard(claiming)
        if claimed is None:  # not ours to send, or deleted meanwhile
            self._slots.release()
            return
        task = asyncio.create_task(self._send(claimed))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _send(self, attempt: ClaimedAttempt) -> None:
        assert self._runner is not None
        try:
            await self._runner.run(attempt)
        except Exception:
            # The row stays `dispatching`; the reaper requeues it after the timeout.
            log.exception(
                "dispatch of analysis %d attempt %d failed",
                attempt.analysis_id,
                attempt.attempt_number,
            )
        finally:
            self._slots.release()

    # --- periodic jobs -----------------------------------------------------------------------

    def _every(self, seconds: float, job: Callable[[], Awaitable[int]]) -> asyncio.Task[None]:
        async def loop() -> None:
            while True:
                try:
                    await job()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("dispatcher job %s failed", job.__name__)
                await asyncio.sleep(seconds)

        return asyncio.create_task(loop(), name=f"dispatcher-{job.__name__}")

    async def announce_due(self) -> int:
        """Re-announce ``queued`` rows whose retry is due (or whose message was lost)."""
        lost_after = timedelta(seconds=self.settings.dispatch_requeue_after_seconds)
        ids = await lifecycle.announce_due(self.resources.sessions, utcnow(), lost_after)
        return len(ids)

    async def reap_stuck(self, now: datetime | None = None, *, window: float | None = None) -> int:
        """Rows ``dispatching`` for longer than the timeout plus a margin (or ``window``
        seconds): the dispatcher that claimed them died. Requeue them (due now), or fail them if
        no retry is left, in one set-based write. Attempts left ``sending`` by a dead
        dispatcher on rows that moved on become ``interrupted``."""
        now = now or utcnow()
        if window is None:
            window = (
                self.settings.dispatch_timeout_seconds + self.settings.dispatch_reap_margin_seconds
            )
        cutoff = now - timedelta(seconds=window)
        sessions = self.resources.sessions
        stuck = await lifecycle.stuck_rows(sessions, cutoff)
        released = 0
        if stuck:
            attempts = [self._given_up(row, now) for row in stuck]
            moved = await lifecycle.finish_attempts(
                self.resources.engine,
                attempts,
                now,
                outbox=self.resources.outbox,
                idle_before=cutoff,
            )
            for attempt, was_moved in zip(attempts, moved, strict=True):
                if was_moved:
                    log.warning(
                        "analysis %d: %s; now %s",
                        attempt.subject.analysis_id,
                        attempt.record.error,
                        attempt.new_status,
                        extra={"analysis_id": attempt.subject.analysis_id},
                    )
            released = sum(moved)
        orphans = await lifecycle.mark_orphaned_attempts(sessions, cutoff)
        if orphans:
            log.warning("%d attempts interrupted by a stopped dispatcher marked so", orphans)
        return released

    def _given_up(self, row: lifecycle.StuckRow, now: datetime) -> lifecycle.FinishedAttempt:
        """A stuck attempt's end: back to ``queued`` (due now) while retries are left."""
        attempt_number = row.attempt_number
        error = f"attempt {attempt_number} was interrupted (the dispatcher stopped during it)"
        retries_left = attempt_number < len(self.settings.dispatch_retry_delays_seconds) + 1
        record = lifecycle.AttemptRecord(
            attempt_number=attempt_number,
            started_at=row.last_activity,
            outcome="retry" if retries_left else "failed",
            error=error,
        )
        if retries_left:
            return lifecycle.FinishedAttempt(
                row.subject, record, AnalysisStatus.QUEUED, f"Dispatch {error}; retrying", now
            )
        message = f"Service unreachable after {attempt_number} attempts: {error}"
        return lifecycle.FinishedAttempt(row.subject, record, AnalysisStatus.FAILURE, message)

    async def sweep_expired(self, now: datetime | None = None) -> int:
        """Active rows past ``invalid_after`` → ``timed_out``."""
        ids = await lifecycle.sweep_expired(self.resources.sessions, now or utcnow())
        if ids:
            log.info("timed out %d analyses: %s", len(ids), ids[:20])
        return len(ids)


def create_dispatcher(resources: Resources) -> Dispatcher:
    return Dispatcher(resources)


@asynccontextmanager
async def running_dispatcher(resources: Resources) -> AsyncIterator[Dispatcher]:
    """A started dispatcher for the duration of the block (for the composition root)."""
    dispatcher = create_dispatcher(resources)
    await dispatcher.start()
    try:
        yield dispatcher
    finally:
        await dispatcher.stop()
