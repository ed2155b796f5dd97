"""A serving process leaves its startup heap out of garbage collections and collects the young
generation less often; a stopped service gives the process its collector back as it was."""

from __future__ import annotations

import gc

from shared.runtime.heap import YOUNG_COLLECTION_EVERY, serving_heap


def test_the_startup_heap_is_frozen_while_serving_and_released_after() -> None:
    before = gc.get_threshold()
    started_with = [object() for _ in range(10)]  # alive when serving begins
    with serving_heap():
        assert gc.get_freeze_count() >= len(started_with)
        assert gc.get_threshold()[0] == YOUNG_COLLECTION_EVERY
        assert gc.get_threshold()[1:] == before[1:]
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before


def test_garbage_made_while_serving_is_still_collected() -> None:
    class Node:
        other: object

    with serving_heap():
        first, second = Node(), Node()
        first.other, second.other = second, first  # a cycle: only the collector frees it
        del first, second
        assert gc.collect() >= 2
