"""shared.runtime.group_commit: concurrent callers share batches and each gets its own outcome."""

from __future__ import annotations

import asyncio

import pytest

from shared.runtime.group_commit import Arrivals, GroupCommit


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


def test_the_stretched_window_is_three_recent_gaps_between_arrivals() -> None:
    arrivals = Arrivals(longest=0.010)
    for n in range(50):  # a burst: 10 us apart
        arrivals.arrived(100.0 + n * 0.00001)
    assert arrivals.window(shortest=0.002) == 0.002  # the short window, as without stretching
    for n in range(50):  # a steady trickle, 2 ms apart
        arrivals.arrived(200.0 + n * 0.002)
    assert arrivals.window(shortest=0.002) == pytest.approx(0.006, rel=0.01)
    arrivals.arrived(300.0)  # after an idle spell: never longer than the longest window
    arrivals.arrived(400.0)
    assert arrivals.window(shortest=0.002) == 0.010


async def test_a_trickle_gathers_into_fewer_batches_when_the_window_stretches() -> None:
    async def trickle(group: GroupCommit[int, int]) -> list[int]:
        calls = []
        for i in range(20):  # 5 ms apart: more than the short window of 2 ms
            calls.append(asyncio.ensure_future(group.submit(i)))
            await asyncio.sleep(0.005)
        return list(await asyncio.gather(*calls))

    plain, stretched = Doubler(), Doubler()
    assert await trickle(GroupCommit(plain, max_wait_seconds=0.002)) == [2 * i for i in range(20)]
    stretching = GroupCommit(stretched, max_wait_seconds=0.002, stretch_to_seconds=0.05)
    assert await trickle(stretching) == [2 * i for i in range(20)]
    assert len(stretched.batches) < len(plain.batches)
    assert len(stretched.batches) <= 10  # two or more a batch
