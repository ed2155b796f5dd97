"""``skyhook run --demo`` loads its data through the API, once, and issues a working token."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from gateway.app import create_gateway_app
from shared.resources import Resources
from skyhook.demo import DEMO_SOURCE_ID, load_demo
from tests.support.api import ApiClient, TestUser


async def test_demo_data_is_loaded_once_and_usable(
    resources: Resources, api: ApiClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    server = TestServer(create_gateway_app(resources))
    await server.start_server()
    try:
        base = str(server.make_url("")).rstrip("/")
        urls = {
            "sn_fitter_url": "http://127.0.0.1:6802/analysis/sn_fit",
            "summarizer_url": "http://127.0.0.1:7003/summarize",
        }
        first = await load_demo(resources, base, **urls)
        second = await load_demo(resources, base, **urls)
    finally:
        await server.close()

    assert (first.sn_fitter_id, first.summarizer_id) == (second.sn_fitter_id, second.summarizer_id)
    assert (tmp_path / "var" / "demo-token").read_text().strip() == second.token
    demo = TestUser(0, "demo", second.token)
    source = await api.get(f"/api/sources/{DEMO_SOURCE_ID}", demo)
    assert source.status == 200 and 0.01 < source.data["redshift"] < 0.2
    points = (await api.get(f"/api/sources/{DEMO_SOURCE_ID}/photometry", demo)).data
    assert points["totalMatches"] >= 20
    assert {p["filter"] for p in points["photometry"]} == {"ztfg", "ztfr"}
    assert any(p["flux"] is None for p in points["photometry"])  # pre-explosion limits
    services = {s["name"]: s for s in (await api.get("/api/analysis_service", demo)).data}
    assert services["sn_fitter"]["input_data_types"] == ["photometry", "redshift"]
    assert services["skyhook_summarizer"]["is_summary"] is True
    comments = await api.get(f"/api/sources/{DEMO_SOURCE_ID}/comments", demo)
    assert len(comments.data) == 3
