"""Fixtures for the end-to-end tests: the running pipeline (real PostgreSQL and RabbitMQ), two
users, a source with photometry, and the result files a service sends back."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.harness import Pipeline, Source, User, delete_rabbit_names, running_pipeline
from tests.e2e.services import Products, make_products
from tests.support.buses import rabbitmqctl

RUN_ANALYSES = "Run Analyses"
UPLOAD_DATA = "Upload Data"
MANAGE_SERVICES = "Manage Analysis Services"

_counter = itertools.count(1)


def _names_with_prefix(kind: str, prefix: str) -> list[str]:
    try:
        listing = rabbitmqctl(f"list_{kind}", "name", "--no-table-headers")
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in listing.splitlines() if line.strip().startswith(prefix)]


@pytest.fixture(scope="session")
def session_prefix() -> Iterator[str]:
    """Every RabbitMQ name of this test session starts with it; whatever a test could not
    delete itself (e.g. a killed process) is deleted at the end of the session."""
    prefix = f"e2e-{uuid.uuid4().hex[:8]}"
    yield prefix
    queues = _names_with_prefix("queues", prefix)
    exchanges = _names_with_prefix("exchanges", prefix)
    if queues or exchanges:
        asyncio.run(delete_rabbit_names(queues, exchanges))


@pytest.fixture
def bus_prefix(session_prefix: str) -> str:
    return f"{session_prefix}-{next(_counter)}"


@pytest.fixture(scope="session")
def products() -> Products:
    return make_products()


@pytest.fixture
async def pipeline(
    pg_database_url: str, tmp_path: Path, bus_prefix: str
) -> AsyncIterator[Pipeline]:
    async with running_pipeline(pg_database_url, tmp_path / "artifacts", bus_prefix) as running:
        yield running


@dataclass(frozen=True)
class Scene:
    astro: User  # runs analyses, uploads data, manages services
    outsider: User  # shares the source, but some of its photometry is not astro's to see
    group: str
    source: Source


@pytest.fixture
async def scene(pipeline: Pipeline) -> Scene:
    group, other = f"e2e-{uuid.uuid4().hex[:8]}", f"e2e-other-{uuid.uuid4().hex[:8]}"
    astro = await pipeline.user([RUN_ANALYSES, UPLOAD_DATA, MANAGE_SERVICES], [group])
    outsider = await pipeline.user([UPLOAD_DATA], [group, other])
    source = await pipeline.source_with_photometry(astro, group, outsider, other)
    return Scene(astro, outsider, group, source)
