"""How fast the web app's source page renders in a real browser: a source with 2,000
photometry points and 100 analyses (a third completed with a stored model light curve).

    .venv/bin/python bench/source_page.py [--database-url postgresql+asyncpg://...] [--points 2000]
        [--analyses 100] [--repeat 7]

Measured in headless Chromium (/usr/bin/chromium, driven by Playwright) against a real gateway
on 127.0.0.1: the time from the navigation's start to the page's ``source-ready`` mark, set
once the source, its photometry (every page of it), notes and analyses are loaded and the plot
and the analyses table are drawn. The first load fetches plotly.min.js (4.6 MB) too; the later
ones find it in the browser cache, as a user moving between sources does. The machine's load
average is printed with the figures. Without --database-url a temporary SQLite file is used.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import tempfile
import uuid
from datetime import timedelta
from pathlib import Path

from aiohttp import web
from playwright.async_api import async_playwright
from sqlalchemy import insert

from shared.db.migrate import upgrade_async
from shared.db.models import (
    AnalysisService,
    Instrument,
    Obj,
    ObjAnalysis,
    Photometry,
    analysis_service_groups,
    obj_analysis_groups,
    obj_groups,
    photometry_groups,
)
from shared.db.types import utcnow
from shared.domain.accounts import add_member, ensure_user, get_or_create_group, issue_token
from shared.domain.analysis_data import store_analysis_payload
from shared.domain.artifacts import write_artifacts
from shared.domain.enums import AnalysisStatus
from shared.runtime.resources import Resources, open_resources
from shared.runtime.settings import load_settings
from skyhook.composition import platform_gateway_app

CHROMIUM = "/usr/bin/chromium"
DETAIL = """() => [
  ...performance.getEntriesByType('mark').map(m => `${m.name} ${m.startTime.toFixed(0)}`),
  ...performance.getEntriesByType('resource').map((r) =>
    `${r.name.replace(location.origin, '')} ${r.startTime.toFixed(0)}+${r.duration.toFixed(0)}`),
].join('\\n')"""
STATUSES = [AnalysisStatus.COMPLETED, AnalysisStatus.FAILURE, AnalysisStatus.PENDING]


def model_curve() -> dict[str, list[list[float]]]:
    days = range(0, 60, 2)
    return {
        band: [
            [60000.0 + d, 19 - 0.04 * d + o, 18.9 - 0.04 * d + o, 19.1 - 0.04 * d + o] for d in days
        ]
        for band, o in (("ztfg", 0.0), ("ztfr", -0.2))
    }


async def fill(resources: Resources, points: int, analyses: int) -> tuple[str, str]:
    prefix = uuid.uuid4().hex[:8]
    obj_id = f"ZTFbench{prefix}"
    async with resources.sessions.begin() as session:
        group = await get_or_create_group(session, f"bench-{prefix}")
        user = await ensure_user(session, f"bench-{prefix}", acls=("Run Analyses",))
        await add_member(session, group, user)
        _, token = await issue_token(session, user, "bench")
        instrument = Instrument(name=f"ZTF-{prefix}", filters=["ztfg", "ztfr", "ztfi"])
        service = AnalysisService(
            name=f"fitter-{prefix}",
            display_name="Bench fitter",
            url="http://127.0.0.1:9/x",
            authentication_type="none",
            analysis_type="lightcurve_fitting",
            input_data_types=["photometry"],
            timeout=3600.0,
        )
        session.add_all([instrument, service, Obj(id=obj_id, ra=150.1, dec=2.2, redshift=0.05)])
        await session.flush()
        await session.execute(insert(obj_groups), [{"obj_id": obj_id, "group_id": group.id}])
        await session.execute(
            insert(analysis_service_groups),
            [{"analysis_service_id": service.id, "group_id": group.id}],
        )
        rows = [
            {
                "obj_id": obj_id,
                "instrument_id": instrument.id,
                "mjd": 60000.0 + n * 0.03,
                "filter": ("ztfg", "ztfr", "ztfi")[n % 3],
                "flux": 200 * math.exp(-(((n * 0.03 - 25) / 10) ** 2)) + 3 if n > 60 else None,
                "fluxerr": 4.0,
            }
            for n in range(points)
        ]
        ids = (await session.execute(insert(Photometry).returning(Photometry.id), rows)).scalars()
        await session.execute(
            insert(photometry_groups), [{"photometry_id": i, "group_id": group.id} for i in ids]
        )
        now = utcnow()
        for n in range(analyses):
            status = STATUSES[n % 3]
            unique_id = str(uuid.uuid4())
            stored = (
                await store_analysis_payload(unique_id, {"model_lightcurve": model_curve()})
                if status == AnalysisStatus.COMPLETED
                else None
            )
            analysis = ObjAnalysis(
                unique_id=unique_id,
                obj_id=obj_id,
                author_id=user.id,
                analysis_service_id=service.id,
                status=status,
                status_message=f"bench analysis {n}",
                analysis_parameters={"n": n},
                input_filters={},
                invalid_after=now + timedelta(days=1),
                last_activity=now,
                token_hash=uuid.uuid4().hex,
                artifacts=stored.artifacts if stored else {},
                data_summary=stored.data_summary if stored else {},
            )
            session.add(analysis)
            await session.flush()
            if stored:
                await write_artifacts(session, analysis.id, stored.files)
            await session.execute(
                insert(obj_analysis_groups),
                [{"obj_analysis_id": analysis.id, "group_id": group.id}],
            )
    return obj_id, token


async def measure(url: str, obj_id: str, token: str, repeat: int) -> list[float]:
    timings = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = await (await browser.new_context(viewport={"width": 1366, "height": 900})).new_page()
        await page.goto(f"{url}/login")
        await page.fill("#token", token)
        await page.click("button[type=submit]")
        await page.wait_for_selector("#username")
        for _ in range(repeat):
            await page.goto(f"{url}/source/{obj_id}")
            await page.wait_for_selector("main[data-ready=true]", timeout=120_000)
            ready = await page.evaluate("performance.getEntriesByName('source-ready')[0].startTime")
            timings.append(float(ready) / 1000)
            if os.environ.get("BENCH_DETAIL"):
                print(await page.evaluate(DETAIL))
        await browser.close()
    return timings


async def main(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="skyhook-bench-webapp-"))
    database_url = args.database_url or f"sqlite+aiosqlite:///{workdir}/bench.db"
    await upgrade_async(database_url)
    settings = load_settings(
        None,
        database_url=database_url,
        amqp_url="memory://",
        secret_key="bench-secret-key",
    )
    async with open_resources(settings) as resources:
        obj_id, token = await fill(resources, args.points, args.analyses)
        runner = web.AppRunner(platform_gateway_app(resources), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            timings = await measure(f"http://127.0.0.1:{port}", obj_id, token, args.repeat)
        finally:
            await runner.cleanup()
    load = os.getloadavg()
    warm = timings[1:] or timings
    print(
        f"source page, {args.points} photometry points, {args.analyses} analyses "
        f"({'PostgreSQL' if database_url.startswith('postgresql') else 'SQLite'})"
    )
    print(f"  first load (plotly.min.js not cached): {timings[0]:.3f} s")
    print(
        f"  later loads: median {statistics.median(warm):.3f} s, "
        f"min {min(warm):.3f} s, max {max(warm):.3f} s over {len(warm)}"
    )
    print(
        f"  load average (1, 5, 15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
        f"on {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url")
    parser.add_argument("--points", type=int, default=2000)
    parser.add_argument("--analyses", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=7)
    asyncio.run(main(parser.parse_args()))
