"""The summary service: consumes ``analysis.completed`` (queue ``skyhook.summaries``) and keeps
sources' summaries, their history and their embeddings up to date."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from shared.bus.base import Bus, Envelope
from shared.domain.embeddings import embeddings_config
from shared.domain.events import (
    AnalysisAccepted,
    AnalysisCancelled,
    AnalysisCompleted,
    AnalysisEnded,
    AnalysisFailed,
    AnalysisTimedOut,
)
from shared.runtime.background import background
from shared.runtime.resources import Resources
from summary_service.apply import apply_analysis_summary
from summary_service.embedder import SummaryEmbedder

log = logging.getLogger("skyhook.summary_service")

QUEUE = "summaries"  # skyhook.summaries with the default SKYHOOK_BUS_PREFIX
PREFETCH = 16
# A summary is applied whenever the results carry one, whatever status the service reported.
APPLIED = frozenset({AnalysisCompleted.ROUTING_KEY, AnalysisFailed.ROUTING_KEY})
# Bound to every analysis event, so that none is unroutable (dead-lettered) while no gateway
# listens; the others are acknowledged and ignored.
ROUTING_KEYS = [
    AnalysisAccepted.ROUTING_KEY,
    *sorted(APPLIED),
    AnalysisTimedOut.ROUTING_KEY,
    AnalysisCancelled.ROUTING_KEY,
]


async def declare_summary_queue(bus: Bus) -> None:
    """Declare the queue so ``analysis.completed`` events wait there even before the summary
    service first runs."""
    await bus.declare(QUEUE, ROUTING_KEYS)


class SummaryService:
    def __init__(self, resources: Resources, embedder: SummaryEmbedder | None = None) -> None:
        self.resources = resources
        self.embedder = embedder

    async def start(self) -> None:
        await self.resources.bus.subscribe(
            QUEUE, ROUTING_KEYS, self.handle_message, prefetch=PREFETCH
        )
        log.info(
            "summary service started (queue %s, embeddings %s)",
            QUEUE,
            "on" if self.embedder else "off",
        )

    async def handle_message(self, envelope: Envelope) -> None:
        if envelope.routing_key not in APPLIED:
            return
        event = AnalysisEnded.model_validate(envelope.payload)
        if not event.is_summary:
            return
        resources = self.resources
        obj_id = await apply_analysis_summary(
            resources.sessions, resources.artifacts, event.analysis_id
        )
        if obj_id is not None and self.embedder is not None:
            await self.embedder.refresh_quietly([obj_id])


@asynccontextmanager
async def running_summary_service(resources: Resources) -> AsyncIterator[SummaryService]:
    """The consumer (subscribed on entry) and, when embeddings are configured, the periodic
    embedding pass, for the duration of the block."""
    async with AsyncExitStack() as stack:
        embedder = None
        config = embeddings_config(resources.settings)
        if config is not None:
            embedder = SummaryEmbedder(resources.sessions, config)
            stack.push_async_callback(embedder.close)
        service = SummaryService(resources, embedder)
        await service.start()
        if embedder is not None:
            interval = resources.settings.embeddings_refresh_interval_seconds
            await stack.enter_async_context(
                background("summary-embeddings", lambda: embedder.run(interval))
            )
        yield service
