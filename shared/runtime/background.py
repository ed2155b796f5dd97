"""Long-running background tasks (outbox relay, consumers, sweepers) that restart on a crash.

``run_forever`` keeps a coroutine running and restarts it with a growing delay when it raises;
``background`` runs it as a task for the duration of an ``async with``. Cancelling stops the
task cleanly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

log = logging.getLogger("skyhook.background")

CoroutineFactory = Callable[[], Awaitable[None]]


async def run_forever(
    name: str,
    coro_factory: CoroutineFactory,
    *,
    restart_delay: float = 1.0,
    max_restart_delay: float = 60.0,
) -> None:
    """Run ``coro_factory()`` again whenever it raises or returns, until cancelled."""
    failures = 0
    while True:
        started = time.monotonic()
        try:
            await coro_factory()
            log.warning("background task %s returned; starting it again", name)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background task %s crashed", name)
        # A task that ran well for a while starts again from the shortest delay.
        failures = 1 if time.monotonic() - started > max_restart_delay else failures + 1
        delay = min(max_restart_delay, restart_delay * 2 ** min(failures - 1, 20))
        log.info("restarting background task %s in %.1fs", name, delay)
        await asyncio.sleep(delay)


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait until ``event`` is set (True) or ``seconds`` pass (False).

    ``asyncio.timeout`` rather than ``asyncio.wait_for``: on Python 3.11, ``wait_for`` can
    swallow a cancellation that arrives as the event is set, and a loop built on it then never
    stops."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def stop(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait for it, without swallowing a cancellation of the caller.

    A task that absorbs a cancellation (a library catching it) is cancelled again until it
    ends, so that stopping a service always finishes."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
    except Exception:
        log.exception("background task %s failed while stopping", task.get_name())


@asynccontextmanager
async def background(
    name: str,
    coro_factory: CoroutineFactory,
    *,
    restart_delay: float = 1.0,
    max_restart_delay: float = 60.0,
) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(
        run_forever(
            name,
            coro_factory,
            restart_delay=restart_delay,
            max_restart_delay=max_restart_delay,
        ),
        name=name,
    )
    try:
        yield task
    finally:
        await stop(task)
