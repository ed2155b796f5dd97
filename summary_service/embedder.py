"""Keeping the embeddings of source summaries current (for ``POST /api/summary_query``).

After the summary service applies a summary it embeds it at once. Summaries also change
elsewhere (a manual ``PATCH /api/sources/{id}``, the deletion of a summary analysis, a source
deleted): a periodic pass embeds every summarized source whose stored embedding is missing or
stale and deletes the embeddings of sources without a summary. Until then a stale embedding is
simply never searched (``shared.domain.embeddings``). An unreachable embeddings API only delays
this; nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.domain.embeddings import (
    EmbeddingsConfig,
    delete_unsummarized,
    sources_to_embed,
    store_embedding,
)
from shared.llm.client import LLMClient, LLMError

log = logging.getLogger("skyhook.summary_service.embeddings")

BATCH_SIZE = 64


class SummaryEmbedder:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], config: EmbeddingsConfig
    ) -> None:
        self.sessions = sessions
        self.config = config
        self.client = LLMClient(config.endpoint)

    async def close(self) -> None:
        await self.client.close()

    async def _embed_batch(self, pending: list[tuple[str, str]]) -> int:
        vectors = await self.client.embed([summary for _, summary in pending], self.config.model)
        async with self.sessions.begin() as session:
            for (obj_id, summary), vector in zip(pending, vectors, strict=True):
                await store_embedding(session, obj_id, self.config.model, vector, summary)
        return len(pending)

    async def refresh(self, obj_ids: Sequence[str] | None = None) -> int:
        """Embed the stale summaries (of ``obj_ids``, or of every source); returns how many
        were embedded. Raises LLMError when the API fails."""
        done = 0
        while True:
            async with self.sessions() as session:
                pending = await sources_to_embed(session, self.config.model, BATCH_SIZE, obj_ids)
            if not pending:
                return done
            done += await self._embed_batch(pending)
            if len(pending) < BATCH_SIZE:
                return done

    async def refresh_quietly(self, obj_ids: Sequence[str]) -> None:
        """``refresh`` for sources whose summary just changed; a failure is only logged (the
        periodic pass retries)."""
        try:
            await self.refresh(obj_ids)
        except LLMError as exc:
            log.warning(
                "embedding %s failed (%s: %s); will retry", list(obj_ids), exc.kind, exc.detail
            )

    async def reconcile(self) -> tuple[int, int]:
        """(embedded, deleted): one full pass."""
        async with self.sessions.begin() as session:
            deleted = await delete_unsummarized(session)
        embedded = await self.refresh()
        if embedded or deleted:
            log.info("embeddings: %d computed, %d removed", embedded, deleted)
        return embedded, deleted

    async def run(self, interval: float) -> None:
        """Reconcile every ``interval`` seconds until cancelled."""
        while True:
            try:
                await self.reconcile()
            except LLMError as exc:
                log.warning("embeddings API failed (%s: %s); retrying later", exc.kind, exc.detail)
            await asyncio.sleep(interval)
