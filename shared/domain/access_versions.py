"""Whether a cached principal or service is still current.

The database raises a counter whenever principals (users' rights, tokens, memberships) or
services (analysis services, whom they are shared with) change, in the changing transaction
(``access_versions``, migration 0006). A copy is kept with the counter read in the same
statement as the copy itself; a write that relies on copies reads the counters again inside
its own transaction and refuses the copies that moved (:class:`StaleAccess`), so its caller
can read them afresh and decide again. A copy is therefore never trusted past a change that
committed before the write that used it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from sqlalchemy import ScalarSelect, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from shared.db.models import AccessVersion

PRINCIPALS = "principals"
SERVICES = "services"


def version_of(counter: str) -> ScalarSelect[int]:
    """The counter's value, as a column of the query that reads what it counts."""
    return select(AccessVersion.version).where(AccessVersion.name == counter).scalar_subquery()


@dataclass(frozen=True)
class ReadAt:
    """The counters a write's cached principal and service were read at (None: that one was
    not a copy, nothing to check)."""

    principals: int | None
    services: int | None

    def still_current(self, counters: dict[str, int]) -> bool:
        return all(
            seen is None or seen == counters[counter]
            for counter, seen in ((PRINCIPALS, self.principals), (SERVICES, self.services))
        )


class StaleAccess(Exception):
    """The principal or service a write relied on changed since it was read."""


async def current_counters(session: AsyncSession | AsyncConnection) -> dict[str, int]:
    """The counters now: read inside the writing transaction."""
    rows = await session.execute(select(AccessVersion.name, AccessVersion.version))
    return {name: version for name, version in rows}


Key = TypeVar("Key")
Value = TypeVar("Value")


@dataclass(frozen=True)
class Versioned(Generic[Value]):
    """A copy and the counter read with it."""

    value: Value
    version: int


class VersionedCache(Generic[Key, Value]):
    """Copies by key, the ``limit`` used most recently; :meth:`clear` when a write found one
    stale (the counters are global: every copy read before the change is stale too)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._copies: OrderedDict[Key, Versioned[Value]] = OrderedDict()

    def get(self, key: Key) -> Versioned[Value] | None:
        found = self._copies.get(key)
        if found is not None:
            self._copies.move_to_end(key)
        return found

    async def read_through(
        self,
        key: Key,
        read: Callable[[Key], Awaitable[Versioned[Value] | None]],
        *,
        cached: bool = True,
    ) -> Versioned[Value] | None:
        """The copy of ``key`` this cache holds (unless ``cached`` is False), else what
        ``read`` finds, kept for next time; None when there is no such thing."""
        copy = self.get(key) if cached else None
        if copy is None:
            copy = await read(key)
            if copy is not None:
                self.put(key, copy)
        return copy

    def put(self, key: Key, copy: Versioned[Value]) -> None:
        current = self._copies.get(key)
        if current is not None and current.version > copy.version:
            return  # a slower read of an older state: keep the newer copy
        self._copies[key] = copy
        self._copies.move_to_end(key)
        while len(self._copies) > self._limit:
            self._copies.popitem(last=False)

    def clear(self) -> None:
        self._copies.clear()

    def __len__(self) -> int:
        return len(self._copies)
