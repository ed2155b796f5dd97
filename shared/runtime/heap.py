"""Python's garbage collector in a long-running service.

A full collection walks every tracked object in the process. What a service allocates while
starting (its modules, the ORM's mappers and metadata, pydantic models, route tables, cached
statements) lives as long as the process and holds no garbage, yet every full collection walked
it again: in the split pipeline benchmark a full collection stopped a process for 100 to 210 ms,
which is where the slowest analyses' latency came from. Frozen once the service is ready, it is
left out of every later collection.

The young generation was collected every 700 net allocations of tracked objects, about 700
times in 8,000 analyses in the dispatcher alone; a request's objects mostly die young, and at
every 5,000 the same run collects about 20 times (gen0 time 330 ms → 50 ms), with no full
collection during the run at all.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

YOUNG_COLLECTION_EVERY = 5_000


@contextmanager
def serving_heap() -> Iterator[None]:
    """While the service serves: the startup heap frozen out of collections, the young
    generation collected less often. Both undone when it stops (tests run many services in
    one process, and frozen objects that later became garbage would never be collected)."""
    thresholds = gc.get_threshold()
    gc.collect()  # what starting up left behind
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
