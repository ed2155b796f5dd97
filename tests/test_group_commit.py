"""shared.runtime.group_commit: concurrent callers share batches and each gets its own outcome."""

from __future__ import annotations

import asyncio

import pytest

from shared.runtime.group_commit import GroupCommit


class Doubler:
    """A batch function that doubles numbers, refuses negative ones and records its batches."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    async def __call__(self, items: list[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        await asyncio.sleep(0)  # a real batch awaits its database
        return [ValueError(f"negative: {i}") if i < 0 else 2 * i for i in items]


async def test_concurrent_callers_share_batches_and_get_their_own_results() -> None:
    doubler = Doubler()
    group = GroupCommit(doubler, max_items=50, max_wait_seconds=0.05)
    results = await asyncio.gather(*(group.submit(i) for i in range(250)))
    assert results == [2 * i for i in range(250)]
    assert sorted(i for batch in doubler.batches for i in batch) == list(range(250))
    assert all(len(batch) <= 50 for batch in doubler.batches)
    assert len(doubler.batches) <= 6  # 250 items, 50 a batch: batched, not one by one


async def test_a_lone_caller_is_served_when_the_window_closes() -> None:
    group = GroupCommit(Doubler(), max_items=100, max_wait_seconds=0.001)
    assert await group.submit(21) == 42
    assert await group.submit(4) == 8  # and again, with a new flusher


async def test_an_items_failure_reaches_only_its_caller() -> None:
    group = GroupCommit(Doubler(), max_items=10, max_wait_seconds=0.05)
    outcomes = await asyncio.gather(*(group.submit(i) for i in (1, -2, 3)), return_exceptions=True)
    assert outcomes[0] == 2 and outcomes[2] == 6
    assert isinstance(outcomes[1], ValueError) and str(outcomes[1]) == "negative: -2"


async def test_a_failed_batch_fails_each_of_its_callers() -> None:
    async def broken(items: list[int]) -> list[int | BaseException]:
        raise ConnectionError("database went away")

    group: GroupCommit[int, int] = GroupCommit(broken, max_items=10, max_wait_seconds=0.01)
    outcomes = await asyncio.gather(*(group.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(o, ConnectionError) for o in outcomes)
    with pytest.raises(ConnectionError):
        await group.submit(7)  # the next batch is tried again, and fails again


async def test_drain_waits_for_every_submitted_item() -> None:
    doubler = Doubler()
    group = GroupCommit(doubler, max_items=100, max_wait_seconds=0.01)
    callers = [asyncio.create_task(group.submit(i)) for i in range(10)]
    await asyncio.sleep(0)
    await group.drain()
    assert all(c.done() for c in callers)
    assert [c.result() for c in callers] == [2 * i for i in range(10)]
