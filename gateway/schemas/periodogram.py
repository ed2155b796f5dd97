"""A source's periodogram."""

from __future__ import annotations

from gateway.schemas.common import Open


class Periodogram(Open):
    """The periods tried, their power and the best peaks (fields as computed)."""

    obj_id: str
