"""The summary search page over POST /api/summary_query, with a real local OpenAI-compatible
embeddings server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, expect
from pydantic import SecretStr

from shared.settings import Settings
from tests.support.fake_openai import FakeOpenAI
from tests.support.pipeline import make_obj
from tests.test_summary_query import embed_all
from tests.webapp.conftest import WebApp, sign_in

SITE_KEY = "sk-site-valid-key-0001"


@pytest.fixture
async def llm() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(valid_keys={SITE_KEY}) as fake:
        yield fake


@pytest.fixture
def settings(settings: Settings, llm: FakeOpenAI) -> Settings:
    return settings.model_copy(
        update={
            "llm_base_url": llm.base_url,
            "llm_api_key": SecretStr(SITE_KEY),
            "llm_max_retries": 0,
            "embeddings_model": "fake-embed",
        }
    )


async def test_summaries_are_found_by_meaning_and_only_readable_ones(
    webapp: WebApp, browser: Browser
) -> None:
    mine, theirs = await webapp.accounts.group(), await webapp.accounts.group()
    user = await webapp.accounts.user(groups=(mine,))
    resources = webapp.resources
    ia = await make_obj(resources, [mine], summary="Type Ia supernova near peak in spiral host")
    await make_obj(resources, [mine], summary="Flaring AGN with broad lines")
    await make_obj(resources, [theirs], summary="Type Ia supernova in a spiral host, hidden")
    await embed_all(resources)

    page = await sign_in(browser, webapp, user)
    await page.goto(f"{webapp.url}/summaries")
    await page.fill("#summary-search input[name=q]", "supernova type Ia in a spiral host")
    await page.click("#summary-search button[type=submit]")

    hits = page.locator("#summary-results [data-hit]")
    await expect(hits).to_have_count(2)
    assert await hits.first.get_attribute("data-hit") == ia
    await webapp.shot(page, "summaries-laptop")
