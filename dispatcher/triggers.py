"""Default-analysis triggers: consumes ``classification.added``, ``source.saved`` and
``photometry.added`` (queue ``skyhook.default_analyses``) and starts the default analyses they
match; a periodic pass starts photometry triggers whose quiet period has passed.

It runs in the dispatcher process. A message is acknowledged once every matching default was
started or skipped; a crash before that redelivers it, and the per-event run record makes the
second delivery start nothing twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from shared.bus.base import Bus, Envelope
from shared.domain import default_analyses
from shared.domain.events import ClassificationAdded, PhotometryAdded, SourceSaved
from shared.runtime.background import background
from shared.runtime.resources import Resources, analysis_creator

log = logging.getLogger("skyhook.default_analyses")

QUEUE = "default_analyses"  # skyhook.default_analyses with the default SKYHOOK_BUS_PREFIX
ROUTING_KEYS = [
    ClassificationAdded.ROUTING_KEY,
    SourceSaved.ROUTING_KEY,
    PhotometryAdded.ROUTING_KEY,
]
PREFETCH = 16


async def declare_trigger_queue(bus: Bus) -> None:
    """Declare the queue so trigger events wait there even before the dispatcher first runs."""
    await bus.declare(QUEUE, ROUTING_KEYS)


class DefaultAnalysisTriggers:
    def __init__(self, resources: Resources) -> None:
        self.bus = resources.bus
        self.creator = analysis_creator(resources)
        self.quiet = timedelta(seconds=resources.settings.default_analysis_quiet_seconds)
        self.poll_interval = resources.settings.default_analysis_poll_interval_seconds

    async def start(self) -> None:
        await self.bus.subscribe(QUEUE, ROUTING_KEYS, self.handle_message, prefetch=PREFETCH)
        log.info("default-analysis triggers started (queue %s)", QUEUE)

    async def handle_message(self, envelope: Envelope) -> None:
        creator, event_id = self.creator, envelope.message_id
        if envelope.routing_key == ClassificationAdded.ROUTING_KEY:
            added = ClassificationAdded.model_validate(envelope.payload)
            await default_analyses.on_classification_added(
                creator,
                event_id,
                added.obj_id,
                added.classification,
                added.probability,
                added.group_ids,
            )
        elif envelope.routing_key == SourceSaved.ROUTING_KEY:
            saved = SourceSaved.model_validate(envelope.payload)
            await default_analyses.on_source_saved(creator, event_id, saved.obj_id, saved.group_id)
        elif envelope.routing_key == PhotometryAdded.ROUTING_KEY:
            photometry = PhotometryAdded.model_validate(envelope.payload)
            await default_analyses.on_photometry_added(
                creator.sessions, self.quiet, event_id, photometry.obj_id
            )

    async def start_due(self) -> None:
        """Forever: start the photometry triggers whose quiet period has passed."""
        while True:
            await default_analyses.start_due_photometry_triggers(self.creator)
            await asyncio.sleep(self.poll_interval)


@asynccontextmanager
async def running_triggers(resources: Resources) -> AsyncIterator[DefaultAnalysisTriggers]:
    triggers = DefaultAnalysisTriggers(resources)
    await triggers.start()
    async with background("default-analysis-photometry", triggers.start_due):
        yield triggers
