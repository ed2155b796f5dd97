"""``skyhook run --demo`` loads its data through the API, once, and issues a working token."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from shared.runtime.resources import Resources
from skyhook.composition import platform_gateway_app
from skyhook.demo import DEMO_SOURCE_ID, load_demo, welcome
from tests.support.api import ApiClient, TestUser


async def test_demo_data_is_loaded_once_and_usable(
    resources: Resources, api: ApiClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    server = TestServer(platform_gateway_app(resources))
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


async def test_walkthrough_runs_from_any_directory_with_this_runs_ids(
    resources: Resources, api: ApiClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "run").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(tmp_path / "run")
    server = TestServer(platform_gateway_app(resources))
    await server.start_server()
    try:
        base = str(server.make_url("")).rstrip("/")
        info = await load_demo(
            resources,
            base,
            sn_fitter_url="http://127.0.0.1:6802/analysis/sn_fit",
            summarizer_url="http://127.0.0.1:7003/summarize",
        )
        text = welcome(info, base)
        assert info.token_file == tmp_path / "run" / "var" / "demo-token"
        assert f"$(cat {info.token_file})" in text
        assert f"/analysis/{info.sn_fitter_id} " in text
        assert text.rstrip().endswith(f"/analysis/{info.summarizer_id}")
        walkthrough = "\n".join(line for line in text.splitlines() if line.startswith("  "))
        script = f'set -euo pipefail\n{walkthrough}\necho "started analysis $ID"'
        shell = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            script,
            cwd=elsewhere,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await shell.communicate()
    finally:
        await server.close()
    assert shell.returncode == 0, err.decode()
    started = int(out.decode().rsplit("started analysis ", 1)[1])
    demo = TestUser(0, "demo", info.token)
    analysis = await api.get(f"/api/obj/analysis/{started}", demo)
    assert analysis.status == 200
    assert analysis.data["analysis_service_id"] == info.sn_fitter_id
    assert f'"id":{started}' in out.decode().replace(" ", "")  # the walkthrough read it back
    assert (elsewhere / "lightcurve.png").exists()  # written where the user stands
