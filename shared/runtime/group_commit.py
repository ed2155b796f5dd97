"""Group commit: concurrent callers' items gathered into one batch, run as one set-based write.

A caller ``await``s :meth:`GroupCommit.submit` with its item and gets its own result (or its
own exception) back. Items wait at most ``max_wait_seconds`` after the first of a batch
arrived, or until ``max_items`` are waiting, whichever comes first; a lone caller therefore
pays at most that window in latency, and a busy process pays one transaction per batch
instead of one per item. At most ``max_batches_in_flight`` batches run at once; items that
arrive meanwhile gather into the next one.

With ``stretch_to_seconds`` the window follows the arrivals: it lasts three times the recent mean
gap between them, at least ``max_wait_seconds`` and at most ``stretch_to_seconds``. A burst keeps
the short window; a steady trickle, a few milliseconds between items, gathers a few per batch
instead of committing each alone.

The batch function gets the items in arrival order and returns one outcome per item, in the
same order: a result, or an exception that only that item's caller receives. If the batch
function itself raises, every caller of that batch receives the exception.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from shared.runtime.background import wait_event

Item = TypeVar("Item")
Result = TypeVar("Result")

# The longest window of the pipeline's writes (creating, claiming, completing analyses): at a
# steady few hundred per second a batch gathers the next few arrivals.
PIPELINE_WINDOW_SECONDS = 0.01

# How much each new gap between arrivals moves the mean gap (an exponential moving average).
GAP_WEIGHT = 0.2

# A stretched window lasts this many mean gaps. At 300 arrivals/s, three gaps (10 ms) gather
# three or four items a batch where two gaps gathered two or three: about a fifth fewer round
# trips and 7 % less CPU per item in bench/pipeline.py, for about 5 ms more latency.
WINDOW_GAPS = 3


@dataclass
class Arrivals:
    """The recent mean gap between arrivals, and the window it calls for."""

    longest: float  # the longest window; a longer gap counts as this long (idle, not slow)
    mean_gap: float = 0.0
    last: float = -math.inf

    def arrived(self, now: float) -> None:
        gap = min(now - self.last, self.longest)
        self.mean_gap += GAP_WEIGHT * (gap - self.mean_gap)
        self.last = now

    def window(self, shortest: float) -> float:
        """:data:`WINDOW_GAPS` mean gaps, within [shortest, longest]."""
        return min(max(WINDOW_GAPS * self.mean_gap, shortest), self.longest)


BatchFunction = Callable[[list[Item]], Awaitable[Sequence[Result | BaseException]]]


class GroupCommit(Generic[Item, Result]):
    def __init__(
        self,
        run_batch: BatchFunction[Item, Result],
        *,
        max_items: int = 100,
        max_wait_seconds: float = 0.002,
        max_batches_in_flight: int = 2,
        stretch_to_seconds: float | None = None,
    ) -> None:
        self._run_batch = run_batch
        self._max_items = max_items
        self._max_wait = max_wait_seconds
        self._arrivals = None if stretch_to_seconds is None else Arrivals(stretch_to_seconds)
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._full = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._slots = asyncio.Semaphore(max_batches_in_flight)
        self._running: set[asyncio.Task[None]] = set()

    async def submit(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        if self._arrivals is not None:
            self._arrivals.arrived(loop.time())
        future: asyncio.Future[Result] = loop.create_future()
        self._waiting.append((item, future))
        if len(self._waiting) >= self._max_items:
            self._full.set()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_soon())
        return await future

    async def _flush_soon(self) -> None:
        """Gather until the window closes or the batch is full, then start it; repeat while
        items keep arriving."""
        while self._waiting:
            if len(self._waiting) < self._max_items:
                self._full.clear()
                await wait_event(self._full, self._window())
            await self._slots.acquire()
            batch = self._waiting[: self._max_items]
            del self._waiting[: self._max_items]
            task = asyncio.create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _window(self) -> float:
        if self._arrivals is None:
            return self._max_wait
        return self._arrivals.window(self._max_wait)

    async def _run(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            outcomes = await self._run_batch([item for item, _ in batch])
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:  # cancelled: so are its callers
            for _, future in batch:
                future.cancel()
            raise
        finally:
            self._slots.release()
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():  # its caller was cancelled
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    async def drain(self) -> None:
        """Wait until every item submitted so far has its outcome (for orderly stops)."""
        while self._waiting or self._running or (self._flusher and not self._flusher.done()):
            pending = [*self._running, *([self._flusher] if self._flusher else [])]
            await asyncio.gather(*pending, return_exceptions=True)
