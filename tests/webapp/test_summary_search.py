"""The summary search page over POST /api/summary_query, with a real local OpenAI-compatible
embeddings server."""

from __future__ import annotations

from playwright.async_api import Browser, expect

from tests.support.pipeline import make_obj

# The summary-search tests' fake LLM API and settings serve these pages too.
from tests.test_summary_query import embed_all, llm, settings  # noqa: F401 (fixtures)
from tests.webapp.conftest import WebApp, sign_in


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
