"""The one polling helper of the tests: wait for a condition, never for a fixed time."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")


@overload
async def eventually(
    check: Callable[[], Awaitable[T | None]],
    what: str = ...,
    within: float = ...,
    every: float = ...,
) -> T: ...


@overload
async def eventually(
    check: Callable[[], T | None],
    what: str = ...,
    within: float = ...,
    every: float = ...,
) -> T: ...


async def eventually(
    check: Callable[[], Any],
    what: str = "the condition",
    within: float = 20.0,
    every: float = 0.02,
) -> Any:
    """Call ``check`` (sync or async) until it returns something truthy and return that.

    ``within`` is a generous bound on a condition that must come true, not a sleep: after it,
    AssertionError names ``what`` (and the last value ``check`` returned)."""
    deadline = time.monotonic() + within
    while True:
        outcome: Any = check()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return outcome
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what} (last: {outcome!r})")
        await asyncio.sleep(every)
