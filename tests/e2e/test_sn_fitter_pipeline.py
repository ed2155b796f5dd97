"""The SN fitter through the whole pipeline: start → RabbitMQ → dispatcher → sn_fitter →
webhook → products, with the demo's simulated SN Ia (known truth) and real services."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import xarray as xr
from aiohttp.test_utils import TestServer

from sn_fitter import OPTIONAL_ANALYSIS_PARAMETERS
from sn_fitter.app import FitterSettings, create_app
from sn_fitter.demo import demo_lightcurve
from tests.e2e.conftest import MANAGE_SERVICES, RUN_ANALYSES, UPLOAD_DATA
from tests.e2e.harness import Pipeline, User, ok

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
async def fitter_url() -> AsyncIterator[str]:
    server = TestServer(create_app(FitterSettings(workers=1)))
    await server.start_server()
    try:
        yield str(server.make_url("/analysis/sn_fit"))
    finally:
        await server.close()


async def _supernova(pipeline: Pipeline, user: User, group: str) -> tuple[str, dict[str, Any]]:
    (group_id,) = await pipeline.group_ids(user, [group])
    instrument = {"name": f"ZTF-sn-{group}", "filters": ["ztfg", "ztfr"]}
    instrument_id = ok(await pipeline.http.post("/api/instrument", user, instrument))["id"]
    curve = demo_lightcurve(seed=11)
    obj_id = f"SN{group[-8:]}"
    source = {"id": obj_id, "ra": 10.0, "dec": -5.0, "redshift": curve.redshift}
    ok(await pipeline.http.post("/api/sources", user, {**source, "group_ids": [group_id]}))
    points = {"obj_id": obj_id, "instrument_id": instrument_id, **curve.columnar()}
    ok(await pipeline.http.post("/api/photometry", user, {**points, "group_ids": [group_id]}))
    return obj_id, curve.truth


async def _register(pipeline: Pipeline, user: User, group: str, url: str) -> int:
    return await pipeline.register(
        user,
        group,
        url,
        input_data_types=["photometry", "redshift"],
        optional_analysis_parameters=json.dumps(OPTIONAL_ANALYSIS_PARAMETERS),
    )


async def test_a_fit_runs_end_to_end_and_its_products_are_served(
    pipeline: Pipeline, fitter_url: str
) -> None:
    group = f"sn-{pipeline.prefix}"
    astro = await pipeline.user([RUN_ANALYSES, UPLOAD_DATA, MANAGE_SERVICES], [group])
    obj_id, truth = await _supernova(pipeline, astro, group)
    service_id = await _register(pipeline, astro, group, fitter_url)

    analysis_id = await pipeline.start(
        astro,
        obj_id,
        service_id,
        analysis_parameters={"source": "salt3", "fix_z": "True", "seed": 3},
        show_plots=True,
    )
    done = await pipeline.wait_final(astro, analysis_id, within=120)
    assert done["status"] == "completed", done["status_message"]
    assert done["status_message"].startswith("Good results with chi^2/dof=")

    plot = await pipeline.http.get(f"/api/obj/analysis/{analysis_id}/plots/0", astro)
    assert plot.status == 200 and plot.body.startswith(PNG)
    corner = await pipeline.http.get(f"/api/obj/analysis/{analysis_id}/corner", astro)
    assert corner.status == 200 and corner.body.startswith(PNG)

    results = ok(await pipeline.http.get(f"/api/obj/analysis/{analysis_id}/results", astro))
    assert results["model"] == "salt3"
    for name in ("t0", "x1", "c"):
        error = results["errors"][name]
        assert abs(results["best_fit"][name] - truth[name]) < 5 * error, (name, results)
        assert results["sampler"]["rhat"][name] < 1.01
        assert results["sampler"]["ess_bulk"][name] >= 1000

    data = (await pipeline.analysis(astro, analysis_id, includeAnalysisData="true"))["data"]
    assert set(data["model_lightcurve"]) == {"ztfg", "ztfr"}
    assert len(data["posterior_samples"]["x1"]) >= 1000
    netcdf = await _inference_data(pipeline, astro, analysis_id)
    with xr.open_dataset(io.BytesIO(netcdf), group="posterior", engine="h5netcdf") as posterior:
        assert {"chain", "draw"} <= set(posterior.dims)
        assert "x1" in posterior


async def _inference_data(pipeline: Pipeline, user: User, analysis_id: int) -> bytes:
    data = (await pipeline.analysis(user, analysis_id, includeAnalysisData="true"))["data"]
    assert data["inference_data"]["format"] == "netcdf4"
    return base64.b64decode(data["inference_data"]["data"])


async def test_an_unknown_model_ends_in_failure_with_the_fitters_message(
    pipeline: Pipeline, fitter_url: str
) -> None:
    group = f"sn-bad-{pipeline.prefix}"
    astro = await pipeline.user([RUN_ANALYSES, UPLOAD_DATA, MANAGE_SERVICES], [group])
    obj_id, _ = await _supernova(pipeline, astro, group)
    service_id = await _register(pipeline, astro, group, fitter_url)
    analysis_id = await pipeline.start(
        astro, obj_id, service_id, analysis_parameters={"source": "v19-1998bw", "fix_z": "True"}
    )
    done = await pipeline.wait_final(astro, analysis_id, within=60)
    assert done["status"] == "failure"
    assert "v19-1998bw" in done["status_message"]
    reply = await pipeline.http.get(f"/api/obj/analysis/{analysis_id}/plots/0", astro)
    assert reply.status == 404
