"""Summary search latency (``shared.domain.embeddings.search``) against ranking the same vectors in
memory with numpy, i.e. what loading the readable candidates from the database costs.

    .venv/bin/python bench/summary_query.py [--database-url postgresql+asyncpg://...]
        [--sources 5000] [--dimensions 1536] [--repeat 5]

The database named by the URL is created (PostgreSQL) and migrated; the rows added (a group,
its sources and their embeddings, all under a unique prefix) are deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

import asyncpg
import numpy as np
from sqlalchemy import delete, insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db.migrate import upgrade_async
from shared.db.models import Group, Obj, SourceEmbedding, obj_groups
from shared.db.session import create_engine, create_session_factory
from shared.db.types import utcnow
from shared.domain.access import Principal
from shared.domain.embeddings import SearchFilters, rank, search, to_bytes

MODEL = "bench-embed"


async def ensure_database(url: str) -> None:
    if not url.startswith("postgresql"):
        return
    base, name = url.rsplit("/", 1)
    admin = base.replace("+asyncpg", "") + "/postgres"
    connection = await asyncpg.connect(admin)
    try:
        if not await connection.fetchval("SELECT 1 FROM pg_database WHERE datname=$1", name):
            await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


async def fill(sessions: async_sessionmaker[AsyncSession], prefix: str, vectors: np.ndarray) -> int:
    now = utcnow()
    async with sessions.begin() as session:
        group = Group(name=f"{prefix}-group")
        session.add(group)
        await session.flush()
        ids = [f"{prefix}-{n}" for n in range(len(vectors))]
        objs = [{"id": i, "ra": 1.0, "dec": 2.0, "summary": f"summary {i}"} for i in ids]
        for chunk in range(0, len(objs), 1000):
            await session.execute(insert(Obj), objs[chunk : chunk + 1000])
        links = [{"obj_id": i, "group_id": group.id} for i in ids]
        await session.execute(insert(obj_groups), links)
        rows = [
            {
                "obj_id": i,
                "model": MODEL,
                "dimensions": vectors.shape[1],
                "vector": to_bytes(v),
                "summary": f"summary {i}",
                "updated_at": now,
            }
            for i, v in zip(ids, vectors, strict=True)
        ]
        for chunk in range(0, len(rows), 500):
            await session.execute(insert(SourceEmbedding), rows[chunk : chunk + 500])
        return group.id


async def main(url: str, sources: int, dimensions: int, repeat: int) -> None:
    await ensure_database(url)
    await upgrade_async(url)
    engine = create_engine(url)
    sessions = create_session_factory(engine)
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(sources, dimensions))
    query = rng.normal(size=dimensions).tolist()
    try:
        group_id = await fill(sessions, prefix, vectors)
        reader = Principal(1, "bench", False, frozenset(), frozenset({group_id}), frozenset())
        searched, ranked = [], []
        for _ in range(repeat):
            started = time.perf_counter()
            async with sessions() as session:
                hits = await search(session, reader, query, MODEL, 5, SearchFilters())
            searched.append(time.perf_counter() - started)
            started = time.perf_counter()
            rank(query, vectors, 5)
            ranked.append(time.perf_counter() - started)
        assert len(hits) == 5
        db, mem = statistics.median(searched), statistics.median(ranked)
        print(f"{sources} sources x {dimensions} dims on {engine.dialect.name}")
        print(f"  summary search (database + rank): {db * 1000:8.1f} ms")
        print(f"  numpy rank only (in memory)      : {mem * 1000:8.1f} ms")
        print(f"  ratio                             : {db / mem:8.1f}x")
    finally:
        async with sessions.begin() as session:
            await session.execute(delete(Obj).where(Obj.id.like(f"{prefix}-%")))
            await session.execute(delete(Group).where(Group.name == f"{prefix}-group"))
        await engine.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--database-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/skyhook_bench"
    )
    parser.add_argument("--sources", type=int, default=5000)
    parser.add_argument("--dimensions", type=int, default=1536)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.database_url, args.sources, args.dimensions, args.repeat))
